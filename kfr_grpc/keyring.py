"""The register's secrets and the two primitives built on them.

- ``Pseudonymiser``: HMAC-SHA256 of a customer ID under a pseudonym key. Index keys in
  the store are pseudonyms, so the IDs never appear in clear.
- ``Sealer``: AES-256-GCM. Every stored value is sealed with its storage key as
  associated data, so a value copied under another key fails to open. A sealed value
  starts with the version of the key that sealed it, so adding a key version (rotation)
  needs no migration in one go.

Both kinds of key are versioned. ``kfr keys rotate`` adds a version; the old versions
stay until nothing uses them. Callers never handle raw keys or nonces. The keyring lives
in one JSON file, mode 0600, outside the data directory: ``kfr keys init PATH``. Its keys
may be sealed under a key-encryption key kept elsewhere (``kek``), which the file names.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kfr_grpc.durable import require_private, sync_directory
from kfr_grpc.errors import ConfigError
from kfr_grpc.kek import KeyEncryptionKey, kek_from
from kfr_grpc.watched import WatchedFiles

KEYRING_FORMAT = 1
MAX_KEY_VERSION = 255  # a sealed value and a relationship key store it in one byte
_KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
PSEUDONYM_CONTEXT = b"kfr/customer-id/v1\x00"
# Tags stand in for what a store key would otherwise show in clear (an institution, a
# collection account, an agency and mandate): HMAC under the same key, another context.
TAG_CONTEXT = b"kfr/index-tag/v1\x00"
_SHA256_BLOCK = 64


class SealError(Exception):
    """A sealed value could not be opened: wrong key, wrong place, or tampered with."""


class MissingKeyVersion(SealError):
    """The value was sealed with a key version this keyring does not hold."""


@dataclass(frozen=True)
class KeySet:
    """Versioned keys of one purpose; ``primary`` is the newest version."""

    primary: int
    keys: dict[int, bytes] = field(repr=False)

    @classmethod
    def generate(cls) -> KeySet:
        return cls(primary=1, keys={1: secrets.token_bytes(_KEY_BYTES)})

    def rotated(self) -> KeySet:
        """This set plus a new key, which becomes primary."""
        version = max(self.keys) + 1
        if version > MAX_KEY_VERSION:
            raise ConfigError(f"no key version left (at most {MAX_KEY_VERSION})")
        return KeySet(primary=version, keys={**self.keys, version: secrets.token_bytes(_KEY_BYTES)})

    def without(self, versions: set[int]) -> KeySet:
        if self.primary in versions:
            raise ConfigError(f"the primary key version {self.primary} cannot be retired")
        return replace(self, keys={v: k for v, k in self.keys.items() if v not in versions})

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
            if not 1 <= version <= MAX_KEY_VERSION or len(key) != _KEY_BYTES:
                raise ConfigError(f"keyring: {purpose} key version {version} is not a 256-bit key")
        return cls(primary=primary, keys=keys)


@dataclass(frozen=True)
class Keyring:
    """All secrets of one register. ``id`` ties a data directory to its keyring; ``kek``,
    when set, seals the keys in the file (and goes along when a rotation changes them)."""

    id: str
    seal: KeySet
    pseudonym: KeySet
    kek: KeyEncryptionKey | None = field(default=None, compare=False, repr=False)

    @classmethod
    def generate(cls) -> Keyring:
        return cls(id=secrets.token_hex(16), seal=KeySet.generate(), pseudonym=KeySet.generate())

    def sealer(self) -> Sealer:
        return Sealer(self.seal)

    def pseudonymiser(self, version: int | None = None) -> Pseudonymiser:
        """The pseudonymiser of ``version`` (default: the newest)."""
        version = self.pseudonym.primary if version is None else version
        key = self.pseudonym.keys.get(version)
        if key is None:
            raise MissingKeyVersion(f"the keyring has no pseudonym key version {version}")
        return Pseudonymiser(key)

    def save(self, path: Path) -> None:
        """Writes a new keyring file readable by its owner only; never overwrites one."""
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ConfigError(f"keyring {path} already exists; refusing to overwrite it") from None
        self._write(descriptor)

    @classmethod
    def update(cls, path: Path, change: Callable[[Keyring], Keyring]) -> Keyring:
        """Reads the keyring file, changes it and writes it back, holding a lock on it
        throughout, so that two rotations at once cannot both add "the next" version
        and one of the two keys be lost with whatever it sealed. Returns the new keyring
        (the file is left alone if ``change`` returns the keyring it was given)."""
        with keyring_lock(path):
            return cls.change_file(path, change)

    @classmethod
    def change_file(cls, path: Path, change: Callable[[Keyring], Keyring]) -> Keyring:
        """``update`` for a caller already holding the keyring's lock (``keyring_lock``,
        taken before any store transaction: the order every taker follows)."""
        keyring = cls.load(path)
        changed = change(keyring)
        if changed is not keyring:
            changed.replace_file(path)
        return changed

    def replace_file(self, path: Path) -> None:
        """Replaces the keyring file at ``path`` in one step (for rotation and retirement).

        Refuses a keyring with another id: a replacement only ever adds or drops versions.
        """
        if Keyring.load(path).id != self.id:
            raise ConfigError(f"{path} holds another keyring; refusing to replace it")
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        self._write(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.replace(temporary, path)
        sync_directory(path.parent)

    def with_kek(self, kek: KeyEncryptionKey | None) -> Keyring:
        """The same keys, to be sealed under ``kek`` (None: in clear) when written."""
        return replace(self, kek=kek)

    def _write(self, descriptor: int) -> None:
        keys = {"seal": self.seal.to_json(), "pseudonym": self.pseudonym.to_json()}
        document: dict = {"kfr_keyring": KEYRING_FORMAT, "id": self.id}
        if self.kek is None:
            document.update(keys)
        else:
            wrapped = self.kek.wrap(json.dumps(keys).encode("utf-8"), _kek_context(self.id))
            document["kek"] = self.kek.spec
            document["sealed_keys"] = base64.b64encode(wrapped).decode("ascii")
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=2)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())

    @classmethod
    def load(cls, path: Path) -> Keyring:
        """Reads a keyring file, refusing one that others than its owner can read."""
        require_private(path, "keyring", f"; create one with `kfr keys init {path}`")
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ConfigError(f"keyring {path} cannot be read: {error}") from None
        if not isinstance(document, dict) or document.get("kfr_keyring") != KEYRING_FORMAT:
            raise ConfigError(f"{path} is not a KFR keyring (format {KEYRING_FORMAT})")
        keyring_id = document.get("id")
        if not isinstance(keyring_id, str) or not keyring_id:
            raise ConfigError(f"keyring {path} has no id")
        kek = None
        if "kek" in document:
            kek = kek_from(str(document["kek"]), path)
            document = _unwrapped(document, kek, keyring_id, path)
        return cls(
            id=keyring_id,
            seal=KeySet.from_json(document.get("seal", {}), "seal"),
            pseudonym=KeySet.from_json(document.get("pseudonym", {}), "pseudonym"),
            kek=kek,
        )


def _kek_context(keyring_id: str) -> bytes:
    return b"kfr keyring " + keyring_id.encode("ascii")


def _unwrapped(document: dict, kek: KeyEncryptionKey, keyring_id: str, path: Path) -> dict:
    """The keys of a keyring file sealed under ``kek``."""
    try:
        wrapped = base64.b64decode(document.get("sealed_keys", ""), validate=True)
    except (ValueError, TypeError):
        raise ConfigError(f"keyring {path} has no readable sealed keys") from None
    keys = json.loads(kek.unwrap(wrapped, _kek_context(keyring_id)))
    if not isinstance(keys, dict):
        raise ConfigError(f"keyring {path} has no readable sealed keys")
    return keys


@contextmanager
def keyring_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on the keyring at ``path`` (a lock file beside it), across
    processes; released when the block ends or the process dies."""
    descriptor = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


