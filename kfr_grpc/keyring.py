"""The register's secrets and the two primitives built on them, on Google Tink.

- ``Pseudonymiser``: HMAC-SHA256 (Tink's PRF) of a customer ID under a pseudonym key.
  Index keys in the store are pseudonyms, so the IDs never appear in clear.
- ``Sealer``: AES-256-GCM (Tink's AEAD). Every stored value is sealed with its storage
  key as associated data, so a value copied under another key fails to open. A sealed
  value starts with the version of the key that sealed it, so adding a key version
  (rotation) needs no migration in one go.

Each kind of key is a Tink keyset whose key ids are the versions (1 to 255: a sealed
value and a relationship key store the version in one byte), its keys made by Tink and
used in Tink's RAW form (``nonce || ciphertext || tag``; HMAC without prefix), so values
and pseudonyms made before Tink (keyring format 1, our own AES-GCM and HMAC over the same
keys) are the same bytes. ``kfr keys rotate`` adds a version; the old versions stay until
nothing uses them. Callers never handle raw keys or nonces. The keyring lives in one JSON
file, mode 0600, outside the data directory (``kfr keys init PATH``): the two keysets in
Tink's JSON format, or as Tink encrypted keysets under a key-encryption key kept
elsewhere (``kek``), which the file names.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import tink
from tink import aead, prf, secret_key_access
from tink.proto import aes_gcm_pb2, common_pb2, hmac_prf_pb2, tink_pb2

from kfr_grpc.durable import require_private, sync_directory
from kfr_grpc.errors import ConfigError
from kfr_grpc.kek import KeyEncryptionKey, kek_from
from kfr_grpc.watched import WatchedFiles

KEYRING_FORMAT = 2  # Tink keysets; format 1 (raw keys of our own) is still read
_RAW_KEYS_FORMAT = 1
MAX_KEY_VERSION = 255  # a sealed value and a relationship key store it in one byte
_KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
SEAL, PSEUDONYM = "seal", "pseudonym"
aead.register()  # Tink's registry of key managers (process-wide; registering is idempotent)
prf.register()
_TEMPLATES = {
    SEAL: aead.aead_key_templates.AES256_GCM_RAW,
    PSEUDONYM: prf.prf_key_templates.HMAC_SHA256,
}
_TYPE_URLS = {
    SEAL: "type.googleapis.com/google.crypto.tink.AesGcmKey",
    PSEUDONYM: "type.googleapis.com/google.crypto.tink.HmacPrfKey",
}
PSEUDONYM_CONTEXT = b"kfr/customer-id/v1\x00"
# Tags stand in for what a store key would otherwise show in clear (an institution, a
# collection account, an agency and mandate): HMAC under the same key, another context.
TAG_CONTEXT = b"kfr/index-tag/v1\x00"


class SealError(Exception):
    """A sealed value could not be opened: wrong key, wrong place, or tampered with."""


class MissingKeyVersion(SealError):
    """The value was sealed with a key version this keyring does not hold."""


@dataclass(frozen=True)
class KeySet:
    """Versioned keys of one purpose (``SEAL`` or ``PSEUDONYM``): a Tink keyset whose key
    ids are the versions; ``primary`` is the newest version."""

    purpose: str
    keyset: tink_pb2.Keyset = field(repr=False)

    @classmethod
    def generate(cls, purpose: str = SEAL) -> KeySet:
        return cls(purpose, _keyset([_new_key(purpose, 1)], primary=1))

    @property
    def primary(self) -> int:
        return self.keyset.primary_key_id

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(sorted(key.key_id for key in self.keyset.key))

    @property
    def keys(self) -> dict[int, bytes]:
        """The raw key of each version (for checks that none leaks; nothing seals with it)."""
        return {key.key_id: _key_value(self.purpose, key) for key in self.keyset.key}

    def rotated(self) -> KeySet:
        """This set plus a new key, which becomes primary."""
        version = max(self.versions) + 1
        if version > MAX_KEY_VERSION:
            raise ConfigError(f"no key version left (at most {MAX_KEY_VERSION})")
        keys = [*self.keyset.key, _new_key(self.purpose, version)]
        return KeySet(self.purpose, _keyset(keys, primary=version))

    def without(self, versions: set[int]) -> KeySet:
        if self.primary in versions:
            raise ConfigError(f"the primary key version {self.primary} cannot be retired")
        keys = [key for key in self.keyset.key if key.key_id not in versions]
        return KeySet(self.purpose, _keyset(keys, primary=self.primary))

    def handle(self, version: int | None = None) -> tink.KeysetHandle:
        """A Tink handle of the whole set, or of ``version``'s key alone (primary)."""
        if version is None:
            keyset = self.keyset
        else:
            keys = [key for key in self.keyset.key if key.key_id == version]
            if not keys:
                raise MissingKeyVersion(f"the keyring has no {self.purpose} key version {version}")
            keyset = _keyset(keys, primary=version)
        return tink.proto_keyset_format.parse(keyset.SerializeToString(), secret_key_access.TOKEN)

    def to_json(self, kek: KeyEncryptionKey | None, keyring_id: str) -> dict:
        """The set in Tink's JSON keyset format, encrypted under ``kek`` if given."""
        if kek is None:
            text = tink.json_proto_keyset_format.serialize(self.handle(), secret_key_access.TOKEN)
        else:
            text = tink.json_proto_keyset_format.serialize_encrypted(
                self.handle(), _KekAead(kek), _kek_context(keyring_id, self.purpose)
            )
        return json.loads(text)

    @classmethod
    def from_json(
        cls, data: object, purpose: str, kek: KeyEncryptionKey | None, keyring_id: str
    ) -> KeySet:
        text = json.dumps(data)
        try:
            if kek is None:
                handle = tink.json_proto_keyset_format.parse(text, secret_key_access.TOKEN)
            else:
                handle = tink.json_proto_keyset_format.parse_encrypted(
                    text, _KekAead(kek), _kek_context(keyring_id, purpose)
                )
            serialized = tink.proto_keyset_format.serialize(handle, secret_key_access.TOKEN)
            keys = cls(purpose, tink_pb2.Keyset.FromString(serialized))
            return _checked(keys)
        except ConfigError:
            raise
        except Exception as error:  # Tink's and protobuf's many kinds; their text may quote keys
            raise ConfigError(
                f"keyring: the {purpose} keyset cannot be read ({type(error).__name__})"
            ) from None

    @classmethod
    def from_raw_keys(cls, data: dict, purpose: str) -> KeySet:
        """A set from keyring format 1 (``{"primary": v, "keys": {v: base64 key}}``): the
        same keys, as Tink keys."""
        try:
            keys = {int(v): base64.b64decode(k, validate=True) for v, k in data["keys"].items()}
            primary = int(data["primary"])
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"keyring: the {purpose} key set is malformed ({error})") from None
        for version, key in keys.items():
            if not 1 <= version <= MAX_KEY_VERSION or len(key) != _KEY_BYTES:
                raise ConfigError(f"keyring: {purpose} key version {version} is not a 256-bit key")
        if primary not in keys:
            raise ConfigError(f"keyring: the {purpose} primary version {primary} has no key")
        tink_keys = [_raw_key(purpose, version, key) for version, key in keys.items()]
        return cls(purpose, _keyset(tink_keys, primary=primary))


