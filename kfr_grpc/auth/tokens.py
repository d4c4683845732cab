"""Maskinporten-style access tokens: RS256 JWTs from a configured issuer.

The verifier accepts RS256 only (never ``none``, never HS*, so a token "signed" with the
issuer's public key as an HMAC secret goes nowhere), takes the key named by ``kid``
from the JWKS, checks ``iss``, ``aud`` (when configured) and the times (``exp``,
``nbf``, ``iat``, with the configured leeway of at most 30 s) against the register's
clock, refuses tokens valid for longer than the configured maximum lifetime (a
stolen long-lived token would be a long-lived key), and reads ``consumer``,
``supplier``, ``scope`` and ``cnf``.

Verified tokens are remembered (bounded LRU) until they expire, so a client reusing its
token pays for the signature check once; the memory is dropped whenever the JWKS
changes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt

from kfr_grpc.auth.jwks import JwksSource
from kfr_grpc.clock import Clock
from kfr_grpc.errors import Unauthenticated
from kfr_grpc.register.customer_ids import parse_org_number
from kfr_grpc.register.values import InvalidValue

MAX_LEEWAY_SECONDS = 30
_ORG_AUTHORITY = "iso6523-actorid-upis"
_ORG_ID_PREFIX = "0192:"


@dataclass(frozen=True, slots=True)
class TokenSettings:
    """What tokens must say and how many verified ones to remember (``[tokens]``)."""

    issuer: str
    audience: str | None
    leeway_seconds: int
    cache_size: int
    max_lifetime_seconds: float = 300.0  # from iat to exp


@dataclass(frozen=True, slots=True)
class AccessToken:
    """What a verified token says."""

    consumer: str  # org number the call is made for
    supplier: str | None  # org number of a vendor acting for the consumer
    scopes: frozenset[str]
    cnf_thumbprint: str | None  # RFC 8705 x5t#S256, when the token is certificate-bound
    expires_at: float


class TokenVerifier:
    def __init__(self, settings: TokenSettings, jwks: JwksSource, clock: Clock) -> None:
        if not 0 <= settings.leeway_seconds <= MAX_LEEWAY_SECONDS:
            raise ValueError(f"leeway must be between 0 and {MAX_LEEWAY_SECONDS} seconds")
        self._settings = settings
        self._jwks = jwks
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, AccessToken] = OrderedDict()
        self._cache_keys: object = None  # the JWKS key set the cache was filled under

    def verify(self, token: str) -> AccessToken:
        """The token's claims, or ``Unauthenticated`` saying what is wrong with it."""
        now = self._clock.now().timestamp()
        cached = self._cached(token, now)
        if cached is not None:
            return cached
        verified = self._verify_uncached(token, now)
        self._remember(token, verified)
        return verified

    @property
    def keys_version(self) -> object:
        """The issuer's key set now: a new object whenever the JWKS changes."""
        return self._jwks.keys

    def still_valid(self, token: AccessToken, keys_version: object) -> bool:
        """Whether ``token``, verified under ``keys_version``, holds now: the key set is
        the same and the token has not expired."""
        if keys_version is not self._jwks.keys:
            return False
        return self._clock.now().timestamp() <= token.expires_at + self._settings.leeway_seconds

    def _cached(self, token: str, now: float) -> AccessToken | None:
        with self._lock:
            if self._cache_keys is not self._jwks.keys:
                self._cache.clear()
                self._cache_keys = self._jwks.keys
                return None
            verified = self._cache.get(token)
            if verified is None:
                return None
            if now > verified.expires_at + self._settings.leeway_seconds:
                del self._cache[token]
                return None
            self._cache.move_to_end(token)
            return verified

    def _remember(self, token: str, verified: AccessToken) -> None:
        with self._lock:
            self._cache[token] = verified
            while len(self._cache) > self._settings.cache_size:
                self._cache.popitem(last=False)

    def _verify_uncached(self, token: str, now: float) -> AccessToken:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _rejected("it is not a well-formed JWT") from None
        if header.get("alg") != "RS256":
            raise _rejected("only RS256-signed tokens are accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _rejected("its header names no signing key (kid)")
        key = self._jwks.key(kid)
        if key is None:
            raise _rejected("it is signed with a key the issuer's JWKS does not hold")
        claims = self._decode(token, key)
        self._check_times(claims, now)
        return AccessToken(
            consumer=_organisation(claims.get("consumer"), "consumer"),
            supplier=(
                _organisation(claims["supplier"], "supplier") if "supplier" in claims else None
            ),
            scopes=_scopes(claims.get("scope")),
            cnf_thumbprint=_cnf_thumbprint(claims.get("cnf")),
            expires_at=float(claims["exp"]),
        )

    def _decode(self, token: str, key: Any) -> dict[str, Any]:
        audience = self._settings.audience
        try:
            return jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                issuer=self._settings.issuer,
                audience=audience,
                options={
                    # Times are checked against the register's clock in _check_times.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": audience is not None,
                    "require": ["iss", "exp", "iat"],
                },
            )
        except jwt.InvalidSignatureError:
            raise _rejected("its signature does not verify") from None
        except jwt.InvalidIssuerError:
            raise _rejected("it is from another issuer") from None
        except jwt.InvalidAudienceError:
            raise _rejected("it is meant for another audience") from None
        except jwt.MissingRequiredClaimError as error:
            raise _rejected(f"it lacks the {error.claim} claim") from None
        except jwt.PyJWTError:
            raise _rejected("it cannot be decoded") from None

    def _check_times(self, claims: dict[str, Any], now: float) -> None:
        leeway = self._settings.leeway_seconds
        expires, issued = _timestamp(claims, "exp"), _timestamp(claims, "iat")
        not_before = _timestamp(claims, "nbf") if "nbf" in claims else issued
        if now > expires + leeway:
            raise _rejected("it has expired")
        if now + leeway < issued:
            raise _rejected("it is issued in the future (iat)")
        if now + leeway < not_before:
            raise _rejected("it is not valid yet (nbf)")
        lifetime = expires - issued  # from iat: a later nbf makes no dormant long-lived token
        if lifetime > self._settings.max_lifetime_seconds:
            raise _rejected(
                f"it is valid for {lifetime:.0f} s, longer than the "
                f"{self._settings.max_lifetime_seconds:.0f} s this service accepts "
                "(tokens.max_lifetime_seconds); ask the issuer for a shorter-lived token"
            )


