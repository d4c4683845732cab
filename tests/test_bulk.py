"""ReportStream against the live server, and the bulk-load file formats."""

from __future__ import annotations

import io
import itertools
import uuid

import grpc
import pytest

from kfr_grpc import loadfile
from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.loadfile import Entry, Malformed
from tests.support import INSTITUTION_ORG, UNREGISTERED_ORG
from tests.test_server import end, list_own, lookup, report, rpc_error

StatusCode = grpc.StatusCode
OWNER, DISPONENT = pb.ROLE_OWNER, pb.ROLE_DISPONENT


def stream(client, *chunks_of_items, org=INSTITUTION_ORG, correlation=None):
    messages = [
        pb.ReportRequest(
            institution_org_number=org if index == 0 else "",
            relationships=[
                pb.Relationship(customer_id=c, role=r, start_date=d) for c, r, d in items
            ],
        )
        for index, items in enumerate(chunks_of_items)
    ]
    metadata = (("correlation-id", correlation),) if correlation else ()
    return client.institutions.ReportStream(iter(messages), metadata=metadata)


def rejected(response) -> list[tuple[int, str, str]]:
    return [(r.position, r.field, r.code) for r in response.rejected]


@pytest.mark.parametrize("validation_processes", [0, 1])
def test_a_stream_commits_the_good_items_and_lists_the_bad_ones(
    server_factory, ids, validation_processes
):
    server = server_factory(validation_processes=validation_processes)
    client = server.client(server.pki.institution)
    returning, company = ids.person(), ids.company()
    report(client, INSTITUTION_ORG, (returning, OWNER, "2015-01-01"))
    end(client, INSTITUTION_ORG, (returning, OWNER, "2020-01-01"))
    good = [ids.person() for _ in range(5)]
    broken = good[0][:-1] + str((int(good[0][-1]) + 1) % 10)

    response = stream(
        client,
        [(good[0], OWNER, "2021-01-01"), (broken, OWNER, ""), (good[1], OWNER, "")],
        [(good[2], 7, ""), (company, DISPONENT, "")],
        [(good[3], OWNER, "2099-01-01"), (returning, OWNER, "2019-01-01"), (good[4], DISPONENT, ""),
         (good[0], OWNER, "")],
    )  # fmt: skip

    assert (response.registered_count, response.already_registered_count) == (3, 1)
    assert response.accepted_count == 4 and response.chunk_count == 3
    assert response.rejected_count == 5 and not response.rejected_truncated
    assert rejected(response) == [
        (1, "customer_id", "CUSTOMER_ID_CHECKSUM"),
        (3, "role", "ROLE_UNKNOWN"),
        (4, "role", "DISPONENT_NOT_A_PERSON"),
        (5, "start_date", "DATE_IN_FUTURE"),
        (6, "start_date", "START_BEFORE_PREVIOUS_END"),
    ]
    assert not any(value in str(response) for value in [*good, broken, company, returning])
    # Synchronous: visible to Lookup at once, and can be ended right away.
    assert lookup(server.client(server.pki.agency), good[4])
    assert end(client, INSTITUTION_ORG, (good[0], OWNER, "")).ended_count == 1
    assert list_own(client, INSTITUTION_ORG, good[2]) == []


def test_the_request_log_records_a_stream(server, ids):
    client = server.client(server.pki.institution)
    correlation = str(uuid.uuid4())
    stream(client, [(ids.person(), OWNER, ""), ("123", OWNER, "")], correlation=correlation)
    request = pb.GetRequestLogRequest(
        institution_org_number=INSTITUTION_ORG, correlation_id=correlation
    )
    (record,) = client.institutions.GetRequestLog(request).records
    assert dict(record.counts) == {
        "registered": 1,
        "already_registered": 0,
        "rejected": 1,
        "chunks": 1,
    }
    assert [(v.field, v.code) for v in record.rejected] == [
        ("stream[1].customer_id", "CUSTOMER_ID_MALFORMED")
    ]


