"""A stand-in for Maskinporten in local setups and tests: an RSA signing key and its JWKS,
and tokens shaped like Maskinporten's (consumer, supplier, scope, cnf)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

DEFAULT_TTL_SECONDS = 120  # Maskinporten's default token lifetime


def new_signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk_of(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    """The public half of ``key`` as a JWK for RS256 signatures."""
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


def write_jwks(path: Path, keys: dict[str, rsa.RSAPrivateKey]) -> None:
    document = {"keys": [jwk_of(key, kid) for kid, key in keys.items()]}
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def write_signing_key(path: Path, key: rsa.RSAPrivateKey, kid: str) -> None:
    """The private key (PEM, mode 0600) with its kid in a header line."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(f"# kid: {kid}\n".encode() + pem)


def read_signing_key(path: Path) -> tuple[rsa.RSAPrivateKey, str]:
    data = path.read_bytes()
    header, _, pem = data.partition(b"\n")
    if not header.startswith(b"# kid: "):
        raise ValueError(f"{path} lacks its '# kid: ...' line")
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path} is not an RSA private key")
    return key, header.removeprefix(b"# kid: ").decode().strip()


def certificate_thumbprint(certificate_pem: bytes) -> str:
    """RFC 8705 x5t#S256 of a PEM certificate."""
    der = x509.load_pem_x509_certificate(certificate_pem).public_bytes(serialization.Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def organisation(org_number: str) -> dict[str, str]:
    return {"authority": "iso6523-actorid-upis", "ID": f"0192:{org_number}"}


@dataclass(frozen=True)
class TokenIssuer:
    """Mints RS256 tokens the way Maskinporten would."""

    key: rsa.RSAPrivateKey
    kid: str
    issuer: str
    audience: str | None = None

    def mint(
        self,
        consumer: str,
        scope: str,
        *,
        now: datetime,
        supplier: str | None = None,
        ttl: int = DEFAULT_TTL_SECONDS,
        cnf_certificate: bytes | None = None,
        **overrides: Any,
    ) -> str:
        """A signed token. ``overrides`` replace or add claims (``None`` removes one)."""
        issued = int(now.timestamp())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "scope": scope,
            "iat": issued,
            "exp": issued + ttl,
            "jti": str(uuid.uuid4()),
            "client_id": f"kfr-dev-{consumer}",
            "consumer": organisation(consumer),
            "token_type": "Bearer",
        }
        if self.audience:
            claims["aud"] = self.audience
        if supplier is not None:
            claims["supplier"] = organisation(supplier)
        if cnf_certificate is not None:
            claims["cnf"] = {"x5t#S256": certificate_thumbprint(cnf_certificate)}
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})
