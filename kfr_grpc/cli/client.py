"""Client commands: call a KFR server through the generated stubs."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import grpc
from cryptography import x509
from google.protobuf import json_format

from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.auth.certificates import org_number_from_certificate
from kfr_grpc.auth.tls import check_client_files
from kfr_grpc.cli.common import DEV_OPTION, fail, kfr_errors, main
from kfr_grpc.client import KfrClient, correlation_id_of, new_metadata, secure_channel
from kfr_grpc.clock import SystemClock
from kfr_grpc.config import load_config
from kfr_grpc.dev.setup import SIGNING_KEY_NAME, DevSetup
from kfr_grpc.loadfile import (
    FORMATS,
    KIND_CHOICES,
    KINDS,
    Entry,
    Malformed,
    chunks,
    detect_format,
    lines_of_positions,
    read_entries,
)


def _pem_option(name: str, envvar: str, what: str) -> Callable:
    return click.option(
        name,
        required=True,
        envvar=envvar,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help=f"{what} (env {envvar}).",
    )


def _client_options(command: Callable) -> Callable:
    options = [
        click.option(
            "--target",
            default="localhost:50051",
            envvar="KFR_TARGET",
            show_default=True,
            help="Server host:port, or a cluster's nodes host:port,host:port,... (calls "
            "spread over the healthy ones; env KFR_TARGET).",
        ),
        _pem_option("--ca", "KFR_CA", "CA bundle that signed the server's certificate"),
        _pem_option("--cert", "KFR_CERT", "Your client certificate"),
        _pem_option("--key", "KFR_KEY", "Your client certificate's private key"),
        click.option(
            "--correlation-id", default=None, help="UUID for this request; one is made when absent."
        ),
        click.option(
            "--token",
            default=None,
            envvar="KFR_TOKEN",
            help="Access token (JWT) to send (env KFR_TOKEN). Without it, a dev setup "
            "(--dev) mints one for your certificate's organisation.",
        ),
        DEV_OPTION,
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _invoke(
    options: dict[str, Any], audience: str, invoke: Callable[[KfrClient, tuple], tuple]
) -> Any:
    """Runs one RPC and returns its response; prints the correlation id on stderr.

    ``audience`` ("institution" or "agency") picks the scope of a dev-minted token.
    """
    with kfr_errors():
        check_client_files(options["ca"], options["cert"], options["key"])
    try:
        channel = secure_channel(
            options["target"],
            ca=options["ca"],
            cert=options["cert"],
            key=options["key"],
            token=options["token"] or _dev_token(options, audience),
        )
    except (ValueError, OSError) as error:
        fail(f"--target {options['target']}: {error}")
    client = KfrClient(channel)
    metadata = new_metadata(options["correlation_id"])
    try:
        response, call = invoke(client, metadata)
    except grpc.RpcError as error:
        correlation = correlation_id_of(error) or dict(metadata).get("correlation-id", "")
        click.echo(f"correlation-id: {correlation}", err=True)
        fail(f"{error.code().name}: {error.details()}{_hint(error, options)}")
    finally:
        client.close()
    click.echo(f"correlation-id: {correlation_id_of(call)}", err=True)
    return response


def _call(
    options: dict[str, Any], audience: str, invoke: Callable[[KfrClient, tuple], tuple]
) -> None:
    """Runs one RPC and prints the response as JSON."""
    response = _invoke(options, audience, invoke)
    click.echo(
        json_format.MessageToJson(
            response,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
            ensure_ascii=False,
        )
    )


def _hint(error: grpc.RpcError, options: dict[str, Any]) -> str:
    """What to do about a refusal whose words are gRPC's own and name no file."""
    details = error.details() or ""
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return (
            f" (the server's certificate does not chain to --ca {options['ca']}: give the CA "
            "that issued the server's certificate)"
        )
    return ""


def _dev_token(options: dict[str, Any], audience: str) -> str:
    """A token from the dev setup for the client certificate's organisation, bound to it."""
    setup = DevSetup(options["dev_dir"].expanduser())
    if not setup.file(SIGNING_KEY_NAME).is_file():
        fail(
            f"no access token: pass --token, or point --dev (or KFR_DEV) at a `kfr dev init` "
            f"directory ({setup.directory} is none: no {SIGNING_KEY_NAME} there)"
        )
    certificate = options["cert"].read_bytes()
    with kfr_errors():
        issuer = setup.token_issuer()
        settings = load_config(setup.config).tokens
    scope = settings.dev_scope(audience)
    return issuer.mint(
        _org_number_of(certificate), scope, now=SystemClock().now(), cnf_certificate=certificate
    )