def _rejected(why: str) -> Unauthenticated:
    return Unauthenticated(f"access token rejected: {why}")


def _timestamp(claims: dict[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _rejected(f"its {name} claim is not a number")
    return float(value)


def _organisation(claim: Any, name: str) -> str:
    """The org number in a ``{"authority": "iso6523-actorid-upis", "ID": "0192:<orgnr>"}``."""
    if not isinstance(claim, dict):
        raise _rejected(f"it has no {name} organisation")
    identifier = claim.get("ID")
    if claim.get("authority") != _ORG_AUTHORITY or not isinstance(identifier, str):
        raise _rejected(f"its {name} is not an {_ORG_AUTHORITY} organisation")
    if not identifier.startswith(_ORG_ID_PREFIX):
        raise _rejected(f"its {name} ID is not a Norwegian organisation number (0192:)")
    try:
        return parse_org_number(identifier.removeprefix(_ORG_ID_PREFIX))
    except InvalidValue:
        raise _rejected(f"its {name} ID is not a valid organisation number") from None


def _scopes(claim: Any) -> frozenset[str]:
    if claim is None:
        return frozenset()
    if not isinstance(claim, str):
        raise _rejected("its scope claim is not a space-separated string")
    return frozenset(claim.split())


def _cnf_thumbprint(claim: Any) -> str | None:
    if claim is None:
        return None
    if not isinstance(claim, dict):
        raise _rejected("its cnf claim is malformed")
    thumbprint = claim.get("x5t#S256")
    if thumbprint is None:
        return None
    if not isinstance(thumbprint, str):
        raise _rejected("its cnf x5t#S256 is malformed")
    return thumbprint
