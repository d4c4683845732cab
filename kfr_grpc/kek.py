"""Key-encryption keys: what the keyring's own keys are sealed with at rest.

A keyring file in clear is the register's every secret in one copyable file; sealed
under a key-encryption key (KEK) kept apart from it, a copy of the keyring (with or
without the data) opens nothing. The keyring file names where its KEK is, so every
command that reads the keyring finds it without more configuration:

- ``file:/path/to/kek``: a file of 32 random bytes, base64, readable by its owner only,
  not in or under the keyring's directory, kept as an absolute path (``kfr keys kek
  PATH`` makes one);
- ``env:NAME``: the same, base64, in an environment variable (systemd credentials, a
  secret manager's injector).

A hardware or cloud KMS fits the same ``KeyEncryptionKey`` interface (``wrap`` and
``unwrap``): another scheme in ``_SCHEMES``.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kfr_grpc.durable import require_private, sync_directory
from kfr_grpc.errors import ConfigError

_KEK_BYTES = 32
_NONCE_BYTES = 12


class KeyEncryptionKey(Protocol):
    spec: str  # where it is: ``file:PATH`` or ``env:NAME`` (written in the keyring file)

    def wrap(self, plaintext: bytes, context: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes: ...


@dataclass(frozen=True)
class LocalKek:
    """An AES-256-GCM key held by this process."""

    spec: str
    key: bytes = field(repr=False)

    def wrap(self, plaintext: bytes, context: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + AESGCM(self.key).encrypt(nonce, plaintext, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        try:
            return AESGCM(self.key).decrypt(wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], context)
        except InvalidTag:
            raise ConfigError(
                f"the key-encryption key {self.spec} does not open this keyring (another KEK, "
                "or the keyring file was altered)"
            ) from None


def kek_from(spec: str, keyring_path: Path) -> KeyEncryptionKey:
    """The KEK ``spec`` names, for the keyring at ``keyring_path``."""
    scheme, _, where = spec.partition(":")
    load = _SCHEMES.get(scheme)
    if load is None or not where:
        raise ConfigError(f"unknown key-encryption key {spec!r}: give file:PATH or env:NAME")
    if scheme == "file":  # written into the keyring as every reader must find it
        where = str(Path(where).expanduser().resolve())
        spec = f"file:{where}"
    encoded = load(where, keyring_path)
    try:
        key = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"the key-encryption key {spec} is not base64") from None
    if len(key) != _KEK_BYTES:
        raise ConfigError(f"the key-encryption key {spec} is not {_KEK_BYTES} bytes")
    return LocalKek(spec, key)


def write_new_kek(path: Path) -> str:
    """A new KEK file at ``path`` (mode 0600, never overwriting one); returns its spec."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; refusing to overwrite it") from None
    except OSError as error:
        raise ConfigError(
            f"cannot write {path}: {error.strerror} (make its directory first, mode 0700, "
            "owned by the service user)"
        ) from None
    with os.fdopen(descriptor, "w", encoding="ascii") as out:
        out.write(base64.b64encode(os.urandom(_KEK_BYTES)).decode("ascii") + "\n")
        out.flush()
        os.fsync(out.fileno())
    sync_directory(path.resolve().parent)  # the file outlives a power cut
    return f"file:{path.resolve()}"


def _from_file(where: str, keyring_path: Path) -> str:
    path = Path(where).expanduser()
    require_private(path, "the key-encryption key file")
    if path.resolve().is_relative_to(keyring_path.resolve().parent):
        raise ConfigError(
            f"the key-encryption key file {path} lies in the keyring's directory: keep it "
            "apart (another directory, another disk or a secret store), or a copy of one "
            "carries both"
        )
    return path.read_text(encoding="ascii")


def _from_environment(where: str, _: Path) -> str:
    value = os.environ.get(where)
    if not value:
        raise ConfigError(f"the key-encryption key's environment variable {where} is not set")
    return value


_SCHEMES: Mapping[str, Callable[[str, Path], str]] = MappingProxyType(
    {"file": _from_file, "env": _from_environment}
)