def _org_number_of(certificate_pem: bytes) -> str:
    with kfr_errors():
        return org_number_from_certificate(x509.load_pem_x509_certificate(certificate_pem))


def _customer_ids(ids: tuple[str, ...], ids_file: Any) -> list[str]:
    """IDs from the command line, or one per line from --ids-from (keeps them out of `ps`)."""
    collected = list(ids)
    if ids_file is not None:
        collected += [line.strip() for line in ids_file if line.strip()]
    if not collected:
        fail("give customer IDs as arguments or with --ids-from FILE ('-' for stdin)")
    return collected


_ROLE_CHOICE = {"owner": pb.ROLE_OWNER, "disponent": pb.ROLE_DISPONENT}
_IDS_FROM = click.option(
    "--ids-from",
    "ids_file",
    type=click.File("r"),
    default=None,
    help="Read customer IDs from FILE, one per line ('-' for stdin).",
)


def _kind_option(what: str) -> Callable:
    return click.option(
        "--kind", type=click.Choice(KIND_CHOICES), default="unspecified", show_default=True,
        help=f"The product kind {what}: payment_account (a payment or deposit account), loan "
        "(loan or credit), other.",
    )  # fmt: skip


_KIND = _kind_option("reported")


def _entry_file_options(command: Callable) -> Callable:
    """The options of a command that streams a file of entries (report-file, reconcile)."""
    for option in reversed([
        click.option("--institution", required=True, help="Your organisation number."),
        click.option(
            "--format", "file_format", type=click.Choice(FORMATS), default="auto",
            show_default=True,
        ),
        click.option(
            "--role", type=click.Choice(list(_ROLE_CHOICE)), default="owner", show_default=True,
            help="The role of every entry of a batch-format file.",
        ),
        _kind_option("of every batch-format entry that names none"),
    ]):  # fmt: skip
        command = option(command)
    return command


@main.command()
@_client_options
@click.option("--institution", required=True, help="Your organisation number.")
@click.option("--role", type=click.Choice(list(_ROLE_CHOICE)), default="owner", show_default=True)
@click.option("--start-date", default="", help="YYYY-MM-DD; default today.")
@_KIND
@_IDS_FROM
@click.argument("customer_ids", nargs=-1)
def report(
    institution: str,
    role: str,
    start_date: str,
    kind: str,
    ids_file: Any,
    customer_ids: tuple[str, ...],
    **options: Any,
) -> None:
    """Report new relationships (at most 1000 per call; all or nothing)."""
    request = pb.ReportRequest(
        institution_org_number=institution,
        relationships=[
            pb.Relationship(
                customer_id=customer,
                role=_ROLE_CHOICE[role],
                start_date=start_date,
                kind=KINDS[kind],
            )
            for customer in _customer_ids(customer_ids, ids_file)
        ],
    )
    _call(options, "institution", lambda c, m: c.institutions.Report.with_call(request, metadata=m))


@main.command()
@_client_options
@click.option("--institution", required=True, help="Your organisation number.")
@click.option("--role", type=click.Choice([*_ROLE_CHOICE, "all"]), default="all", show_default=True)
@click.option("--end-date", default="", help="YYYY-MM-DD; default today.")
@click.option(
    "--kind", type=click.Choice([*KIND_CHOICES[1:], "all"]), default="all", show_default=True,
    help="The product kind to end.",
)  # fmt: skip
@_IDS_FROM
@click.argument("customer_ids", nargs=-1)
def end(
    institution: str,
    role: str,
    end_date: str,
    kind: str,
    ids_file: Any,
    customer_ids: tuple[str, ...],
    **options: Any,
) -> None:
    """End relationships (at most 1000 per call; all or nothing)."""
    request = pb.EndRequest(
        institution_org_number=institution,
        endings=[
            pb.Ending(
                customer_id=customer,
                role=_ROLE_CHOICE.get(role, pb.ROLE_UNSPECIFIED),
                end_date=end_date,
                kind=KINDS.get(kind, pb.PRODUCT_KIND_UNSPECIFIED),
            )
            for customer in _customer_ids(customer_ids, ids_file)
        ],
    )
    _call(options, "institution", lambda c, m: c.institutions.End.with_call(request, metadata=m))


