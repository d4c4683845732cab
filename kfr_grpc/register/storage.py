"""What the register needs from a store: the seam between domain rules and storage.

The register owns these interfaces and the stores implement them (``store.LmdbStore``
today; a replicated store is the next). Nothing here names a storage engine, a key
layout or an encoding: the register asks for histories, institutions and records in its
own types, and a store decides how they are kept.

- ``Storage``: what the use cases need. ``read()`` gives a consistent snapshot;
  ``write(work)`` runs ``work`` in one atomic transaction and returns its result. A
  store may run ``work`` more than once (after growing its map, or when a replicated
  log moved on under it), so ``work`` changes nothing but the transaction it is given.
- ``StorageMaintenance``: what the operator's tools need: key rotation, backups, sizes.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Protocol, TypeVar

from kfr_grpc.register.customer_ids import CustomerId
from kfr_grpc.register.model import (
    Corrections,
    History,
    Institution,
    LookupCount,
    ProductKind,
    RequestRecord,
    Role,
    RoleHistory,
    StoredHistory,
)

T = TypeVar("T")
Progress = Callable[[int], None]


class ReadTxn(Protocol):
    """Reads within one consistent snapshot."""

    def history(
        self, customer: CustomerId, institution: str, role: Role, kind: ProductKind
    ) -> History:
        """The periods of one relationship (customer, institution, role, kind); empty if
        never reported."""
        ...

    def history_and_ref(
        self, customer: CustomerId, institution: str, role: Role, kind: ProductKind
    ) -> tuple[History, int | None]:
        """``history``, and a reference to the relationship within its institution: a
        small non-negative integer, the same for as long as the relationship exists (once it
        is gone, a new one may get it; None if never reported). ``institution_histories``
        can pass over references."""
        ...

    def corrections(
        self, customer: CustomerId, institution: str, role: Role, kind: ProductKind
    ) -> Corrections:
        """The corrections made to one relationship (none if never reported)."""
        ...

    def has_relationships(self, institution: str) -> bool: ...

    def relationships(
        self, customer: CustomerId, institution: str | None = None
    ) -> Iterator[RoleHistory]:
        """Every role history of ``customer`` (at ``institution``, if given)."""
        ...

    def institution_histories(
        self, institution: str, skip: Container[int] | None = None
    ) -> Iterator[StoredHistory]:
        """Every relationship of ``institution`` but those whose reference is in ``skip``
        (which cost next to nothing); costs what the institution has."""
        ...

    def expired(self, cutoff: date) -> Iterator[StoredHistory]:
        """Each relationship with a period that ended before ``cutoff``, once, in order of
        its earliest such end; costs what it yields, not the register's size."""
        ...

    def relationship_count(self) -> int: ...

    def active_relationship_count(self) -> int: ...

    def institution(self, org_number: str) -> Institution | None: ...

    def institutions(self) -> Iterator[Institution]: ...

    def institutions_version(self) -> int:
        """Changes whenever an institution record does (what caches of them check)."""
        ...

    def collection_account_owner(self, account: str) -> str | None: ...

    def collection_accounts(self) -> Iterator[tuple[str, str]]:
        """Every (collection account, org number of its institution), by account."""
        ...

    def request_records(self, correlation_id: str) -> list[RequestRecord]:
        """Every record under ``correlation_id``, oldest first."""
        ...

    def count_request_records_before(self, before: datetime) -> int: ...

    def lookup_counts(self) -> Iterator[LookupCount]: ...


class WriteTxn(ReadTxn, Protocol):
    """Reads and writes within one atomic transaction."""

    def put_history(
        self,
        customer: CustomerId,
        institution: str,
        role: Role,
        kind: ProductKind,
        history: History,
        corrections: Corrections | None = None,
    ) -> None:
        """Stores ``history``; an empty one removes the relationship. ``corrections``
        replace the relationship's; None keeps those about periods still there."""
        ...

    def put_institution(self, institution: Institution) -> None: ...

    def put_collection_account(self, account: str, org_number: str) -> None: ...

    def delete_collection_account(self, account: str) -> None: ...

    def put_request_record(self, record: RequestRecord) -> None: ...

    def expire_request_records(self, before: datetime, limit: int) -> int:
        """Deletes up to ``limit`` records older than ``before``; returns how many."""
        ...

    def add_lookup_counts(
        self, day: date, agency: str, mandate: str, counts: dict[str, int]
    ) -> None: ...


class Storage(Protocol):
    # Whether ``read()`` may wait on the network (a replicated store's linearizable read
    # first asks the cluster how far the log goes): then it is no work for an event loop.
    reads_wait: bool

    def read(self) -> AbstractContextManager[ReadTxn]: ...

    def write(self, work: Callable[[WriteTxn], T]) -> T: ...


@dataclass(frozen=True, slots=True)
class MigrationResult:
    examined: int  # values (reseal) or relationships (repseudonymise) looked at
    changed: int  # re-sealed or moved
    retired: tuple[int, ...]  # key versions removed from the keyring
    finished: bool  # False when stopped early (run again to continue)


@dataclass(frozen=True, slots=True)
class CopySummary:
    """What a backup copy holds."""

    path: Path
    bytes: int
    relationships: int
    institutions: int


@dataclass(frozen=True, slots=True)
class StoreUsage:
    used_bytes: int
    capacity_bytes: int  # what the store can hold before it must grow


class StorageMaintenance(Protocol):
    """The operator's tools: key rotation, backups, figures."""

    def rotate_key(self, *, pseudonym: bool) -> int:
        """Adds a seal (or pseudonym) key version and makes new writes use it."""
        ...

    def reseal(self, progress: Progress) -> MigrationResult: ...

    def repseudonymise(
        self, progress: Progress, *, stop_after_batches: int | None = None
    ) -> MigrationResult: ...

    def migrate(self, progress: Progress) -> MigrationResult:
        """Brings a store of an older format to the current one (online, resumable)."""
        ...

    def sealed_value_count(self) -> int: ...

    def backup(self, destination: Path) -> CopySummary: ...

    def compact(self) -> tuple[CopySummary, int]:
        """Swaps in a copy holding only what is live (online); what it holds and the old
        file's size."""
        ...

    def problems(self) -> list[str]:
        """Every inconsistency between this copy's records, indexes and counts."""
        ...

    def usage(self) -> StoreUsage: ...

    def close(self, wait_seconds: float = 10.0) -> None: ...