class KeyringProvider(Protocol):
    def get(self) -> Keyring:
        """The current keyring."""
        ...

    def refresh(self) -> Keyring:
        """The keyring, re-read now if it comes from a file (a version was found missing)."""
        ...


class FixedKeyring:
    """A keyring that never changes (short-lived commands, tests)."""

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring

    def get(self) -> Keyring:
        return self._keyring

    def refresh(self) -> Keyring:
        return self._keyring


class KeyringFile:
    """A keyring file, re-read when it changes: a running server picks up rotated keys."""

    def __init__(self, path: Path, *, check_seconds: float = 1.0) -> None:
        first = Keyring.load(path)
        self._watched = WatchedFiles(
            f"keyring {path}",
            [path],
            lambda: _same_id(Keyring.load(path), first.id, path),
            check_seconds=check_seconds,
        )

    def get(self) -> Keyring:
        return self._watched.get()

    def refresh(self) -> Keyring:
        self._watched.check()
        return self._watched.get()


def _same_id(keyring: Keyring, expected: str, path: Path) -> Keyring:
    if keyring.id != expected:
        raise ConfigError(f"{path} now holds another keyring (id {keyring.id}); ignoring it")
    return keyring


class Pseudonymiser:
    """Turns a customer ID into a 32-byte pseudonym; the same ID always gives the same one:
    HMAC-SHA-256 (RFC 2104) under the pseudonym key, of a fixed context and the digits.
    ``tag`` does the same for any bytes under another context (the store's key tags)."""

    def __init__(self, key: bytes) -> None:
        # HMAC's inner hash, keyed and past the context, and its outer one, keyed, copied
        # per call: ``hmac``'s own copy is Python code and cost a bulk load's item (and a
        # Lookup) twice as much. tests/test_keyring.py holds this to ``hmac``.
        if len(key) > _SHA256_BLOCK:
            key = hashlib.sha256(key).digest()
        padded = key.ljust(_SHA256_BLOCK, b"\0")
        inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        self._inner = inner.copy()
        self._inner.update(PSEUDONYM_CONTEXT)
        self._tag_inner = inner
        self._tag_inner.update(TAG_CONTEXT)
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    def pseudonym(self, customer_digits: str) -> bytes:
        return self._mac(self._inner, customer_digits.encode("ascii"))

    def tag(self, data: bytes) -> bytes:
        """HMAC-SHA-256 of the tag context and ``data`` (32 bytes; callers may shorten it)."""
        return self._mac(self._tag_inner, data)

    def _mac(self, keyed_inner, data: bytes) -> bytes:
        inner = keyed_inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class _Forks:
    """How many times this process was forked into (a child's count differs from its
    parent's), so that nonce buffers copied by a fork are never used in the child."""

    count = 0

    @classmethod
    def forked(cls) -> None:
        cls.count += 1


