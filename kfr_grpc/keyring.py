"""The register's secrets and the two primitives built on them.

- ``Pseudonymiser``: HMAC-SHA256 of a customer ID under the pseudonym key. Index keys
  in the store are pseudonyms, so the IDs never appear in clear.
- ``Sealer``: AES-256-GCM. Every stored value is sealed with its storage key as
  associated data, so a value copied under another key fails to open. A sealed value
  starts with the version of the key that sealed it, so adding a key version (rotation)
  needs no migration.

Callers never handle raw keys or nonces. The keyring lives in one JSON file, mode 0600,
outside the data directory: ``kfr keys init PATH`` creates it.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kfr_grpc.errors import ConfigError

KEYRING_FORMAT = 1
_KEY_BYTES = 32
_NONCE_BYTES = 12
_MAX_KEY_VERSION = 255  # a sealed value stores its key version in one byte
_PSEUDONYM_CONTEXT = b"kfr/customer-id/v1\x00"


class SealError(Exception):
    """A sealed value could not be opened: wrong key, wrong place, or tampered with."""


@dataclass(frozen=True)
class KeySet:
    """Versioned keys of one purpose; ``primary`` is the version used for new data."""

    primary: int
    keys: dict[int, bytes] = field(repr=False)

    @classmethod
    def generate(cls) -> KeySet:
        return cls(primary=1, keys={1: secrets.token_bytes(_KEY_BYTES)})

    def to_json(self) -> dict:
        return {
            "primary": self.primary,
            "keys": {str(v): base64.b64encode(k).decode("ascii") for v, k in self.keys.items()},
        }

    @classmethod
    def from_json(cls, data: dict, purpose: str) -> KeySet:
        try:
            keys = {int(v): base64.b64decode(k, validate=True) for v, k in data["keys"].items()}
            primary = int(data["primary"])
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"keyring: the {purpose} key set is malformed ({error})") from None
        if primary not in keys:
            raise ConfigError(f"keyring: the {purpose} primary version {primary} has no key")
        for version, key in keys.items():
            if not 1 <= version <= _MAX_KEY_VERSION or len(key) != _KEY_BYTES:
                raise ConfigError(f"keyring: {purpose} key version {version} is not a 256-bit key")
        return cls(primary=primary, keys=keys)


@dataclass(frozen=True)
class Keyring:
    """All secrets of one register. ``id`` ties a data directory to its keyring."""

    id: str
    seal: KeySet
    pseudonym: KeySet

    @classmethod
    def generate(cls) -> Keyring:
        return cls(id=secrets.token_hex(16), seal=KeySet.generate(), pseudonym=KeySet.generate())

    def sealer(self) -> Sealer:
        return Sealer(self.seal)

    def pseudonymiser(self) -> Pseudonymiser:
        return Pseudonymiser(self.pseudonym.keys[self.pseudonym.primary])

    def save(self, path: Path) -> None:
        """Writes a new keyring file readable by its owner only; never overwrites one."""
        document = {
            "kfr_keyring": KEYRING_FORMAT,
            "id": self.id,
            "seal": self.seal.to_json(),
            "pseudonym": self.pseudonym.to_json(),
        }
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            descriptor = os.open(path, flags, 0o600)
        except FileExistsError:
            raise ConfigError(f"keyring {path} already exists; refusing to overwrite it") from None
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=2)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())

    @classmethod
    def load(cls, path: Path) -> Keyring:
        """Reads a keyring file, refusing one that others than its owner can read."""
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise ConfigError(
                f"keyring {path} does not exist; create one with `kfr keys init {path}`"
            ) from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"keyring {path} is accessible to group or others (mode {stat.filemode(mode)}); "
                f"run `chmod 600 {path}`"
            )
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ConfigError(f"keyring {path} cannot be read: {error}") from None
        if not isinstance(document, dict) or document.get("kfr_keyring") != KEYRING_FORMAT:
            raise ConfigError(f"{path} is not a KFR keyring (format {KEYRING_FORMAT})")
        keyring_id = document.get("id")
        if not isinstance(keyring_id, str) or not keyring_id:
            raise ConfigError(f"keyring {path} has no id")
        return cls(
            id=keyring_id,
            seal=KeySet.from_json(document.get("seal", {}), "seal"),
            pseudonym=KeySet.from_json(document.get("pseudonym", {}), "pseudonym"),
        )


class Pseudonymiser:
    """Turns a customer ID into a 32-byte pseudonym; the same ID always gives the same one."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def pseudonym(self, customer_digits: str) -> bytes:
        return hmac.digest(
            self._key, _PSEUDONYM_CONTEXT + customer_digits.encode("ascii"), "sha256"
        )


class Sealer:
    """AES-256-GCM with the key version in front: ``version || nonce || ciphertext+tag``."""

    def __init__(self, keys: KeySet) -> None:
        self._primary = keys.primary
        self._ciphers = {version: AESGCM(key) for version, key in keys.keys.items()}

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = self._ciphers[self._primary].encrypt(nonce, plaintext, associated_data)
        return bytes((self._primary,)) + nonce + ciphertext

    def open(self, sealed: bytes, associated_data: bytes) -> bytes:
        if len(sealed) < 1 + _NONCE_BYTES + 16:
            raise SealError("sealed value is too short")
        cipher = self._ciphers.get(sealed[0])
        if cipher is None:
            raise SealError(f"sealed with key version {sealed[0]}, which this keyring lacks")
        nonce = sealed[1 : 1 + _NONCE_BYTES]
        try:
            return cipher.decrypt(nonce, sealed[1 + _NONCE_BYTES :], associated_data)
        except InvalidTag:
            raise SealError("sealed value does not open under this key and place") from None