def _keyset(keys: list[tink_pb2.Keyset.Key], *, primary: int) -> tink_pb2.Keyset:
    return tink_pb2.Keyset(primary_key_id=primary, key=sorted(keys, key=lambda k: k.key_id))


def _new_key(purpose: str, version: int) -> tink_pb2.Keyset.Key:
    """A new key made by Tink from the purpose's template, with ``version`` as its id."""
    handle = tink.new_keyset_handle(_TEMPLATES[purpose])
    serialized = tink.proto_keyset_format.serialize(handle, secret_key_access.TOKEN)
    key = tink_pb2.Keyset.FromString(serialized).key[0]
    key.key_id = version
    key.output_prefix_type = tink_pb2.RAW
    return key


def _raw_key(purpose: str, version: int, value: bytes) -> tink_pb2.Keyset.Key:
    """A key of keyring format 1 as a Tink key."""
    if purpose == SEAL:
        material = aes_gcm_pb2.AesGcmKey(version=0, key_value=value)
    else:
        params = hmac_prf_pb2.HmacPrfParams(hash=common_pb2.SHA256)
        material = hmac_prf_pb2.HmacPrfKey(version=0, params=params, key_value=value)
    key_data = tink_pb2.KeyData(
        type_url=_TYPE_URLS[purpose],
        value=material.SerializeToString(),
        key_material_type=tink_pb2.KeyData.SYMMETRIC,
    )
    return tink_pb2.Keyset.Key(
        key_data=key_data, status=tink_pb2.ENABLED, key_id=version,
        output_prefix_type=tink_pb2.RAW,
    )  # fmt: skip


