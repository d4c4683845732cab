"""Right data, against the real server: product kinds and their periods, ownership types in
Lookup, corrections (Retract, Correct), reconciliation of the full set, and participants."""

from __future__ import annotations

import uuid
from datetime import timedelta

import grpc
import pytest

from kfr_grpc._proto import kfr_pb2 as pb
from tests.support import INSTITUTION_ORG, MANDATE, OTHER_INSTITUTION_ORG, TODAY
from tests.test_server import rpc_error

StatusCode = grpc.StatusCode
OWNER, DISPONENT = pb.ROLE_OWNER, pb.ROLE_DISPONENT
UNSPECIFIED, ACCOUNT = pb.PRODUCT_KIND_UNSPECIFIED, pb.PRODUCT_KIND_PAYMENT_ACCOUNT
LOAN, OTHER = pb.PRODUCT_KIND_LOAN, pb.PRODUCT_KIND_OTHER
PRIMARY, NOT_PRIMARY = pb.OWNERSHIP_TYPE_PRIMARY_OWNER, pb.OWNERSHIP_TYPE_NOT_PRIMARY_OWNER
UNKNOWN = pb.OWNERSHIP_TYPE_UNKNOWN
START_CORRECTED = pb.CORRECTION_ACTION_START_CORRECTED
END_CORRECTED = pb.CORRECTION_ACTION_END_CORRECTED
IN_ERROR, WRONG_DATE = pb.CORRECTION_REASON_REPORTED_IN_ERROR, pb.CORRECTION_REASON_WRONG_DATE


def report(client, *items, org=INSTITUTION_ORG):
    """``items``: (customer, role, kind, start)."""
    return client.institutions.Report(
        pb.ReportRequest(
            institution_org_number=org,
            relationships=[
                pb.Relationship(customer_id=c, role=r, kind=k, start_date=d) for c, r, k, d in items
            ],
        )
    )


def end(client, *items, org=INSTITUTION_ORG):
    """``items``: (customer, role, kind, end)."""
    return client.institutions.End(
        pb.EndRequest(
            institution_org_number=org,
            endings=[pb.Ending(customer_id=c, role=r, kind=k, end_date=d) for c, r, k, d in items],
        )
    )


def own(client, customer, org=INSTITUTION_ORG):
    """ListOwn as (role, kind, [(start, end)])."""
    response = client.institutions.ListOwn(
        pb.ListOwnRequest(institution_org_number=org, customer_id=customer)
    )
    return [
        (r.role, r.kind, [(p.start_date, p.end_date) for p in r.periods])
        for r in response.relationships
    ]


def notes(client, customer, org=INSTITUTION_ORG):
    """ListOwn's correction notes as (role, kind, action, reason, period start, previous)."""
    response = client.institutions.ListOwn(
        pb.ListOwnRequest(institution_org_number=org, customer_id=customer)
    )
    return [
        (r.role, r.kind, n.action, n.reason, n.period_start_date, n.previous_date)
        for r in response.relationships
        for n in r.corrections
    ]


def lookup(client, customer, from_date="2016-06-16", to_date="", **fields):
    return client.lookups.Lookup(
        pb.LookupRequest(
            customer_id=customer,
            from_date=from_date,
            to_date=to_date,
            role_filter=pb.ROLE_FILTER_ALL,
            legal_mandate=MANDATE,
            account_info_request_id=str(uuid.uuid4()),
            **fields,
        )
    )


