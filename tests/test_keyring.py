"""The keyring file, the pseudonymiser and the sealer."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from kfr_grpc.errors import ConfigError
from kfr_grpc.keyring import (
    PSEUDONYM_CONTEXT,
    TAG_CONTEXT,
    Keyring,
    KeySet,
    Sealer,
    SealError,
)


def test_keyring_file_is_private_and_round_trips(tmp_path: Path):
    path = tmp_path / "keyring.json"
    keyring = Keyring.generate()
    keyring.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert Keyring.load(path) == keyring


def test_existing_keyring_is_never_overwritten(tmp_path: Path):
    path = tmp_path / "keyring.json"
    Keyring.generate().save(path)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        Keyring.generate().save(path)
    assert path.read_bytes() == before


def test_keyring_readable_by_others_is_refused(tmp_path: Path):
    path = tmp_path / "keyring.json"
    Keyring.generate().save(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        Keyring.load(path)


def test_missing_keyring_says_how_to_make_one(tmp_path: Path):
    with pytest.raises(ConfigError, match="kfr keys init"):
        Keyring.load(tmp_path / "absent.json")


def test_malformed_keyring_is_refused(tmp_path: Path):
    path = tmp_path / "keyring.json"
    Keyring.generate().save(path)
    document = json.loads(path.read_text())
    document["seal"]["key"][0]["keyData"]["value"] = "c2hvcnQ="  # 5 bytes, no AesGcmKey
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match="seal"):
        Keyring.load(path)


def test_repr_shows_no_key_material():
    keyring = Keyring.generate()
    for key in (*keyring.seal.keys.values(), *keyring.pseudonym.keys.values()):
        assert key.hex() not in repr(keyring)
        assert repr(key) not in repr(keyring)


def test_pseudonyms_are_stable_and_keyed(ids):
    first, second = Keyring.generate(), Keyring.generate()
    digits = ids.person()
    assert first.pseudonymiser().pseudonym(digits) == first.pseudonymiser().pseudonym(digits)
    assert first.pseudonymiser().pseudonym(digits) != second.pseudonymiser().pseudonym(digits)
    assert len(first.pseudonymiser().pseudonym(digits)) == 32


def test_a_pseudonym_is_hmac_sha256_of_the_context_and_the_digits(ids):
    """Tink's PRF over the pseudonym key: exactly HMAC-SHA-256 of the context and the
    digits (as before Tink, so stores keep their pseudonyms)."""
    keyring = Keyring.generate()
    key = keyring.pseudonym.keys[1]
    pseudonymiser = keyring.pseudonymiser()
    for digits in (ids.person(), ids.company(), ""):
        expected = hmac.new(key, PSEUDONYM_CONTEXT + digits.encode(), hashlib.sha256).digest()
        assert pseudonymiser.pseudonym(digits) == expected
        tag = hmac.new(key, TAG_CONTEXT + digits.encode(), hashlib.sha256).digest()
        assert pseudonymiser.tag(digits.encode()) == tag != expected


def test_sealed_value_opens_only_at_its_own_place():
    sealer = Keyring.generate().sealer()
    sealed = sealer.seal(b"periods", b"relationships\x00key-a")
    assert sealer.open(sealed, b"relationships\x00key-a") == b"periods"
    with pytest.raises(SealError):
        sealer.open(sealed, b"relationships\x00key-b")


def test_sealing_is_randomised_and_tamper_evident():
    sealer = Keyring.generate().sealer()
    first = sealer.seal(b"x", b"ad")
    assert first != sealer.seal(b"x", b"ad")
    tampered = first[:-1] + bytes([first[-1] ^ 1])
    with pytest.raises(SealError):
        sealer.open(tampered, b"ad")


def test_sealed_value_carries_its_key_version_and_old_versions_stay_readable():
    old = KeySet.generate()
    rotated = old.rotated()
    sealed_old = Sealer(old).seal(b"old", b"ad")
    sealed_new = Sealer(rotated).seal(b"new", b"ad")
    assert sealed_old[0] == 1 and sealed_new[0] == 2
    assert Sealer(rotated).open(sealed_old, b"ad") == b"old"
    with pytest.raises(SealError, match="key version 2"):
        Sealer(old).open(sealed_new, b"ad")


def test_another_keyring_cannot_open():
    sealed = Keyring.generate().sealer().seal(b"x", b"ad")
    with pytest.raises(SealError):
        Keyring.generate().sealer().open(sealed, b"ad")


def test_a_keyring_of_format_1_opens_what_it_sealed_and_is_rewritten_as_tink_keysets(
    tmp_path: Path, ids
):
    """Format 1 kept raw keys of our own, sealed with AES-256-GCM as ``version || nonce ||
    ciphertext+tag`` and pseudonymised with HMAC-SHA-256: as Tink keys they open and
    give the same bytes, and the next change of the file writes Tink keysets."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    seal_key, pseudonym_key = os.urandom(32), os.urandom(32)
    path = tmp_path / "keyring.json"
    document = {
        "kfr_keyring": 1, "id": "0123456789abcdef0123456789abcdef",
        "seal": {"primary": 1, "keys": {"1": base64.b64encode(seal_key).decode()}},
        "pseudonym": {"primary": 1, "keys": {"1": base64.b64encode(pseudonym_key).decode()}},
    }  # fmt: skip
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(document, out)
    nonce = os.urandom(12)
    sealed_by_format_1 = b"\x01" + nonce + AESGCM(seal_key).encrypt(nonce, b"periods", b"place")
    digits = ids.person()
    pseudonym = hmac.new(pseudonym_key, PSEUDONYM_CONTEXT + digits.encode(), hashlib.sha256)

    keyring = Keyring.load(path)
    assert keyring.sealer().open(sealed_by_format_1, b"place") == b"periods"
    assert keyring.pseudonymiser().pseudonym(digits) == pseudonym.digest()
    rotated = Keyring.update(path, lambda k: replace(k, seal=k.seal.rotated()))
    written = json.loads(path.read_text())
    assert written["kfr_keyring"] == 2 and "keyData" in json.dumps(written["seal"])
    assert Keyring.load(path) == rotated
    assert Keyring.load(path).sealer().open(sealed_by_format_1, b"place") == b"periods"