def _key_value(purpose: str, key: tink_pb2.Keyset.Key) -> bytes:
    kind = aes_gcm_pb2.AesGcmKey if purpose == SEAL else hmac_prf_pb2.HmacPrfKey
    return kind.FromString(key.key_data.value).key_value


def _prf_hash(key: tink_pb2.Keyset.Key) -> int:
    return hmac_prf_pb2.HmacPrfKey.FromString(key.key_data.value).params.hash


def _checked(keys: KeySet) -> KeySet:
    """Refuses a keyset this register cannot use: another kind of key, a prefix, versions
    out of range, a key that is not 256 bits, an HMAC over another hash than SHA-256
    (every pseudonym would change)."""
    if keys.primary not in keys.versions:
        raise ConfigError(f"keyring: the {keys.purpose} primary version {keys.primary} has no key")
    for key in keys.keyset.key:
        usable = (
            key.key_data.type_url == _TYPE_URLS[keys.purpose]
            and key.output_prefix_type == tink_pb2.RAW
            and key.status == tink_pb2.ENABLED
            and 1 <= key.key_id <= MAX_KEY_VERSION
            and len(_key_value(keys.purpose, key)) == _KEY_BYTES
            and (keys.purpose == SEAL or _prf_hash(key) == common_pb2.SHA256)
        )
        if not usable:
            raise ConfigError(
                f"keyring: {keys.purpose} key version {key.key_id} is not an enabled 256-bit "
                f"{_TYPE_URLS[keys.purpose].rsplit('.', 1)[-1]} without prefix"
            )
    return keys


class _KekAead(aead.Aead):
    """The key-encryption key as the AEAD Tink encrypts a keyset with."""

    def __init__(self, kek: KeyEncryptionKey) -> None:
        self._kek = kek

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        return self._kek.wrap(plaintext, associated_data)

    def decrypt(self, ciphertext: bytes, associated_data: bytes) -> bytes:
        return self._kek.unwrap(ciphertext, associated_data)


