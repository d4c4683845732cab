"""``kfr dev init``: a complete local setup with predictable names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kfr_grpc.clock import SystemClock
from kfr_grpc.config import DEFAULT_LISTEN, load_config
from kfr_grpc.dev import pki
from kfr_grpc.errors import ConfigError
from kfr_grpc.keyring import Keyring
from kfr_grpc.server import open_register

# Organisation numbers with valid check digits in the 3xx series, which Tenor uses for
# synthetic organisations.
TEST_INSTITUTION_ORG = "311000004"
TEST_INSTITUTION_NAME = "Testbanken KFR"
TEST_AGENCY_ORG = "312000008"
TEST_AGENCY_NAME = "Testetaten KFR"
TEST_MANDATE = "Skatteforvaltningsloven § 10-2"

CONFIG_NAME = "kfr.toml"


@dataclass(frozen=True)
class DevSetup:
    directory: Path

    @property
    def config(self) -> Path:
        return self.directory / CONFIG_NAME

    def file(self, name: str) -> Path:
        return self.directory / name


def create_dev_setup(directory: Path, *, listen: str = DEFAULT_LISTEN) -> DevSetup:
    """Writes CA, server and client certificates, a keyring, a config and a store
    with the test institution registered. Refuses a directory that already has a config."""
    setup = DevSetup(directory.resolve())
    if setup.config.exists():
        raise ConfigError(f"{setup.config} already exists; remove {directory} to start afresh")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    ca = pki.make_ca()
    ca.write(setup.file("ca.crt"), setup.file("ca.key"))
    pki.issue_server(ca).write(setup.file("server.crt"), setup.file("server.key"))
    pki.issue_enterprise(ca, TEST_INSTITUTION_ORG, TEST_INSTITUTION_NAME).write(
        setup.file("institution.crt"), setup.file("institution.key")
    )
    pki.issue_enterprise(
        ca, TEST_AGENCY_ORG, TEST_AGENCY_NAME, style="organizationIdentifier"
    ).write(setup.file("agency.crt"), setup.file("agency.key"))
    Keyring.generate().save(setup.file("keyring.json"))
    setup.config.write_text(_config_text(listen), encoding="utf-8")

    register, store = open_register(load_config(setup.config), SystemClock())
    try:
        register.add_institution(TEST_INSTITUTION_ORG, TEST_INSTITUTION_NAME)
    finally:
        store.close()
    return setup


def _config_text(listen: str) -> str:
    return f'''# Local development setup made by `kfr dev init`; see README.md, "Configuration".
listen = "{listen}"
data_dir = "data"
keyring = "keyring.json"
# Test mode accepts synthetic (Tenor) customer IDs. Never enable it in production.
test_mode = true

[tls]
cert = "server.crt"
key = "server.key"
client_ca = "ca.crt"

[[agencies]]
org_number = "{TEST_AGENCY_ORG}"
name = "{TEST_AGENCY_NAME}"
mandates = ["{TEST_MANDATE}"]
owner_only = false
'''
