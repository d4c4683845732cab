"""The TOML configuration: paths, defaults, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfr_grpc.config import DEFAULT_LISTEN, host_port, load_config
from kfr_grpc.errors import ConfigError

MINIMAL = """
data_dir = "data"
keyring = "secrets/keyring.json"
[tls]
cert = "server.crt"
key = "server.key"
client_ca = "ca.crt"
[tokens]
issuer = "https://maskinporten.no/"
audience = "https://kfr.example/api"
jwks = "jwks.json"
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
    assert config.tls.crls == ()
    tokens = config.tokens
    assert tokens.jwks == str((tmp_path / "jwks.json").resolve())
    assert (tokens.institution_scope, tokens.agency_scope, tokens.account_scope) == (
        ("bits:kundeforhold.write",),
        ("bits:kundeforhold",),
        ("bits:kundeforhold.konto",),
    )
    assert tokens.audience == "https://kfr.example/api" and tokens.leeway_seconds == 30


def test_a_production_config_must_name_the_token_audience(tmp_path: Path):
    without = MINIMAL.replace('audience = "https://kfr.example/api"\n', "")
    with pytest.raises(ConfigError, match=r"tokens\.audience must be set"):
        load_config(write(tmp_path, without))
    assert load_config(write(tmp_path, "test_mode = true\n" + without)).tokens.audience is None


def test_https_jwks_and_crls(tmp_path: Path):
    text = MINIMAL.replace('jwks = "jwks.json"', 'jwks = "https://maskinporten.no/jwk"')
    text = text.replace('audience = "https://kfr.example/api"', 'audience = "kfr"')
    text = text.replace(
        'client_ca = "ca.crt"', 'client_ca = "ca.crt"\ncrls = ["a.crl", "/x/b.crl"]'
    )
    config = load_config(write(tmp_path, text))
    assert config.tokens.jwks == "https://maskinporten.no/jwk"
    assert config.tokens.audience == "kfr"
    assert config.tls.crls == ((tmp_path / "a.crl").resolve(), Path("/x/b.crl"))


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
        ("[server]\nfile_check_seconds = -1", "server.file_check_seconds must not be negative"),
    ],
)
def test_errors_name_the_setting(tmp_path: Path, extra: str, message: str):
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, MINIMAL.replace("[tls]", extra + "\n[tls]", 1)))
    assert message in str(raised.value)


def test_token_leeway_is_at_most_30_seconds(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"tokens\.leeway_seconds must be 0 to 30"):
        load_config(write(tmp_path, MINIMAL + "leeway_seconds = 60\n"))


def test_missing_tables_are_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="tls is required"):
        load_config(write(tmp_path, 'data_dir = "d"\nkeyring = "k"\n'))
    without_tokens = MINIMAL[: MINIMAL.index("[tokens]")]
    with pytest.raises(ConfigError, match="tokens is required"):
        load_config(write(tmp_path, without_tokens))


def test_keyring_inside_the_data_directory_is_refused(tmp_path: Path):
    text = MINIMAL.replace('keyring = "secrets/keyring.json"', 'keyring = "data/keyring.json"')
    with pytest.raises(ConfigError, match="must not lie inside data_dir"):
        load_config(write(tmp_path, text))


def test_missing_or_broken_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match=r"kfr\.toml"):
        load_config(write(tmp_path, "listen = "))


@pytest.mark.parametrize("address", ["localhost", "localhost:http", ":50051", "h:70000"])
def test_addresses_must_be_host_and_port(tmp_path: Path, address: str):
    with pytest.raises(ConfigError, match=r"listen must be host:port"):
        load_config(write(tmp_path, f'listen = "{address}"\n' + MINIMAL))
    with pytest.raises(ConfigError, match=r"metrics\.listen must be host:port"):
        load_config(write(tmp_path, MINIMAL + f'\n[metrics]\nlisten = "{address}"\n'))


def test_host_port_takes_ipv6_and_port_zero():
    assert host_port("[::1]:0") == ("[::1]", 0)
    assert host_port("0.0.0.0:50051") == ("0.0.0.0", 50051)