def test_the_rejected_list_is_bounded_but_the_count_is_not(server):
    client = server.client(server.pki.institution)
    bad = [("123", OWNER, "")] * 6000
    response = stream(client, bad, bad)
    assert response.rejected_count == 12_000
    assert len(response.rejected) == 10_000 and response.rejected_truncated
    assert response.rejected[-1].position == 9_999


def test_a_stream_for_an_unregistered_institution_is_denied(server, ids):
    client = server.client(server.pki.unregistered)
    error = rpc_error(stream, client, [(ids.person(), OWNER, "")], org=UNREGISTERED_ORG)
    assert error.code() is StatusCode.PERMISSION_DENIED
    assert server.relationship_count() == 0


def test_an_empty_stream_and_an_oversized_chunk_are_invalid(server, ids):
    client = server.client(server.pki.institution)
    error = rpc_error(stream, client)
    assert error.code() is StatusCode.INVALID_ARGUMENT and "holds no chunk" in error.details()
    error = rpc_error(stream, client, [(ids.person(), OWNER, "")] * 20_001)
    assert error.code() is StatusCode.INVALID_ARGUMENT and "at most 20000" in error.details()
    assert server.relationship_count() == 0


def test_a_later_chunk_naming_another_institution_stops_the_stream(server, ids):
    client = server.client(server.pki.institution)
    first, second = ids.person(), ids.person()
    messages = iter(
        [
            pb.ReportRequest(
                institution_org_number=INSTITUTION_ORG,
                relationships=[pb.Relationship(customer_id=first, role=OWNER)],
            ),
            pb.ReportRequest(
                institution_org_number="313000001",
                relationships=[pb.Relationship(customer_id=second, role=OWNER)],
            ),
        ]
    )
    error = rpc_error(client.institutions.ReportStream, messages)
    assert error.code() is StatusCode.INVALID_ARGUMENT
    assert "differs between chunks" in error.details()
    assert "1 items in 1 chunks were committed before this" in error.details()
    assert lookup(server.client(server.pki.agency), first)  # the acknowledged chunk stays
    assert server.relationship_count() == 1


def test_a_chunk_that_fails_to_commit_leaves_nothing_and_says_what_was_kept(server_factory, ids):
    server = server_factory(store_toml="map_size_mb = 1\nmax_map_size_mb = 2")
    client = server.client(server.pki.institution)
    batches = [[(ids.person(), OWNER, "2020-01-01") for _ in range(1000)] for _ in range(20)]
    error = rpc_error(stream, client, *batches)
    assert error.code() is StatusCode.RESOURCE_EXHAUSTED
    committed = int(error.details().split("; ")[-1].split(" items")[0])
    assert committed > 0 and committed % 1000 == 0  # whole chunks only
    assert server.relationship_count() == committed


# --- the file formats -------------------------------------------------------------------------


def test_batch_format_takes_line_breaks_anywhere_and_optional_dates():
    # The reader does not validate: placeholders stand in for IDs.
    text = " id-a#2020-01-01, id-b ,\nid-c#2021-02-03,,\n\nid-d"
    entries = list(loadfile.read_entries(io.StringIO(text), "batch", OWNER))
    assert [(e.line, e.customer_id, e.start_date) for e in entries] == [
        (1, "id-a", "2020-01-01"),
        (1, "id-b", ""),
        (2, "id-c", "2021-02-03"),
        (4, "id-d", ""),
    ]
    assert {e.role for e in entries} == {OWNER}


def test_csv_format_with_header_roles_and_unreadable_lines():
    text = "customer_id,role,start_date\n1,owner,2020-01-01\n2,Disponent\n3,boss,\n4\n5,ROLE_OWNER,"
    items = list(loadfile.read_entries(io.StringIO(text), "csv", OWNER))
    assert items == [
        Entry(2, "1", OWNER, "2020-01-01"),
        Entry(3, "2", DISPONENT, ""),
        Malformed(4, "role must be owner or disponent"),
        Malformed(5, "expected customer_id,role[,start_date[,kind]]"),
        Entry(6, "5", OWNER, ""),
    ]


