"""The TOML configuration: paths, defaults, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfr_grpc.config import DEFAULT_LISTEN, load_config
from kfr_grpc.errors import ConfigError

MINIMAL = """
data_dir = "data"
keyring = "secrets/keyring.json"
[tls]
cert = "server.crt"
key = "server.key"
client_ca = "ca.crt"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kfr.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_config_has_sensible_defaults_and_resolves_paths(tmp_path: Path):
    config = load_config(write(tmp_path, MINIMAL))
    assert config.listen == DEFAULT_LISTEN
    assert config.test_mode is False
    assert config.data_dir == (tmp_path / "data").resolve()
    assert config.keyring == (tmp_path / "secrets" / "keyring.json").resolve()
    assert config.tls.client_ca == (tmp_path / "ca.crt").resolve()
    assert config.agencies == ()


def test_agencies_are_read(tmp_path: Path):
    config = load_config(
        write(
            tmp_path,
            MINIMAL
            + """
[[agencies]]
org_number = "312 000 008"
name = "Etaten"
mandates = ["A", " B "]
owner_only = true
""",
        )
    )
    (agency,) = config.agencies
    assert agency.org_number == "312000008"
    assert agency.mandates == frozenset({"A", "B"})
    assert agency.owner_only is True


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("listne = 'x'", "listne is not a known setting"),
        ("test_mode = 'yes'", "test_mode has the wrong type"),
        ("log_level = 'LOUD'", "log_level must be one of"),
        ("[store]\nmap_size_mb = 0", "store.map_size_mb must be positive"),
        ("[server]\nthreads = true", "server.threads has the wrong type"),
        ("[[agencies]]\norg_number = '123456789'\nmandates = ['A']", "agencies[0].org_number"),
        ("[[agencies]]\norg_number = '312000008'\nmandates = []", "agencies[0].mandates"),
        ("[[agencies]]\norg_number = '312000008'", "agencies[0].mandates is required"),
    ],
)
def test_errors_name_the_setting(tmp_path: Path, extra: str, message: str):
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, MINIMAL.replace("[tls]", extra + "\n[tls]", 1)))
    assert message in str(raised.value)


def test_missing_tls_table_is_an_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="tls is required"):
        load_config(write(tmp_path, 'data_dir = "d"\nkeyring = "k"\n'))


def test_keyring_inside_the_data_directory_is_refused(tmp_path: Path):
    text = MINIMAL.replace('keyring = "secrets/keyring.json"', 'keyring = "data/keyring.json"')
    with pytest.raises(ConfigError, match="must not lie inside data_dir"):
        load_config(write(tmp_path, text))


def test_missing_or_broken_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match=r"kfr\.toml"):
        load_config(write(tmp_path, "listen = "))
