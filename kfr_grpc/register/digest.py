"""A digest of the register's logical content: equal on every store that holds the same
institutions, relationships (with their periods) and collection accounts, whatever their
keys' nonces, page layout or request logs. Cluster nodes that applied the same log
position have equal digests (``kfr digest``); it reveals nothing of what it covers."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from kfr_grpc.register.model import ProductKind, StoredHistory
from kfr_grpc.register.storage import ReadTxn


@dataclass(frozen=True)
class ContentDigest:
    digest: str  # SHA-256, hex
    institutions: int
    relationships: int
    collection_accounts: int


def content_digest(view: ReadTxn) -> ContentDigest:
    total = hashlib.sha256()
    institutions = sorted(view.institutions(), key=lambda i: i.org_number)
    relationships = 0
    for institution in institutions:
        total.update(repr(institution).encode())
        lines = sorted(_line(h) for h in view.institution_histories(institution.org_number))
        relationships += len(lines)
        for line in lines:
            total.update(line)
    accounts = list(view.collection_accounts())
    for account, owner in accounts:
        total.update(f"account {account} {owner}\n".encode())
    return ContentDigest(total.hexdigest(), len(institutions), relationships, len(accounts))


def _line(history: StoredHistory) -> bytes:
    """One relationship: its customer only as a hash, so sorting reveals no order of IDs."""
    customer = hashlib.sha256(history.customer.digits.encode()).hexdigest()
    periods = ",".join(f"{p.start}/{p.end or ''}" for p in history.periods)
    role = history.role.name
    if history.kind is not ProductKind.UNSPECIFIED:  # as before kinds, for those without
        role += f" {history.kind.name}"
    notes = "".join(
        f" {c.made_on}:{c.action.name}:{c.reason.name}:{c.period_start or ''}:{c.previous or ''}"
        for c in history.corrections
    )  # none for a relationship never corrected: its line is as before corrections
    return f"{customer} {history.customer.kind.name} {role} {periods}{notes}\n".encode()