@main.command("list-own")
@_client_options
@click.option("--institution", required=True, help="Your organisation number.")
@click.argument("customer_id")
def list_own(institution: str, customer_id: str, **options: Any) -> None:
    """Show your own relationships with one customer, every period."""
    request = pb.ListOwnRequest(institution_org_number=institution, customer_id=customer_id)
    _call(
        options, "institution", lambda c, m: c.institutions.ListOwn.with_call(request, metadata=m)
    )


@main.command()
@_client_options
@click.option("--from", "from_date", default="", help="First day, YYYY-MM-DD; default today.")
@click.option("--to", "to_date", default="", help="Last day, YYYY-MM-DD; default today.")
@click.option("--owner-only", is_flag=True, help="Only relationships where the customer is owner.")
@click.option(
    "--only-primary-owner", is_flag=True,
    help="Only institutions where the customer owns a payment or deposit account.",
)  # fmt: skip
@click.option("--mandate", required=True, help="The legal mandate for this lookup.")
@click.option("--case-ref", default=None, help="Your case reference (UUID); default a new one.")
@_IDS_FROM
@click.argument("customer_ids", nargs=-1)
def lookup(
    customer_ids: tuple[str, ...],
    ids_file: Any,
    from_date: str,
    to_date: str,
    owner_only: bool,
    only_primary_owner: bool,
    mandate: str,
    case_ref: str | None,
    **options: Any,
) -> None:
    """Find the institutions where a customer has or had a relationship (agencies): one
    Lookup per ID given (as arguments, or with --ids-from, which keeps them out of `ps`)."""
    case = case_ref or str(uuid.uuid4())
    for customer_id in _customer_ids(customer_ids, ids_file):
        request = pb.LookupRequest(
            customer_id=customer_id,
            from_date=from_date,
            to_date=to_date,
            role_filter=pb.ROLE_FILTER_OWNER_ONLY if owner_only else pb.ROLE_FILTER_ALL,
            legal_mandate=mandate,
            account_info_request_id=case,
            only_primary_owner=only_primary_owner,
        )
        _call(options, "agency", lambda c, m, r=request: c.lookups.Lookup.with_call(r, metadata=m))


@main.command("lookup-account")
@_client_options
@click.option("--mandate", required=True, help="The legal mandate for this lookup.")
@click.option("--case-ref", default=None, help="Your case reference (UUID); default a new one.")
@click.argument("account_number")
def lookup_account(account_number: str, mandate: str, case_ref: str | None, **options: Any) -> None:
    """Find the institution that uses ACCOUNT_NUMBER as a collection account (agencies)."""
    request = pb.LookupCollectionAccountRequest(
        account_number=account_number,
        legal_mandate=mandate,
        account_info_request_id=case_ref or str(uuid.uuid4()),
    )
    _call(
        options,
        "agency",
        lambda c, m: c.lookups.LookupCollectionAccount.with_call(request, metadata=m),
    )


@main.command("request-log")
@_client_options
@click.option("--institution", required=True, help="Your organisation number.")
@click.argument("logged_id", metavar="CALL_ID")
def request_log(institution: str, logged_id: str, **options: Any) -> None:
    """Show what the register recorded about your earlier call CALL_ID (the correlation-id
    it printed), for troubleshooting. (--correlation-id, as on every command, names this
    request itself.)"""
    request = pb.GetRequestLogRequest(institution_org_number=institution, correlation_id=logged_id)
    _call(
        options,
        "institution",
        lambda c, m: c.institutions.GetRequestLog.with_call(request, metadata=m),
    )


