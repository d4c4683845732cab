"""Constants and helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from kfr_grpc.client import KfrClient, secure_channel
from kfr_grpc.clock import FixedClock
from kfr_grpc.config import load_config
from kfr_grpc.dev.synthetic import regular_person_id, synthetic_org_number, synthetic_person_id
from kfr_grpc.server import KfrServer

TODAY = date(2026, 6, 15)

INSTITUTION_ORG = "311000004"
INSTITUTION_NAME = "Testbanken KFR"
OTHER_INSTITUTION_ORG = "313000001"
OTHER_INSTITUTION_NAME = "Andre Testbank"
UNREGISTERED_ORG = "314000005"
AGENCY_ORG = "312000008"
OWNER_ONLY_AGENCY_ORG = "315000009"
MANDATE = "Skatteforvaltningsloven § 10-2"
OTHER_MANDATE = "Tvangsfullbyrdelsesloven § 7-9"


class Ids:
    """Makes synthetic customer IDs and remembers every one, for the log checks."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self.issued: list[str] = []

    def _remember(self, value: str) -> str:
        self.issued.append(value)
        return value

    def person(self, *, d_number: bool = False) -> str:
        return self._remember(synthetic_person_id(self._rng, d_number=d_number))

    def regular_person(self, *, d_number: bool = False) -> str:
        return self._remember(regular_person_id(self._rng, d_number=d_number))

    def company(self) -> str:
        return self._remember(synthetic_org_number(self._rng))


def find_leaks(values: list[str], caplog) -> list[str]:
    """The values that appear in any captured log record (message or formatted line)."""
    text = "\n".join(record.getMessage() for record in caplog.records) + caplog.text
    return [value for value in values if value in text]


@dataclass(frozen=True)
class Identity:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: Identity
    institution: Identity
    institution_org_identifier: Identity
    other_institution: Identity
    unregistered: Identity
    agency: Identity
    owner_only_agency: Identity
    no_org_number: Identity
    foreign_ca_institution: Identity
    expired_institution: Identity


class RunningServer:
    """A real KFR server on a free loopback port, and clients for each test identity."""

    def __init__(self, config_path: Path, test_pki: Pki, clock: FixedClock) -> None:
        self.config_path = config_path
        self.pki = test_pki
        self.clock = clock
        self._clients: list[KfrClient] = []
        self.server: KfrServer | None = None

    def start(self) -> None:
        self.server = KfrServer(load_config(self.config_path), clock=self.clock)
        self.port = self.server.start()

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()
        if self.server is not None:
            self.server.stop(grace=0)
            self.server = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self, identity: Identity, *, ca: Path | None = None) -> KfrClient:
        channel = secure_channel(
            f"localhost:{self.port}", ca=ca or self.pki.ca, cert=identity.cert, key=identity.key
        )
        client = KfrClient(channel)
        self._clients.append(client)
        return client

    @property
    def keyring_path(self) -> Path:
        return load_config(self.config_path).keyring

    @property
    def data_dir(self) -> Path:
        return load_config(self.config_path).data_dir

    def relationship_count(self) -> int:
        assert self.server is not None
        with self.server.store.read() as view:
            return view.relationship_count()