def test_kfr_migrate_rewrites_a_format_1_keyring_as_tink_keysets(tmp_path: Path):
    from kfr_grpc.store import LmdbStore

    keyring = Keyring.generate()
    path = tmp_path / "secrets" / "keyring.json"
    path.parent.mkdir()
    raw = {
        purpose: {
            "primary": 1,
            "keys": {"1": base64.b64encode(keys.keys[1]).decode()},
        }
        for purpose, keys in (("seal", keyring.seal), ("pseudonym", keyring.pseudonym))
    }
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump({"kfr_keyring": 1, "id": keyring.id, **raw}, out)
    assert Keyring.load(path).raw_keys_format
    store = LmdbStore.open(tmp_path / "data", keyring, map_size=1 << 24, keyring_path=path)
    try:
        assert store.migrate(lambda _: None).finished
    finally:
        store.close()
    assert json.loads(path.read_text())["kfr_keyring"] == 2
    assert Keyring.load(path) == keyring and not Keyring.load(path).raw_keys_format


def test_a_pseudonym_keyset_over_another_hash_is_refused(tmp_path: Path):
    """An HMAC over SHA-512 would change every pseudonym and tag: lookups would find
    nothing. The keyring refuses it."""
    from tink.proto import common_pb2, hmac_prf_pb2

    keyring = Keyring.generate()
    keyset = keyring.pseudonym.keyset
    key = hmac_prf_pb2.HmacPrfKey.FromString(keyset.key[0].key_data.value)
    key.params.hash = common_pb2.SHA512
    keyset.key[0].key_data.value = key.SerializeToString()
    path = tmp_path / "keyring.json"
    keyring.save(path)
    with pytest.raises(ConfigError, match="pseudonym key version 1"):
        Keyring.load(path)