@main.command("report-file")
@_client_options
@_entry_file_options
@click.option("--chunk-size", default=20_000, show_default=True, type=click.IntRange(1, 20_000))
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def report_file(
    institution: str,
    file_format: str,
    role: str,
    kind: str,
    chunk_size: int,
    path: Path,
    **options: Any,
) -> None:
    """Bulk-load a file of relationships through ReportStream (constant memory).

    Formats: the reference register's batch format (comma-separated
    customerId#startDate[#kind] entries, any line breaks) or CSV
    (customer_id,role,start_date[,kind]). Prints a summary with the line of every
    rejected entry (never the entry itself). Exit status 2 when some entries were
    rejected.
    """
    source_file = _EntryFile(path, file_format, _ROLE_CHOICE[role], KINDS[kind])
    response = source_file.stream(
        options, f"loading {path.name}",
        lambda entries: chunks(entries, institution, chunk_size),
        lambda c, stream, m: c.institutions.ReportStream.with_call(stream, metadata=m),
    )  # fmt: skip
    lines = source_file.lines_of({item.position for item in response.rejected})
    _print_load_summary(response, lines, source_file.malformed)
    if response.rejected_count or source_file.malformed.count:
        sys.exit(2)


@main.command()
@_client_options
@_entry_file_options
@click.option(
    "--apply", is_flag=True,
    help="Report what the register lacks and end what the file does not hold (default: "
    "only compare).",
)  # fmt: skip
@click.option(
    "--as-of", "--end-date", "as_of", default="",
    help="YYYY-MM-DD: the day the file is as of: --apply ends relationships not in it on "
    "that day, and reports the missing ones from it at the latest; default today.",
)  # fmt: skip
@click.option(
    "--max-end", default=1000, show_default=True, type=click.IntRange(0),
    help="With --apply: if more relationships than this are not in the file, end none (a "
    "wrong file must not end your customers); 0: no limit.",
)  # fmt: skip
@click.option("--chunk-size", default=20_000, show_default=True, type=click.IntRange(1, 20_000))
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def reconcile(
    institution: str,
    file_format: str,
    role: str,
    kind: str,
    apply: bool,
    as_of: str,
    max_end: int,
    chunk_size: int,
    path: Path,
    **options: Any,
) -> None:
    """Compare a file of ALL your current relationships with the register (Reconcile).

    Same file formats as report-file. Prints how many match, the line of every entry
    the register lacks, and how many relationships the register holds as active that the
    file does not. Run it without --apply first. Exit status 2 when they differ (and
    nothing was applied).
    """
    source_file = _EntryFile(path, file_format, _ROLE_CHOICE[role], KINDS[kind])
    if apply:
        source_file.require_readable()
    response = source_file.stream(
        options, f"{'reconciling' if apply else 'comparing'} {path.name}",
        lambda entries: chunks(
            entries, institution, chunk_size, pb.ReconcileRequest, apply=apply, as_of_date=as_of,
            max_ends=max_end,
        ),
        lambda c, stream, m: c.institutions.Reconcile.with_call(stream, metadata=m),
    )  # fmt: skip
    positions = {item.position for item in response.rejected}
    positions.update(response.missing_positions)
    lines = source_file.lines_of(positions)
    _print_reconciliation(response, lines, source_file.malformed)
    differs = response.missing_count or response.not_sent_count or response.rejected_count
    if (differs and not apply) or response.rejected_count or source_file.malformed.count:
        sys.exit(2)


@main.command()
@_client_options
def participants(**options: Any) -> None:
    """List the institutions taking part in the register, when each joined and whether it
    has closed (agencies)."""
    request = pb.ListParticipantsRequest()
    _call(options, "agency", lambda c, m: c.lookups.ListParticipants.with_call(request, metadata=m))


class _EntryFile:
    """A bulk file of entries: streamed once (with a progress bar), then read again for
    the lines of the positions the server named."""

    def __init__(self, path: Path, file_format: str, role: int, kind: int) -> None:
        self.path = path
        self.format = detect_format(path) if file_format == "auto" else file_format
        self.role, self.kind = role, kind
        self.malformed = _Capped()

    def stream(
        self,
        options: dict[str, Any],
        label: str,
        messages: Callable[[Iterator[Entry]], Iterator],
        send: Callable[[KfrClient, Iterator, tuple], tuple],
    ) -> Any:
        with (
            self.path.open(encoding="utf-8-sig") as source,
            click.progressbar(length=self.path.stat().st_size, label=label, file=sys.stderr) as bar,
        ):
            entries = _entries_only(
                read_entries(_counted(source, bar), self.format, self.role, self.kind),
                self.malformed,
            )
            stream = messages(entries)
            return _invoke(options, "institution", lambda c, m: send(c, stream, m))

    def require_readable(self) -> None:
        """Fails, before anything is sent, if any line cannot be read: with --apply a
        relationship left out of the set would be ended."""
        with self.path.open(encoding="utf-8-sig") as source:
            unreadable = [
                item
                for item in read_entries(source, self.format, self.role, self.kind)
                if isinstance(item, Malformed)
            ]
        if unreadable:
            shown = "; ".join(f"line {m.line}: {m.reason}" for m in unreadable[:5])
            fail(
                f"{len(unreadable):,} lines of {self.path.name} cannot be read ({shown}); fix "
                "them first: with --apply, a relationship left out of the set would be ended"
            )

    def lines_of(self, positions: set[int]) -> dict[int, int]:
        with self.path.open(encoding="utf-8-sig") as source:
            return lines_of_positions(source, self.format, self.role, positions, self.kind)