@dataclass(frozen=True)
class Keyring:
    """All secrets of one register. ``id`` ties a data directory to its keyring; ``kek``,
    when set, seals the keys in the file (and goes along when a rotation changes them)."""

    id: str
    seal: KeySet
    pseudonym: KeySet
    kek: KeyEncryptionKey | None = field(default=None, compare=False, repr=False)
    # Read from a file of keyring format 1 (rewritten as format 2 by the next change).
    raw_keys_format: bool = field(default=False, compare=False)

    @classmethod
    def generate(cls) -> Keyring:
        return cls(
            id=secrets.token_hex(16),
            seal=KeySet.generate(SEAL),
            pseudonym=KeySet.generate(PSEUDONYM),
        )

    def sealer(self) -> Sealer:
        return Sealer(self.seal)

    def pseudonymiser(self, version: int | None = None) -> Pseudonymiser:
        """The pseudonymiser of ``version`` (default: the newest)."""
        version = self.pseudonym.primary if version is None else version
        return Pseudonymiser(self.pseudonym.handle(version))

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
        document: dict = {"kfr_keyring": KEYRING_FORMAT, "id": self.id}
        if self.kek is not None:
            document["kek"] = self.kek.spec
        document[SEAL] = self.seal.to_json(self.kek, self.id)
        document[PSEUDONYM] = self.pseudonym.to_json(self.kek, self.id)
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
        keyring_format = document.get("kfr_keyring") if isinstance(document, dict) else None
        if keyring_format not in (KEYRING_FORMAT, _RAW_KEYS_FORMAT):
            raise ConfigError(f"{path} is not a KFR keyring (format {KEYRING_FORMAT})")
        keyring_id = document.get("id")
        if not isinstance(keyring_id, str) or not keyring_id:
            raise ConfigError(f"keyring {path} has no id")
        kek = kek_from(str(document["kek"]), path) if "kek" in document else None
        if keyring_format == _RAW_KEYS_FORMAT:
            if kek is not None:
                document = _unwrapped(document, kek, keyring_id, path)
            seal = KeySet.from_raw_keys(document.get(SEAL, {}), SEAL)
            pseudonym = KeySet.from_raw_keys(document.get(PSEUDONYM, {}), PSEUDONYM)
        else:
            seal = KeySet.from_json(document.get(SEAL), SEAL, kek, keyring_id)
            pseudonym = KeySet.from_json(document.get(PSEUDONYM), PSEUDONYM, kek, keyring_id)
        keyring = cls(id=keyring_id, seal=seal, pseudonym=pseudonym, kek=kek)
        return replace(keyring, raw_keys_format=keyring_format == _RAW_KEYS_FORMAT)


def _kek_context(keyring_id: str, purpose: str | None = None) -> bytes:
    """What a key-encryption key seals a keyring's keys (format 1: all at once; format 2:
    each keyset) bound to."""
    context = b"kfr keyring " + keyring_id.encode("ascii")
    return context if purpose is None else context + b" " + purpose.encode("ascii")


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
    HMAC-SHA-256 (RFC 2104; Tink's PRF) under the pseudonym key, of a fixed context and the
    digits. ``tag`` does the same for any bytes under another context (the store's key
    tags)."""

    def __init__(self, handle: tink.KeysetHandle) -> None:
        self._prf = handle.primitive(prf.PrfSet).primary()

    def pseudonym(self, customer_digits: str) -> bytes:
        return self._prf.compute(PSEUDONYM_CONTEXT + customer_digits.encode("ascii"), 32)

    def tag(self, data: bytes) -> bytes:
        """HMAC-SHA-256 of the tag context and ``data`` (32 bytes; callers may shorten it)."""
        return self._prf.compute(TAG_CONTEXT + data, 32)


class Sealer:
    """AES-256-GCM (Tink's AEAD, RAW) with the key version in front:
    ``version || nonce || ciphertext+tag``."""

    OVERHEAD = 1 + _NONCE_BYTES + _TAG_BYTES

    def __init__(self, keys: KeySet) -> None:
        self._primary = keys.primary
        self._aeads = {
            version: keys.handle(version).primitive(aead.Aead) for version in keys.versions
        }
        self._prefixes = {version: bytes((version,)) for version in keys.versions}

    def has_version(self, version: int) -> bool:
        return version in self._aeads

    def seal(self, plaintext: bytes, associated_data: bytes, version: int | None = None) -> bytes:
        """Seals under ``version`` (default: the newest key)."""
        version = self._primary if version is None else version
        cipher = self._aeads.get(version)
        if cipher is None:
            raise MissingKeyVersion(f"the keyring has no seal key version {version}")
        return self._prefixes[version] + cipher.encrypt(plaintext, associated_data)

    def open(self, sealed: bytes, associated_data: bytes) -> bytes:
        if len(sealed) < self.OVERHEAD:
            raise SealError("sealed value is too short")
        cipher = self._aeads.get(sealed[0])
        if cipher is None:
            raise MissingKeyVersion(
                f"sealed with key version {sealed[0]}, which this keyring lacks"
            )
        try:
            return cipher.decrypt(sealed[1:], associated_data)
        except tink.TinkError:
            raise SealError("sealed value does not open under this key and place") from None


def sealed_version(sealed: bytes) -> int:
    """The key version a sealed value was made with (without opening it)."""
    return sealed[0]
