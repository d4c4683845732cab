"""Where a bulk load's time per relationship goes, piece by piece, in one process.

    python -m bench.bulk_costs [--preload 100000] [--chunk 1000] [--group 10]

Builds a fresh dev store, preloads ``--preload`` relationships, then times each step a
relationship takes through ``ReportStream`` on chunks of ``--chunk`` (every figure is
the mean over a few chunks, in microseconds per relationship):

- the wire: a chunk parsed from its bytes, and turned into rows (the event loop's part);
- validation: check digits, birth date, dates and roles (the helper process's part),
  and the pickling that carries the result back;
- the store: a pseudonym (HMAC-SHA-256), an LMDB read of the record (none yet), the
  record encoded and sealed (AES-256-GCM), the two LMDB writes (record, by-institution
  index), and then the whole write of ``--group`` chunks as the server does it, in one
  transaction with its commit and fsync (what the pieces add up to, and the rest:
  Python's own work between them).

The server runs the three parts at once (event loop, helper process, store thread), so
its rate is set by the slowest part, the store, as long as a core is free for each. No
targets: ``make bench`` has them; this says where to look.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import pickle
import time
import uuid
from collections.abc import Callable
from datetime import date

from bench.common import fresh_dev_store
from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.api.convert import report_rows
from kfr_grpc.clock import SystemClock
from kfr_grpc.dev.setup import TEST_INSTITUTION_ORG
from kfr_grpc.dev.synthetic import unique_synthetic_person_ids
from kfr_grpc.register.bulk import BulkLoad
from kfr_grpc.register.customer_ids import CustomerId, CustomerKind
from kfr_grpc.register.model import CallInfo, Period, ProductKind, Role
from kfr_grpc.register.service import Register
from kfr_grpc.store import codec
from kfr_grpc.store.layout import BY_INSTITUTION, RELATIONSHIPS, pad

METHOD = "/kfr.v1.InstitutionService/ReportStream"


def main() -> None:
    parser = argparse.ArgumentParser(description="bulk-load costs per relationship")
    parser.add_argument("--preload", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--group", type=int, default=10)
    args = parser.parse_args()
    with fresh_dev_store("kfr-costs-") as store:
        _measure(store, args)


def _measure(store, args) -> None:
    register = Register(store, SystemClock(), test_mode=True)
    validate = register.row_validator()
    ids = unique_synthetic_person_ids(seed=17)
    call = CallInfo(str(uuid.uuid4()), METHOD, TEST_INSTITUTION_ORG)

    def chunk_bytes() -> bytes:
        customers = itertools.islice(ids, args.chunk)
        return pb.ReportRequest(
            institution_org_number=TEST_INSTITUTION_ORG,
            relationships=[
                pb.Relationship(customer_id=c, role=pb.ROLE_OWNER, start_date="2020-01-01")
                for c in customers
            ],
        ).SerializeToString()

    load = BulkLoad()
    for _ in range(max(args.preload // args.chunk, 0)):
        load = register.apply_chunks(call, load, [validate(_rows(chunk_bytes()))], last=False)

    sample = [chunk_bytes() for _ in range(args.group)]
    n = args.chunk * args.group
    rows = [_rows(data) for data in sample]
    validated = [validate(r) for r in rows]
    # The store's own keys and LMDB handles (private: this times the pieces one by one).
    crypto = store._current_crypto()
    pseudonymiser = crypto.pseudonymisers[max(crypto.pseudonymisers)]
    customers = [CustomerId(row[0], CustomerKind.PERSON) for r in validated for row in r[0]]
    history = (Period(date(2020, 1, 1)),)
    org = TEST_INSTITUTION_ORG

    place = codec.place(org, Role.OWNER, ProductKind.UNSPECIFIED)

    def key_of(customer: CustomerId) -> bytes:
        pseudonym = pseudonymiser.pseudonym(customer.digits)
        tag = pseudonymiser.tag(codec.relationship_tag_data(pseudonym, place))
        return codec.relationship_key(1, pseudonym, tag)

    keys = [key_of(c) for c in customers]
    encoded = [codec.encode_relationship(c, place, history, 1, ()) for c in customers]

    def parse() -> None:
        for data in sample:
            pb.ReportRequest.FromString(data)

    def as_rows() -> None:
        for data in sample:
            _rows(data)

    def validation() -> None:
        for chunk_rows in rows:
            validate(chunk_rows)

    def pickling() -> None:
        for result in validated:
            pickle.loads(pickle.dumps(result))

    def pseudonyms() -> None:
        for customer in customers:
            key_of(customer)

    def encoding() -> None:
        for customer in customers:
            codec.encode_relationship(customer, place, history, 1, ())

    def sealing() -> None:
        for value, key in zip(encoded, keys, strict=True):
            crypto.sealer.seal(pad(value), key)

    def reads(txn) -> None:
        for key in keys:
            txn._txn.get(key, db=txn._db[RELATIONSHIPS])

    def writes(txn) -> None:
        for key, value in zip(keys, encoded, strict=True):
            txn._txn.put(key, value, db=txn._db[RELATIONSHIPS])
            txn._txn.put(key[:12], key, db=txn._db[BY_INSTITUTION])

    costs = [
        ("wire: parse a chunk from its bytes", parse),
        ("wire: the chunk as rows", as_rows),
        ("validation: check digits, birth dates, dates, roles", validation),
        ("validation: its result pickled and unpickled", pickling),
        ("store: pseudonym and key tag (2 x HMAC-SHA-256)", pseudonyms),
        ("store: record encoded", encoding),
        ("store: record padded and sealed (AES-256-GCM)", sealing),
        ("store: LMDB read of a record not there yet", lambda: _rolled_back(store, reads)),
        ("store: LMDB writes (record and index)", lambda: _rolled_back(store, writes)),
    ]
    print(
        f"## Bulk-load costs per relationship (store of {args.preload:,}, chunks of "
        f"{args.chunk:,}, {args.group} chunks per transaction)\n"
    )
    print("| step | µs per relationship |")
    print("|---|---|")
    store_pieces = 0.0
    for name, work in costs:
        cost = _per_item(work, n)
        store_pieces += cost if name.startswith("store:") else 0.0
        print(f"| {name} | {cost:.2f} |")
    started = time.perf_counter()
    register.apply_chunks(call, load, validated, last=True)
    whole = (time.perf_counter() - started) / n * 1e6
    print(
        f"| store: the whole write as the server does it, commit and fsync included | {whole:.2f} |"
    )
    print(
        f"| store: the rest (Python between the pieces, the commit's page writes, fsync) "
        f"| {whole - store_pieces:.2f} |"
    )


def _rows(data: bytes) -> list:
    return report_rows(pb.ReportRequest.FromString(data).relationships)


class _Rollback(Exception):
    """Leaves a timing transaction without committing it."""


def _rolled_back(store, work: Callable[[object], object]) -> None:
    def run(txn) -> None:
        work(txn)
        raise _Rollback

    with contextlib.suppress(_Rollback):
        store.write(run)


def _per_item(work: Callable[[], object], items: int, rounds: int = 3) -> float:
    """The fastest of ``rounds`` runs, in microseconds per item."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best / items * 1e6


if __name__ == "__main__":
    main()