class _Capped:
    """Lines the client could not read: counted, and the first ones kept."""

    limit = 10_000

    def __init__(self) -> None:
        self.count = 0
        self.kept: list[Malformed] = []

    def add(self, item: Malformed) -> None:
        self.count += 1
        if len(self.kept) < self.limit:
            self.kept.append(item)


def _entries_only(items: Iterator[Entry | Malformed], malformed: _Capped) -> Iterator[Entry]:
    for item in items:
        if isinstance(item, Malformed):
            malformed.add(item)
        else:
            yield item


def _counted(source: Iterator[str], bar: Any) -> Iterator[str]:
    for line in source:
        bar.update(len(line.encode("utf-8")))
        yield line


def _print_reconciliation(response: Any, lines: dict[int, int], malformed: _Capped) -> None:
    click.echo(
        f"matched {response.matched_count:,}; missing from the register "
        f"{response.missing_count:,}; active in the register but not in the file "
        f"{response.not_sent_count:,}; rejected {response.rejected_count:,}; unreadable lines "
        f"{malformed.count:,} ({response.chunk_count:,} chunks)"
    )
    if response.applied:
        click.echo(
            f"applied: reported {response.registered_count:,}, ended {response.ended_count:,}"
        )
    if response.ending_withheld and response.rejected_count:
        click.echo(
            "nothing was ended: the rejected entries name no relationship the register can "
            "match, so theirs would have been ended too; fix them and run again"
        )
    elif response.ending_withheld:
        click.echo(
            f"nothing was ended: {response.not_sent_count:,} relationships are not in the file, "
            "more than --max-end; if the file is right, run again with a higher --max-end"
        )
    elif not response.applied and (response.missing_count or response.not_sent_count):
        click.echo("nothing was changed: run again with --apply to report and end these")
    problems = [
        (lines.get(position, 0), position + 1, "missing from the register")
        for position in response.missing_positions
    ]
    problems += [
        (lines.get(r.position, 0), r.position + 1, f"{r.field}: {r.reason} [{r.code}]")
        for r in response.rejected
    ]
    problems += [(m.line, 0, f"unreadable: {m.reason}") for m in malformed.kept]
    _print_problems(problems)
    if response.missing_truncated or response.rejected_truncated:
        click.echo("(only the first 10,000 of each kind are listed)")


def _print_problems(problems: list[tuple[int, int, str]]) -> None:
    for line, entry, problem in sorted(problems):
        where = f"line {line}, entry {entry:,}" if entry else f"line {line}"
        click.echo(f"{where}: {problem}")


def _print_load_summary(response: Any, lines: dict[int, int], malformed: _Capped) -> None:
    click.echo(
        f"accepted {response.accepted_count:,} entries (registered "
        f"{response.registered_count:,}, already registered "
        f"{response.already_registered_count:,}) in {response.chunk_count:,} "
        f"chunk{'' if response.chunk_count == 1 else 's'}; "
        f"rejected {response.rejected_count:,}; unreadable lines {malformed.count:,}"
    )
    # By line and, since a batch-format line may hold many entries, by entry (1-based, in
    # the whole file) too.
    problems = [
        (lines.get(r.position, 0), r.position + 1, f"{r.field}: {r.reason} [{r.code}]")
        for r in response.rejected
    ]
    problems += [(m.line, 0, f"unreadable: {m.reason}") for m in malformed.kept]
    _print_problems(problems)
    if response.rejected_truncated or malformed.count > len(malformed.kept):
        click.echo("(only the first 10,000 of each kind are listed)")