def described(error: grpc.RpcError) -> str:
    """The error's message and every field violation as "field:CODE"."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    violations = []
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else ():
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            violations += [f"{v.field}:{v.reason}" for v in bad_request.field_violations]
    return " ".join([error.details(), *violations])


def ownership(response):
    return [
        (i.org_number, i.ownership_type, i.active_payment_account) for i in response.institutions
    ]


# --- kinds and their periods --------------------------------------------------------------


def test_each_kind_is_its_own_relationship_with_its_own_periods(server, ids):
    bank = server.client(server.pki.institution)
    customer = ids.person()
    result = report(
        bank,
        (customer, OWNER, ACCOUNT, "2020-01-01"),
        (customer, OWNER, LOAN, "2021-01-01"),
        (customer, OWNER, ACCOUNT, "2022-01-01"),  # already active: no change
    )
    assert (result.registered_count, result.already_registered_count) == (2, 1)
    assert end(bank, (customer, OWNER, LOAN, "2023-01-01")).ended_count == 1
    assert own(bank, customer) == [
        (OWNER, ACCOUNT, [("2020-01-01", "")]),
        (OWNER, LOAN, [("2021-01-01", "2023-01-01")]),
    ]
    report(bank, (customer, OWNER, LOAN, "2024-01-01"), (customer, DISPONENT, OTHER, ""))
    assert own(bank, customer)[1:] == [
        (OWNER, LOAN, [("2021-01-01", "2023-01-01"), ("2024-01-01", "")]),
        (DISPONENT, OTHER, [(TODAY.isoformat(), "")]),
    ]
    # Without a kind, End ends every kind of the role (as every client before kinds expects).
    assert end(bank, (customer, OWNER, UNSPECIFIED, "2025-01-01")).ended_count == 1
    assert [periods[-1][1] for role, _, periods in own(bank, customer) if role == OWNER] == [
        "2025-01-01", "2025-01-01"
    ]  # fmt: skip
    # An unknown kind number is refused like an unknown role.
    error = rpc_error(report, bank, (ids.person(), OWNER, 9, ""))
    assert error.code() == StatusCode.INVALID_ARGUMENT
    assert "relationships[0].kind" in described(error) and "KIND_UNKNOWN" in described(error)


# --- ownership types --------------------------------------------------------------------


def test_ownership_types_from_kinds_roles_and_unspecified_history(server, ids):
    bank = server.client(server.pki.institution)
    other_bank = server.client(server.pki.other_institution)
    agency = server.client(server.pki.agency)
    primary, unknown, only_disponent = ids.person(), ids.person(), ids.person()
    report(
        bank, (primary, OWNER, ACCOUNT, "2020-01-01"), (primary, OWNER, UNSPECIFIED, "2020-01-01")
    )
    report(other_bank, (primary, OWNER, LOAN, "2020-01-01"), org=OTHER_INSTITUTION_ORG)
    report(bank, (unknown, OWNER, UNSPECIFIED, "2019-01-01"), (unknown, DISPONENT, ACCOUNT, ""))
    report(other_bank, (unknown, OWNER, LOAN, "2019-01-01"), org=OTHER_INSTITUTION_ORG)
    report(bank, (only_disponent, DISPONENT, UNSPECIFIED, "2019-01-01"))

    assert ownership(lookup(agency, primary)) == [
        (INSTITUTION_ORG, PRIMARY, True),  # a payment account wins over unspecified data
        (OTHER_INSTITUTION_ORG, NOT_PRIMARY, False),  # a loan only
    ]
    assert ownership(lookup(agency, unknown)) == [
        (INSTITUTION_ORG, UNKNOWN, False),  # owner of something unspecified: cannot tell
        (OTHER_INSTITUTION_ORG, NOT_PRIMARY, False),
    ]
    # A disponent is never the primary owner, whatever the kind.
    assert ownership(lookup(agency, only_disponent)) == [(INSTITUTION_ORG, NOT_PRIMARY, False)]

    only_primary = lookup(agency, primary, only_primary_owner=True)
    assert [i.org_number for i in only_primary.institutions] == [INSTITUTION_ORG]
    assert lookup(agency, unknown, only_primary_owner=True).institutions == []

    # An account that ended before to_date: still primary owner in the window, not active.
    end(bank, (primary, OWNER, ACCOUNT, "2024-01-01"))
    answer = lookup(agency, primary, "2023-01-01", "2025-01-01")
    assert ownership(answer)[0] == (INSTITUTION_ORG, PRIMARY, False)
    assert answer.institutions[0].active  # the unspecified relationship is still ongoing
    assert ownership(lookup(agency, primary, "2024-06-01", "2025-01-01"))[0] == (
        INSTITUTION_ORG, UNKNOWN, False,
    )  # fmt: skip


# --- corrections ------------------------------------------------------------------------------


def retract(client, *items, org=INSTITUTION_ORG):
    """``items``: (customer, role, kind, start, reason)."""
    return client.institutions.Retract(
        pb.RetractRequest(
            institution_org_number=org,
            retractions=[
                pb.Retraction(customer_id=c, role=r, kind=k, start_date=s, reason=why)
                for c, r, k, s, why in items
            ],
        )
    )


def correct(client, *corrections, org=INSTITUTION_ORG):
    return client.institutions.Correct(
        pb.CorrectRequest(institution_org_number=org, corrections=list(corrections))
    )


def test_a_retracted_period_is_gone_as_if_never_reported(server, ids):
    bank = server.client(server.pki.institution)
    agency = server.client(server.pki.agency)
    mistaken, returning = ids.person(), ids.person()
    report(bank, (mistaken, OWNER, ACCOUNT, "2020-01-01"))
    report(bank, (returning, OWNER, LOAN, "2018-01-01"))
    end(bank, (returning, OWNER, LOAN, "2019-01-01"))
    report(bank, (returning, OWNER, LOAN, "2021-01-01"))

    call_id = str(uuid.uuid4())
    response = bank.institutions.Retract(
        pb.RetractRequest(
            institution_org_number=INSTITUTION_ORG,
            retractions=[
                pb.Retraction(customer_id=mistaken, role=OWNER, kind=ACCOUNT,
                              start_date="2020-01-01", reason=IN_ERROR),
                pb.Retraction(customer_id=returning, role=OWNER, kind=LOAN,
                              start_date="2018-01-01", reason=WRONG_DATE),
            ],
        ),
        metadata=(("correlation-id", call_id),),
    )  # fmt: skip
    assert response.retracted_count == 2
    assert lookup(agency, mistaken, "2000-01-01").institutions == []
    assert own(bank, mistaken) == []  # nothing kept: no tombstone
    assert own(bank, returning) == [(OWNER, LOAN, [("2021-01-01", "")])]
    assert lookup(agency, returning, "2018-01-01", "2019-06-01").institutions == []
    # The relationship that remains says that a period was retracted, and why; not which.
    assert notes(bank, returning) == [
        (OWNER, LOAN, pb.CORRECTION_ACTION_RETRACTED, WRONG_DATE, "", "")
    ]
    # The request log has the call, with counts by reason, and no customer ID.
    record = bank.institutions.GetRequestLog(
        pb.GetRequestLogRequest(institution_org_number=INSTITUTION_ORG, correlation_id=call_id)
    ).records[0]
    assert dict(record.counts) == {
        "retracted": 2, "unchanged": 0, "reason REPORTED_IN_ERROR": 1, "reason WRONG_DATE": 1,
    }  # fmt: skip
    assert mistaken not in str(record) and returning not in str(record)


def test_a_correction_call_is_all_or_nothing_and_names_what_is_wrong(server, ids):
    bank = server.client(server.pki.institution)
    customer, stranger = ids.person(), ids.person()
    report(bank, (customer, OWNER, ACCOUNT, "2020-01-01"))
    error = rpc_error(
        retract,
        bank,
        (customer, OWNER, ACCOUNT, "2020-01-01", IN_ERROR),
        (stranger, OWNER, ACCOUNT, "2020-01-01", IN_ERROR),
    )
    assert error.code() == StatusCode.NOT_FOUND and "retractions[1]" in described(error)
    assert stranger not in described(error)
    assert own(bank, customer) == [(OWNER, ACCOUNT, [("2020-01-01", "")])]  # nothing retracted

    error = rpc_error(
        retract,
        bank,
        (customer, OWNER, ACCOUNT, "", pb.CORRECTION_REASON_UNSPECIFIED),
        (customer, pb.ROLE_UNSPECIFIED, LOAN, "2020-01-01", 42),
    )
    assert error.code() == StatusCode.INVALID_ARGUMENT
    for expected in ("START_DATE_MISSING", "REASON_MISSING", "ROLE_MISSING", "REASON_UNKNOWN"):
        assert expected in described(error)
    # Another institution's period cannot be touched: to the caller it does not exist.
    other_bank = server.client(server.pki.other_institution)
    error = rpc_error(
        retract, other_bank, (customer, OWNER, ACCOUNT, "2020-01-01", IN_ERROR),
        org=OTHER_INSTITUTION_ORG,
    )  # fmt: skip
    assert error.code() == StatusCode.NOT_FOUND


def test_start_and_end_dates_are_corrected_and_a_period_reopened(server, ids):
    bank = server.client(server.pki.institution)
    agency = server.client(server.pki.agency)
    customer = ids.person()
    report(bank, (customer, OWNER, ACCOUNT, "2018-01-01"))
    end(bank, (customer, OWNER, ACCOUNT, "2019-01-01"))
    report(bank, (customer, OWNER, ACCOUNT, "2021-01-01"))
    end(bank, (customer, OWNER, ACCOUNT, "2022-01-01"))

    def change(start, reason=WRONG_DATE, **what):
        return pb.PeriodCorrection(
            customer_id=customer, role=OWNER, kind=ACCOUNT, start_date=start, reason=reason,
            **what,
        )  # fmt: skip

    response = correct(
        bank,
        change("2018-01-01", new_start_date="2017-06-01"),
        change("2017-06-01", new_end_date="2020-01-01"),  # sees the change before it
        change("2021-01-01", pb.CORRECTION_REASON_ENDED_IN_ERROR, reopen=True),
        change("2021-01-01", new_start_date="2021-01-01"),  # as it is: unchanged
    )
    assert (response.corrected_count, response.unchanged_count) == (3, 1)
    assert own(bank, customer) == [
        (OWNER, ACCOUNT, [("2017-06-01", "2020-01-01"), ("2021-01-01", "")])
    ]
    assert notes(bank, customer) == [
        (OWNER, ACCOUNT, START_CORRECTED, WRONG_DATE, "2017-06-01", "2018-01-01"),
        (OWNER, ACCOUNT, END_CORRECTED, WRONG_DATE, "2017-06-01", "2019-01-01"),
        (OWNER, ACCOUNT, pb.CORRECTION_ACTION_REOPENED, pb.CORRECTION_REASON_ENDED_IN_ERROR,
         "2021-01-01", "2022-01-01"),
    ]  # fmt: skip
    answer = lookup(agency, customer, "2019-06-01", "2019-06-30")
    assert [i.org_number for i in answer.institutions] == [INSTITUTION_ORG]  # now covered
    assert lookup(agency, customer).institutions[0].active

    # Fields first, then the rules of periods: all or nothing, every fault named.
    error = rpc_error(
        correct,
        bank,
        change("2021-01-01", new_start_date=(TODAY + timedelta(days=1)).isoformat()),
        change("2021-01-01"),  # no change named
        change("2021-01-01", new_end_date=""),
    )
    assert error.code() == StatusCode.INVALID_ARGUMENT
    for expected in (
        "DATE_IN_FUTURE",
        "CHANGE_MISSING",
        "corrections[2].new_end_date:NEW_DATE_MISSING",
    ):
        assert expected in described(error), expected
    error = rpc_error(
        correct,
        bank,
        change("2017-06-01", new_start_date="2020-02-01"),  # after its end
        change("2017-06-01", new_end_date="2021-02-01"),  # past the next period's start
        change("2017-06-01", reopen=True),  # not the last period
        change("2021-01-01", new_end_date="2022-01-01"),  # still active
    )
    assert error.code() == StatusCode.INVALID_ARGUMENT
    for expected in (
        "corrections[0].new_start_date:START_AFTER_END",
        "corrections[1].new_end_date:END_AFTER_NEXT_START",
        "corrections[2].start_date:NOT_LAST_PERIOD", "corrections[3].new_end_date:PERIOD_ACTIVE",
    ):  # fmt: skip
        assert expected in described(error), expected
    assert own(bank, customer) == [
        (OWNER, ACCOUNT, [("2017-06-01", "2020-01-01"), ("2021-01-01", "")])
    ]


# --- reconciliation ---------------------------------------------------------------------------


def reconcile(client, items, *, apply=False, as_of="", chunk=2, org=INSTITUTION_ORG):
    """``items``: (customer, role, kind); chunks of ``chunk`` items."""
    messages = [
        pb.ReconcileRequest(
            institution_org_number=org if index == 0 else "",
            apply=apply if index == 0 else False,
            as_of_date=as_of if index == 0 else "",
            relationships=[
                pb.Relationship(customer_id=c, role=r, kind=k)
                for c, r, k in items[index : index + chunk]
            ],
        )
        for index in range(0, max(len(items), 1), chunk)
    ]
    return client.institutions.Reconcile(iter(messages))


def test_reconciliation_dry_run_then_apply(server, ids):
    bank = server.client(server.pki.institution)
    matching = [ids.person() for _ in range(3)]
    extra, ended, started_later = ids.person(), ids.person(), ids.person()
    lacking = [ids.person() for _ in range(2)]
    report(bank, *[(c, OWNER, ACCOUNT, "2020-01-01") for c in matching])
    report(bank, (extra, OWNER, LOAN, "2020-01-01"), (ended, OWNER, ACCOUNT, "2020-01-01"))
    report(bank, (started_later, OWNER, ACCOUNT, ""))  # today: after the set's day
    end(bank, (ended, OWNER, ACCOUNT, "2021-01-01"))
    sent = [
        (matching[0], OWNER, ACCOUNT), (lacking[0], OWNER, ACCOUNT), (matching[1], OWNER, ACCOUNT),
        ("not an id", OWNER, ACCOUNT), (matching[2], OWNER, ACCOUNT), (ended, OWNER, ACCOUNT),
        (lacking[1], DISPONENT, LOAN),
    ]  # fmt: skip
    as_of = (TODAY - timedelta(days=1)).isoformat()

    dry = reconcile(bank, sent, as_of=as_of)
    assert (dry.matched_count, dry.missing_count, dry.not_sent_count) == (3, 3, 1)
    assert list(dry.missing_positions) == [1, 5, 6] and not dry.applied
    assert [(r.position, r.field) for r in dry.rejected] == [(3, "customer_id")]
    assert dry.chunk_count == 4
    assert own(bank, lacking[0]) == [] and own(bank, extra)[0][2] == [("2020-01-01", "")]

    # With a rejected item nothing is ended: its relationship cannot be matched.
    withheld = reconcile(bank, sent, apply=True, as_of=as_of)
    assert (withheld.registered_count, withheld.ended_count) == (3, 0)
    assert withheld.ending_withheld and own(bank, extra)[0][2] == [("2020-01-01", "")]
    sent.remove(("not an id", OWNER, ACCOUNT))
    applied = reconcile(bank, sent, apply=True, as_of=as_of)
    assert (applied.registered_count, applied.ended_count, applied.applied) == (0, 1, True)
    assert not applied.ending_withheld
    assert own(bank, lacking[0]) == [(OWNER, ACCOUNT, [(as_of, "")])]
    assert own(bank, lacking[1]) == [(DISPONENT, LOAN, [(as_of, "")])]
    assert own(bank, ended) == [(OWNER, ACCOUNT, [("2020-01-01", "2021-01-01"), (as_of, "")])]
    assert own(bank, extra) == [(OWNER, LOAN, [("2020-01-01", as_of)])]
    assert own(bank, started_later)[0][2] == [(TODAY.isoformat(), "")]  # begun after the set

    again = reconcile(bank, sent, as_of=as_of)
    assert (again.matched_count, again.missing_count, again.not_sent_count) == (6, 0, 0)


def test_an_applied_reconciliation_is_a_first_report(server, ids):
    agency = server.client(server.pki.agency)
    bank = server.client(server.pki.other_institution)
    applied = reconcile(
        bank, [(ids.person(), OWNER, ACCOUNT)], apply=True, org=OTHER_INSTITUTION_ORG
    )
    assert applied.registered_count == 1
    listed = agency.lookups.ListParticipants(pb.ListParticipantsRequest()).participants
    assert [(p.org_number, p.joined_date) for p in listed] == [
        (INSTITUTION_ORG, ""), (OTHER_INSTITUTION_ORG, TODAY.isoformat()),
    ]  # fmt: skip


def test_a_reconciliation_refuses_a_closed_or_foreign_institution(server, ids):
    client = server.client(server.pki.institution)
    error = rpc_error(
        reconcile, client, [(ids.person(), OWNER, ACCOUNT)], org=OTHER_INSTITUTION_ORG
    )
    assert error.code() == StatusCode.PERMISSION_DENIED
    error = rpc_error(reconcile, client, [(ids.person(), OWNER, ACCOUNT)], as_of="2099-01-01")
    assert error.code() == StatusCode.INVALID_ARGUMENT and "as_of_date" in described(error)


# --- participants -------------------------------------------------------------------------------


def test_participants_and_the_joined_after_flag(server, ids):
    from kfr_grpc.register.operations import Operations

    agency = server.client(server.pki.agency)
    listed = agency.lookups.ListParticipants(pb.ListParticipantsRequest()).participants
    assert [(p.org_number, p.joined_date, p.closed_date) for p in listed] == [
        (INSTITUTION_ORG, "", ""), (OTHER_INSTITUTION_ORG, "", ""),
    ]  # fmt: skip
    customer = ids.person()
    bank = server.client(server.pki.institution)
    report(bank, (customer, OWNER, ACCOUNT, "2015-01-01"))
    server.clock.set(server.clock.now() + timedelta(days=3))
    bank, agency = server.client(server.pki.institution), server.client(server.pki.agency)
    report(bank, (ids.person(), OWNER, ACCOUNT, ""))  # not a first report: the day stays
    operations = Operations(server.server.store, server.clock)
    operations.set_collection_accounts(INSTITUTION_ORG, ["86011117947"])
    operations.close_institution(OTHER_INSTITUTION_ORG, server.clock.today().isoformat())

    listed = agency.lookups.ListParticipants(pb.ListParticipantsRequest()).participants
    closed_on = server.clock.today().isoformat()
    assert [
        (p.org_number, p.joined_date, p.closed_date, p.has_collection_accounts) for p in listed
    ] == [
        (INSTITUTION_ORG, TODAY.isoformat(), "", True),
        (OTHER_INSTITUTION_ORG, "", closed_on, False),
    ]
    # A window that starts before the institution joined is flagged, for any customer.
    before = lookup(agency, customer, (TODAY - timedelta(days=30)).isoformat())
    assert [p.org_number for p in before.joined_after_from_date] == [INSTITUTION_ORG]
    nobody = lookup(agency, ids.person(), (TODAY - timedelta(days=30)).isoformat())
    assert [p.org_number for p in nobody.joined_after_from_date] == [INSTITUTION_ORG]
    assert lookup(agency, customer, TODAY.isoformat()).joined_after_from_date == []
    # Institutions cannot ask.
    assert rpc_error(bank.lookups.ListParticipants, pb.ListParticipantsRequest()).code() == (
        StatusCode.PERMISSION_DENIED
    )


def test_a_reconciliation_cut_off_ends_nothing_and_is_simply_run_again(server, ids):
    bank = server.client(server.pki.institution)
    kept = [ids.person() for _ in range(4)]
    gone = ids.person()
    report(bank, *[(c, OWNER, ACCOUNT, "2020-01-01") for c in [*kept, gone]])
    lacking = [ids.person() for _ in range(4)]
    sent = [(c, OWNER, ACCOUNT) for pair in zip(kept, lacking, strict=True) for c in pair]

    def cut_off_after(chunks: int):
        for index in range(0, len(sent), 2):
            if index // 2 == chunks:
                raise RuntimeError("the client dies")
            yield pb.ReconcileRequest(
                institution_org_number=INSTITUTION_ORG if index == 0 else "",
                apply=index == 0,
                relationships=[
                    pb.Relationship(customer_id=c, role=r, kind=k)
                    for c, r, k in sent[index : index + 2]
                ],
            )

    with pytest.raises(grpc.RpcError) as raised:
        bank.institutions.Reconcile(cut_off_after(3))
    assert raised.value.code() == StatusCode.UNKNOWN  # the client's own iterator failed
    server.run(_settled())
    # What arrived may have been reported; nothing was ended: the set never completed.
    assert own(bank, gone) == [(OWNER, ACCOUNT, [("2020-01-01", "")])]
    assert own(bank, lacking[3]) == []

    again = reconcile(bank, sent, apply=True)
    assert again.missing_count + again.matched_count == len(sent)
    assert (again.ended_count, again.not_sent_count) == (1, 1)
    assert all(own(bank, c)[0][2][-1][1] == "" for c in [*kept, *lacking])
    assert own(bank, gone) == [(OWNER, ACCOUNT, [("2020-01-01", TODAY.isoformat())])]
    final = reconcile(bank, sent)
    assert (final.matched_count, final.missing_count, final.not_sent_count) == (8, 0, 0)


async def _settled() -> None:
    """Lets the server finish with a cancelled stream (its pending group)."""
    import asyncio

    await asyncio.sleep(0.3)


def test_an_applied_reconciliation_ends_no_more_than_max_ends(server, ids):
    bank = server.client(server.pki.institution)
    customers = [ids.person() for _ in range(3)]
    report(bank, *[(c, OWNER, LOAN, "2020-01-01") for c in customers])
    wrong_file = [(customers[0], OWNER, ACCOUNT)]  # the kinds forgotten: nothing matches

    def apply_with(max_ends: int):
        return bank.institutions.Reconcile(iter([pb.ReconcileRequest(
            institution_org_number=INSTITUTION_ORG, apply=True, max_ends=max_ends,
            relationships=[pb.Relationship(customer_id=c, role=r, kind=k)
                           for c, r, k in wrong_file],
        )]))  # fmt: skip

    withheld = apply_with(2)
    assert (withheld.not_sent_count, withheld.ended_count, withheld.ending_withheld) == (3, 0, True)
    assert all((OWNER, LOAN, [("2020-01-01", "")]) in own(bank, c) for c in customers)
    assert withheld.registered_count == 1  # what was missing is reported all the same
    applied = apply_with(0)
    assert (applied.ended_count, applied.ending_withheld) == (3, False)
