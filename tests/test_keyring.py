"""The keyring file, the pseudonymiser and the sealer."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

import pytest

from kfr_grpc.errors import ConfigError
from kfr_grpc.keyring import (
    PSEUDONYM_CONTEXT,
    TAG_CONTEXT,
    Keyring,
    KeySet,
    Pseudonymiser,
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
    document["seal"]["keys"]["1"] = "c2hvcnQ="  # 5 bytes
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match="256-bit"):
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


@pytest.mark.parametrize("key_length", [16, 32, 64, 65, 100])
def test_a_pseudonym_is_hmac_sha256_of_the_context_and_the_digits(ids, key_length):
    """The pseudonymiser builds HMAC from two hash states (for speed): exactly ``hmac``'s,
    for keys shorter, as long as and longer than a SHA-256 block."""
    key = os.urandom(key_length)
    pseudonymiser = Pseudonymiser(key)
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
    rotated = KeySet(primary=2, keys={**old.keys, 2: os.urandom(32)})
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


def test_a_forked_child_never_takes_the_nonces_its_parent_buffered():
    """The buffer of nonces is copied by a fork: the child must draw its own, or parent and
    child would seal with the same nonces (fatal to AES-GCM)."""
    from kfr_grpc.keyring import _Nonces

    nonces = _Nonces()
    nonces.take()  # the buffer is filled: 340 nonces left in it
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its next nonces, to the parent
        os.write(write_end, b"".join(nonces.take() for _ in range(3)))
        os._exit(0)
    os.close(write_end)
    from_child = os.read(read_end, 36)
    os.close(read_end)
    os.waitpid(child, 0)
    from_parent = b"".join(nonces.take() for _ in range(3))
    assert len(from_child) == 36 and from_child != from_parent