os.register_at_fork(after_in_child=_Forks.forked)


class _Nonces(threading.local):
    """Random 96-bit nonces, drawn from the OS in blocks (one system call per 341 nonces).

    Each ``os.urandom`` call releases the GIL, and getting it back behind other busy
    threads costs far more than the call; buffering keeps sealing cheap under load. The
    buffer is per thread and dropped after a fork (``_Forks``; checking the process id
    instead cost a system call per nonce), so no two holders share one.
    """

    _BLOCK = _NONCE_BYTES * 341

    def __init__(self) -> None:
        self._buffer = b""
        self._offset = 0
        self._forks = -1

    def take(self) -> bytes:
        offset = self._offset
        end = offset + _NONCE_BYTES
        if end > len(self._buffer) or self._forks != _Forks.count:
            self._buffer, offset, end = os.urandom(self._BLOCK), 0, _NONCE_BYTES
            self._forks = _Forks.count
        self._offset = end
        return self._buffer[offset:end]


class Sealer:
    """AES-256-GCM with the key version in front: ``version || nonce || ciphertext+tag``."""

    OVERHEAD = 1 + _NONCE_BYTES + _TAG_BYTES

    def __init__(self, keys: KeySet) -> None:
        self._primary = keys.primary
        self._ciphers = {version: AESGCM(key) for version, key in keys.keys.items()}
        self._prefixes = {version: bytes((version,)) for version in keys.keys}
        self._nonces = _Nonces()

    def has_version(self, version: int) -> bool:
        return version in self._ciphers

    def seal(self, plaintext: bytes, associated_data: bytes, version: int | None = None) -> bytes:
        """Seals under ``version`` (default: the newest key)."""
        version = self._primary if version is None else version
        cipher = self._ciphers.get(version)
        if cipher is None:
            raise MissingKeyVersion(f"the keyring has no seal key version {version}")
        nonce = self._nonces.take()
        return b"".join(
            (self._prefixes[version], nonce, cipher.encrypt(nonce, plaintext, associated_data))
        )

    def open(self, sealed: bytes, associated_data: bytes) -> bytes:
        if len(sealed) < self.OVERHEAD:
            raise SealError("sealed value is too short")
        cipher = self._ciphers.get(sealed[0])
        if cipher is None:
            raise MissingKeyVersion(
                f"sealed with key version {sealed[0]}, which this keyring lacks"
            )
        nonce = sealed[1 : 1 + _NONCE_BYTES]
        try:
            return cipher.decrypt(nonce, sealed[1 + _NONCE_BYTES :], associated_data)
        except InvalidTag:
            raise SealError("sealed value does not open under this key and place") from None


def sealed_version(sealed: bytes) -> int:
    """The key version a sealed value was made with (without opening it)."""
    return sealed[0]