def test_both_formats_take_an_optional_product_kind():
    text = "a#2020-01-01#loan, b##Payment_Account, c#2021-01-01, d#2021-01-01#boat"
    entries = list(loadfile.read_entries(io.StringIO(text), "batch", OWNER, pb.PRODUCT_KIND_OTHER))
    assert entries == [
        Entry(1, "a", OWNER, "2020-01-01", pb.PRODUCT_KIND_LOAN),
        Entry(1, "b", OWNER, "", pb.PRODUCT_KIND_PAYMENT_ACCOUNT),
        Entry(1, "c", OWNER, "2021-01-01", pb.PRODUCT_KIND_OTHER),  # the command line's kind
        Malformed(1, "kind must be payment_account, loan, other or unspecified"),
    ]
    text = "customer_id,role,start_date,kind\n1,owner,,account\n2,owner,2020-01-01,\n3,owner,,x"
    assert list(loadfile.read_entries(io.StringIO(text), "csv", OWNER)) == [
        Entry(2, "1", OWNER, "", pb.PRODUCT_KIND_PAYMENT_ACCOUNT),
        Entry(3, "2", OWNER, "2020-01-01", pb.PRODUCT_KIND_UNSPECIFIED),
        Malformed(4, "kind must be payment_account, loan, other or unspecified"),
    ]


def test_format_detection(tmp_path):
    csv_file, batch_file = tmp_path / "a.csv", tmp_path / "b.txt"
    csv_file.write_text("\n1,owner,2020-01-01\n")
    batch_file.write_text("1#2020-01-01,2,3\n")
    assert loadfile.detect_format(csv_file) == "csv"
    csv_file.write_text("1,owner,2020-01-01,loan\n")
    assert (loadfile.detect_format(csv_file), loadfile.detect_format(batch_file)) == (
        "csv",
        "batch",
    )


def test_chunks_name_the_institution_once_and_keep_order():
    entries = [Entry(n, str(n), OWNER, "") for n in range(5)]
    messages = list(loadfile.chunks(entries, INSTITUTION_ORG, 2))
    assert [len(m.relationships) for m in messages] == [2, 2, 1]
    assert [m.institution_org_number for m in messages] == [INSTITUTION_ORG, "", ""]
    assert [r.customer_id for m in messages for r in m.relationships] == ["0", "1", "2", "3", "4"]


def test_positions_map_back_to_lines():
    text = "a#,b\nc\n\nd,e,f\n"
    assert loadfile.lines_of_positions(io.StringIO(text), "batch", OWNER, {1, 3, 5}) == {
        1: 1,
        3: 4,
        5: 4,
    }
    assert loadfile.lines_of_positions(io.StringIO(text), "batch", OWNER, set()) == {}


def test_a_load_far_past_a_tiny_initial_map_succeeds(server_factory):
    from kfr_grpc.dev.synthetic import unique_synthetic_person_ids

    server = server_factory(store_toml="map_size_mb = 1")
    customers = list(itertools.islice(unique_synthetic_person_ids(seed=9), 30_000))
    batches = [
        [(c, OWNER, "2020-01-01") for c in customers[i : i + 5000]] for i in range(0, 30_000, 5000)
    ]
    response = stream(server.client(server.pki.institution), *batches)
    assert response.registered_count == 30_000 and response.rejected_count == 0
    usage = server.server.store.usage()
    used, size = usage.used_bytes, usage.capacity_bytes
    assert size > used > 4 * 1024 * 1024  # several times the initial 1 MB map
    assert server.relationship_count() == 30_000


# --- streams cut off ------------------------------------------------------------------------


