"""The token issuer's signing keys, from a JWKS file or an https URL.

Keys are picked by ``kid``. A token naming a kid we do not know makes the source look
again (re-read the file, or fetch the URL), at most once per ``min_refresh_seconds``
however many such tokens arrive, so a key rotated in at the issuer is picked up without
a restart and a flood of made-up kids cannot hammer the issuer. A fetched JWKS older
than ``max_age_seconds`` is fetched again, so keys the issuer retired stop being trusted.

A URL is fetched by a thread of the source's own, never on a call's path: a call that
finds its kid unknown (or the keys old) asks for a fetch and goes on with the keys there
are, so an issuer that hangs delays no call (a token under a brand-new key is refused
until the fetch is done, a moment later).
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from kfr_grpc.errors import ConfigError
from kfr_grpc.watched import WatchedFiles

log = logging.getLogger("kfr.jwks")

_MAX_JWKS_BYTES = 1 << 20
_FETCH_TIMEOUT_SECONDS = 5.0

Keys = dict[str, RSAPublicKey]


def parse_jwks(document: Any) -> Keys:
    """The RS256-capable RSA keys of a JWKS document, by kid. Other keys are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('a JWKS is a JSON object with a "keys" array')
    keys: Keys = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA" or not entry.get("kid"):
            continue
        if entry.get("use", "sig") != "sig" or entry.get("alg", "RS256") != "RS256":
            continue
        try:
            key = jwt.PyJWK(entry, algorithm="RS256").key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError):
            continue
        if isinstance(key, RSAPublicKey):
            keys[str(entry["kid"])] = key
    return keys


class JwksSource:
    """Signing keys by kid, refreshed on an unknown kid (rate-limited)."""

    def __init__(
        self,
        location: str,
        *,
        ca_file: Path | None = None,
        min_refresh_seconds: float = 30.0,
        max_age_seconds: float = 3600.0,
        check_seconds: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._location = location
        self._min_refresh = min_refresh_seconds
        self._max_age = max_age_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._refreshed_at = monotonic()
        self._fetched_at = float("-inf")
        self._keys: Keys = {}
        self._file: WatchedFiles[Keys] | None = None
        self._wanted = threading.Event()
        self._stopping = False
        self._fetcher: threading.Thread | None = None
        if location.startswith("https://"):
            try:
                self._context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            except (OSError, ssl.SSLError) as error:
                raise ConfigError(f"tokens.jwks_ca {ca_file} cannot be used: {error}") from None
            self._fetch()
            self._fetcher = threading.Thread(target=self._fetch_when_wanted, daemon=True,
                                             name="kfr-jwks")  # fmt: skip
            self._fetcher.start()
        elif "://" in location:
            raise ConfigError(f"tokens.jwks must be a file path or an https URL, not {location}")
        else:
            path = Path(location)
            self._file = WatchedFiles(
                f"JWKS {path}",
                [path],
                lambda: _read_jwks_file(path),
                check_seconds=check_seconds,
                monotonic=monotonic,
            )

    @property
    def keys(self) -> Keys:
        """The current keys (the object changes whenever the key set is reloaded)."""
        if self._file is not None:
            return self._file.get()
        if self._monotonic() - self._fetched_at > self._max_age:
            self._refresh_if_allowed()
        return self._keys

    def key(self, kid: str) -> RSAPublicKey | None:
        """The key ``kid``; None if unknown (a URL's fetch is then asked for, and the key
        is there for the next call once the issuer published it)."""
        key = self.keys.get(kid)
        if key is None and self._refresh_if_allowed():
            key = self.keys.get(kid)
        return key

    def refresh_now(self) -> None:
        """Looks at the JWKS soon, whatever the rate limit (SIGHUP); never waits on it."""
        if self._file is not None:
            self._file.check()
        else:
            self._wanted.set()

    def close(self) -> None:
        """Stops the fetching thread (it may finish a fetch under way by itself)."""
        self._stopping = True
        self._wanted.set()

    def _refresh_if_allowed(self) -> bool:
        """Re-reads a file now (True if it changed); asks for a URL's fetch (False)."""
        with self._lock:
            now = self._monotonic()
            if now - self._refreshed_at < self._min_refresh:
                return False
            self._refreshed_at = now
        if self._file is not None:
            return self._file.check()
        self._wanted.set()
        return False

    def _fetch_when_wanted(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._stopping:
                return
            self._fetch()

    def _fetch(self) -> bool:
        try:
            request = urllib.request.Request(self._location, headers={"Accept": "application/json"})
            with urllib.request.urlopen(
                request, timeout=_FETCH_TIMEOUT_SECONDS, context=self._context
            ) as response:
                body = response.read(_MAX_JWKS_BYTES + 1)
            if len(body) > _MAX_JWKS_BYTES:
                raise ValueError("JWKS larger than 1 MiB")
            keys = parse_jwks(json.loads(body))
        except (OSError, ValueError) as error:
            log.error(
                "fetching JWKS %s failed, keeping %d known keys: %s",
                self._location,
                len(self._keys),
                error,
            )
            return False
        self._fetched_at = self._monotonic()
        changed = keys != self._keys
        self._keys = keys
        log.info("fetched JWKS %s: %d keys", self._location, len(keys))
        return changed


def _read_jwks_file(path: Path) -> Keys:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"tokens.jwks: cannot read {path}: {error}") from None
    try:
        return parse_jwks(document)
    except ValueError as error:
        raise ConfigError(f"tokens.jwks: {path}: {error}") from None
