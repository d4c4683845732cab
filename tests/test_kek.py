"""The keyring's keys sealed under a key-encryption key kept apart from it: a copy of
the keyring file alone opens nothing; rotations keep it sealed; the CLI makes a KEK,
seals an existing keyring online, and every command still reads it."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from kfr_grpc.errors import ConfigError
from kfr_grpc.kek import kek_from, write_new_kek
from kfr_grpc.keyring import Keyring, KeyringFile
from kfr_grpc.store import LmdbStore, rotation
from tests.test_cli import run


@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path]:
    """(keyring path, KEK path), in directories of their own."""
    (tmp_path / "keys").mkdir()
    (tmp_path / "kek").mkdir()
    return tmp_path / "keys" / "keyring.json", tmp_path / "kek" / "keyring.kek"


def _key_material(keyring: Keyring) -> list[str]:
    return [
        base64.b64encode(key).decode()
        for key in (*keyring.seal.keys.values(), *keyring.pseudonym.keys.values())
    ]


def _encrypted_keysets(document: dict) -> bool:
    """Both keysets are Tink encrypted keysets (their key data nowhere in clear)."""
    return all(
        "encryptedKeyset" in document[purpose] and "keyData" not in json.dumps(document[purpose])
        for purpose in ("seal", "pseudonym")
    )


def test_a_sealed_keyring_holds_no_key_in_clear_and_round_trips(places):
    keyring_path, kek_path = places
    spec = write_new_kek(kek_path)
    assert kek_path.stat().st_mode & 0o777 == 0o600
    keyring = Keyring.generate().with_kek(kek_from(spec, keyring_path))
    keyring.save(keyring_path)
    text = keyring_path.read_text()
    assert not any(material in text for material in _key_material(keyring))
    document = json.loads(text)
    assert document["kek"] == spec and _encrypted_keysets(document)
    loaded = Keyring.load(keyring_path)
    assert loaded == keyring and loaded.kek is not None and loaded.kek.spec == spec
    assert "key=" not in repr(loaded.kek)


def test_without_its_kek_or_with_another_the_keyring_does_not_open(places, monkeypatch):
    keyring_path, kek_path = places
    spec = write_new_kek(kek_path)
    Keyring.generate().with_kek(kek_from(spec, keyring_path)).save(keyring_path)
    other = kek_path.with_name("other.kek")
    write_new_kek(other)
    kek_path.write_bytes(other.read_bytes())
    with pytest.raises(ConfigError, match="does not open this keyring"):
        Keyring.load(keyring_path)
    kek_path.unlink()
    with pytest.raises(ConfigError, match="does not exist"):
        Keyring.load(keyring_path)


def test_an_environment_kek(places, monkeypatch):
    keyring_path, _ = places
    monkeypatch.setenv("KFR_TEST_KEK", base64.b64encode(os.urandom(32)).decode())
    keyring = Keyring.generate().with_kek(kek_from("env:KFR_TEST_KEK", keyring_path))
    keyring.save(keyring_path)
    assert Keyring.load(keyring_path) == keyring
    monkeypatch.delenv("KFR_TEST_KEK")
    with pytest.raises(ConfigError, match="KFR_TEST_KEK is not set"):
        Keyring.load(keyring_path)


def test_a_kek_beside_the_keyring_or_readable_by_others_is_refused(places):
    keyring_path, kek_path = places
    beside = keyring_path.with_name("keyring.kek")
    with pytest.raises(ConfigError, match="lies in the keyring's directory"):
        kek_from(write_new_kek(beside), keyring_path)
    (keyring_path.parent / "sub").mkdir()
    below = keyring_path.parent / "sub" / "keyring.kek"
    with pytest.raises(ConfigError, match="lies in the keyring's directory"):
        kek_from(write_new_kek(below), keyring_path)
    spec = write_new_kek(kek_path)
    kek_path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        kek_from(spec, keyring_path)
    with pytest.raises(ConfigError, match="file:PATH or env:NAME"):
        kek_from("vault:secret/kfr", keyring_path)


def test_rotation_keeps_the_keyring_sealed(places, tmp_path: Path):
    keyring_path, kek_path = places
    spec = write_new_kek(kek_path)
    Keyring.generate().with_kek(kek_from(spec, keyring_path)).save(keyring_path)
    store = LmdbStore.open(
        tmp_path / "data", KeyringFile(keyring_path, check_seconds=0), map_size=1 << 24,
        keyring_path=keyring_path,
    )  # fmt: skip
    try:
        assert rotation.rotate(store.write, keyring_path, pseudonym=False) == 2
    finally:
        store.close()
    document = json.loads(keyring_path.read_text())
    assert document["kek"] == spec and _encrypted_keysets(document)
    assert set(Keyring.load(keyring_path).seal.keys) == {1, 2}


def test_the_cli_makes_a_kek_seals_a_deployments_keyring_and_every_command_reads_it(tmp_path: Path):
    setup = tmp_path / "dev"
    assert run("dev", "init", str(setup), "--listen", "127.0.0.1:0").exit_code == 0
    config = str(setup / "kfr.toml")
    before = Keyring.load(setup / "keyring.json")
    (tmp_path / "secrets").mkdir()
    kek = tmp_path / "secrets" / "keyring.kek"
    made = run("keys", "kek", str(kek))
    assert made.exit_code == 0 and f"file:{kek}" in made.output
    relative = os.path.relpath(kek)  # stored as an absolute path, whoever reads it
    sealed = run("keys", "encrypt", "--kek", f"file:{relative}", "--config", config)
    assert sealed.exit_code == 0, sealed.output
    assert json.loads((setup / "keyring.json").read_text())["kek"] == f"file:{kek}"
    assert Keyring.load(setup / "keyring.json") == before  # the same keys
    listed = run("institutions", "list", "--config", config)
    assert listed.exit_code == 0, listed.output
    doctor = run("doctor", "--config", config)
    assert f"OK   keyring encryption: sealed under file:{kek}" in doctor.output
    kek.unlink()
    broken = run("institutions", "list", "--config", config)
    assert broken.exit_code == 1 and "does not exist" in broken.output
    assert "Traceback" not in broken.output


def test_kfr_keys_kek_into_a_missing_directory_says_so_without_a_traceback(tmp_path: Path):
    result = run("keys", "kek", str(tmp_path / "missing" / "keyring.kek"))
    assert result.exit_code == 1
    assert "make its directory first" in result.output and "Traceback" not in result.output