def _held_stream(ids, first: int, then: int, release):
    """A chunk of ``first`` items, one of ``then``, and then nothing until ``release``."""

    def chunks():
        for index, count in enumerate((first, then)):
            yield pb.ReportRequest(
                institution_org_number=INSTITUTION_ORG if index == 0 else "",
                relationships=[pb.Relationship(customer_id=ids.person(), role=OWNER)
                               for _ in range(count)],
            )  # fmt: skip
        release.wait(30)

    return chunks()


def _records(client, correlation: str) -> list:
    """The request log's records under ``correlation`` ([] while there are none)."""
    request = pb.GetRequestLogRequest(
        institution_org_number=INSTITUTION_ORG, correlation_id=correlation
    )
    try:
        return list(client.institutions.GetRequestLog(request).records)
    except grpc.RpcError as error:
        if error.code() is StatusCode.NOT_FOUND:
            return []
        raise


@pytest.mark.parametrize("how", ["cancel", "deadline"])
def test_a_stream_cut_off_is_recorded_as_the_client_saw_it_with_what_was_committed(
    server, ids, how
):
    import threading

    from tests.support import wait_for

    client = server.client(server.pki.institution)
    for round_number in range(5):  # never once taken for a complete stream
        release, correlation = threading.Event(), str(uuid.uuid4())
        before = server.relationship_count()
        chunks = _held_stream(ids, 3, 2, release)
        metadata = (("correlation-id", correlation),)
        if how == "cancel":
            call = client.institutions.ReportStream.future(chunks, metadata=metadata)
            wait_for(lambda b=before: server.relationship_count() >= b + 3, "the first chunk")
            call.cancel()
            expected = "CANCELLED"
        else:
            with pytest.raises(grpc.RpcError) as raised:
                client.institutions.ReportStream(chunks, metadata=metadata, timeout=1.5)
            assert raised.value.code() is StatusCode.DEADLINE_EXCEEDED
            expected = "DEADLINE_EXCEEDED"
        release.set()
        (record,) = wait_for(lambda c=correlation: _records(client, c), "the stream's record")
        committed = server.relationship_count() - before
        assert record.status == expected, (round_number, record)
        assert [(r.field, r.code) for r in record.rejected][-1:] == [("stream", "PARTIAL")]
        assert f"{committed} items in" in record.rejected[-1].reason


def test_a_chunk_over_the_size_limit_ends_the_stream_saying_what_was_committed(server, ids):
    client = server.client(server.pki.institution)
    first = pb.ReportRequest(
        institution_org_number=INSTITUTION_ORG,
        relationships=[pb.Relationship(customer_id=ids.person(), role=OWNER) for _ in range(3)],
    )
    oversized = pb.ReportRequest(  # over the 4 MiB limit, under gRPC's own (5 MiB)
        relationships=[pb.Relationship(customer_id="9" * 4700, role=OWNER) for _ in range(1000)]
    )
    assert 4 * 1024 * 1024 < oversized.ByteSize() < 5 * 1024 * 1024
    correlation = str(uuid.uuid4())
    error = rpc_error(
        client.institutions.ReportStream, iter([first, first, oversized]),
        metadata=(("correlation-id", correlation),),
    )  # fmt: skip
    assert error.code() is StatusCode.RESOURCE_EXHAUSTED
    assert "larger than the 4,194,304 this server takes" in error.details()
    assert "items in 2 chunks were committed before this" in error.details()
    (record,) = _records(client, correlation)
    assert record.status == "RESOURCE_EXHAUSTED"
    assert record.rejected[-1].code == "PARTIAL"


def test_a_chunk_becomes_the_same_rows_as_its_report_items():
    """A bulk load turns a chunk straight into rows; a unary Report goes through items.
    Both read every role number the same: known ones, ROLE_UNSPECIFIED and unknown."""
    from kfr_grpc.api.convert import report_items, report_rows

    relationships = [
        pb.Relationship(customer_id="x", role=role, start_date=f"2020-01-0{index + 1}")
        for index, role in enumerate([OWNER, DISPONENT, pb.ROLE_UNSPECIFIED, 7])
    ]
    assert report_rows(relationships) == [item.row() for item in report_items(relationships)]
