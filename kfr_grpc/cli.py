"""The ``kfr`` command: server, operator commands, dev tooling and client commands."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import grpc
from google.protobuf import json_format

from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.client import KfrClient, correlation_id_of, new_metadata, secure_channel
from kfr_grpc.clock import SystemClock
from kfr_grpc.config import Config, load_config
from kfr_grpc.errors import KfrError
from kfr_grpc.keyring import Keyring
from kfr_grpc.register.service import Register
from kfr_grpc.server import KfrServer, open_register

_CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    required=True,
    envvar="KFR_CONFIG",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The server's TOML configuration file (env KFR_CONFIG).",
)


_DEV_OPTION = click.option(
    "--dev",
    "dev_dir",
    default=str(Path("~/.kfr-dev")),
    envvar="KFR_DEV",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="A `kfr dev init` directory, used to mint tokens (env KFR_DEV).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """KFR: the customer relationship register."""


def _fail(message: str) -> None:
    raise click.ClickException(message)


@contextmanager
def _kfr_errors() -> Iterator[None]:
    """Turns the register's errors into a one-line message and exit status 1."""
    try:
        yield
    except KfrError as error:
        _fail(str(error))


def _load(config_path: Path) -> Config:
    with _kfr_errors():
        return load_config(config_path)


@contextmanager
def _register(config_path: Path) -> Iterator[Register]:
    config = _load(config_path)
    with _kfr_errors():
        register, store = open_register(config, SystemClock())
        try:
            yield register
        finally:
            store.close()


# --- server ------------------------------------------------------------------------------


@main.command()
@_CONFIG_OPTION
def serve(config_path: Path) -> None:
    """Run the server until SIGTERM or SIGINT."""
    config = _load(config_path)
    logging.basicConfig(
        level=config.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    with _kfr_errors():
        server = KfrServer(config)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    server.start()
    stopping.wait()
    server.stop()


# --- keys ----------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Manage the keyring (the register's secrets)."""


@keys.command("init")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def keys_init(path: Path) -> None:
    """Create a new keyring file at PATH (mode 0600). Keep it outside the data directory."""
    keyring = Keyring.generate()
    with _kfr_errors():
        keyring.save(path)
    click.echo(f"keyring {keyring.id} written to {path}")
    click.echo("Back it up apart from the data: without it the data cannot be read.")


# --- institutions ------------------------------------------------------------------------


@main.group()
def institutions() -> None:
    """Register and list the institutions that may report."""


@institutions.command("add")
@click.argument("org_number")
@click.argument("name")
@_CONFIG_OPTION
def institutions_add(org_number: str, name: str, config_path: Path) -> None:
    """Register institution ORG_NUMBER under NAME (works while the server runs).

    Adding an institution again under the same name changes nothing.
    """
    with _register(config_path) as register, _kfr_errors():
        institution, created = register.add_institution(org_number, name)
    state = "registered" if created else "already registered:"
    click.echo(f"{state} {institution.org_number} {institution.name}")


@institutions.command("list")
@_CONFIG_OPTION
def institutions_list(config_path: Path) -> None:
    """List registered institutions: org number, registration date, name."""
    with _register(config_path) as register, _kfr_errors():
        for institution in register.institutions():
            click.echo(
                f"{institution.org_number}\t{institution.registered_on.isoformat()}\t{institution.name}"
            )


# --- dev -----------------------------------------------------------------------------------


@main.group()
def dev() -> None:
    """Local development tooling."""


@dev.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--listen", default="127.0.0.1:50051", show_default=True, help="host:port to serve on."
)
def dev_init(directory: Path, listen: str) -> None:
    """Create a complete local setup in DIRECTORY (certificates, keyring, config, store)."""
    from kfr_grpc.dev.setup import TEST_AGENCY_ORG, TEST_INSTITUTION_ORG, create_dev_setup

    with _kfr_errors():
        setup = create_dev_setup(directory, listen=listen)
    click.echo(f"dev setup written to {setup.directory}")
    click.echo(f"  config:      {setup.config}")
    click.echo(f"  institution: {TEST_INSTITUTION_ORG} (institution.crt/.key), registered")
    click.echo(f"  agency:      {TEST_AGENCY_ORG} (agency.crt/.key)")
    click.echo(f"start the server with: kfr serve --config {setup.config}")


@dev.command("ids")
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--seed", type=int, default=None, help="Make the same IDs every time.")
@click.option("--d-number", is_flag=True, help="Synthetic D-numbers instead.")
def dev_ids(count: int, seed: int | None, d_number: bool) -> None:
    """Print synthetic (Tenor-style) fødselsnumre, accepted by a server in test mode only."""
    import random

    from kfr_grpc.dev.synthetic import synthetic_person_id

    rng = random.Random(seed)
    for _ in range(count):
        click.echo(synthetic_person_id(rng, d_number=d_number))


@dev.command("token")
@click.option("--org", "org_number", required=True, help="The consumer: whom the call is for.")
@click.option(
    "--scope", required=True, help="Space-separated scopes, e.g. bits:kundeforhold.write."
)
@click.option("--supplier", default=None, help="A vendor's org number acting for --org.")
@click.option("--ttl", default=120, show_default=True, type=click.IntRange(1), help="Seconds.")
@click.option(
    "--cnf-cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Bind the token to this client certificate (cnf x5t#S256).",
)
@_DEV_OPTION
def dev_token(
    org_number: str, scope: str, supplier: str | None, ttl: int, cnf_cert: Path | None,
    dev_dir: Path,
) -> None:  # fmt: skip
    """Print an access token signed by the dev setup's stand-in for Maskinporten."""
    from kfr_grpc.dev.setup import DevSetup

    with _kfr_errors():
        issuer = DevSetup(dev_dir.expanduser()).token_issuer()
    click.echo(
        issuer.mint(
            org_number,
            scope,
            now=SystemClock().now(),
            supplier=supplier,
            ttl=ttl,
            cnf_certificate=cnf_cert.read_bytes() if cnf_cert else None,
        )
    )


@dev.command("revoke")
@click.argument("certificate", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_DEV_OPTION
def dev_revoke(certificate: Path, dev_dir: Path) -> None:
    """Revoke CERTIFICATE in the dev CA's CRL (the server picks it up without restart)."""
    from kfr_grpc.dev.setup import DevSetup

    serial = DevSetup(dev_dir.expanduser()).revoke(certificate)
    click.echo(f"revoked serial {serial:x} in {dev_dir / 'ca.crl'}")


# --- client commands -----------------------------------------------------------------------


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
            help="Server host:port (env KFR_TARGET).",
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
        _DEV_OPTION,
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _call(
    options: dict[str, Any], audience: str, invoke: Callable[[KfrClient, tuple], tuple]
) -> None:
    """Runs one RPC, prints the response as JSON and the correlation id on stderr.

    ``audience`` ("institution" or "agency") picks the scope of a dev-minted token.
    """
    channel = secure_channel(
        options["target"],
        ca=options["ca"],
        cert=options["cert"],
        key=options["key"],
        token=options["token"] or _dev_token(options, audience),
    )
    client = KfrClient(channel)
    metadata = new_metadata(options["correlation_id"])
    try:
        response, call = invoke(client, metadata)
    except grpc.RpcError as error:
        correlation = correlation_id_of(error) or dict(metadata).get("correlation-id", "")
        click.echo(f"correlation-id: {correlation}", err=True)
        _fail(f"{error.code().name}: {error.details()}")
    finally:
        client.close()
    click.echo(f"correlation-id: {correlation_id_of(call)}", err=True)
    click.echo(
        json_format.MessageToJson(
            response,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
            ensure_ascii=False,
        )
    )


def _dev_token(options: dict[str, Any], audience: str) -> str:
    """A token from the dev setup for the client certificate's organisation, bound to it."""
    from kfr_grpc.dev.setup import SIGNING_KEY_NAME, DevSetup

    setup = DevSetup(options["dev_dir"].expanduser())
    if not setup.file(SIGNING_KEY_NAME).is_file():
        _fail("no access token: pass --token, or --dev with a `kfr dev init` directory")
    certificate = options["cert"].read_bytes()
    with _kfr_errors():
        issuer = setup.token_issuer()
        settings = load_config(setup.config).tokens
    scope = settings.institution_scope if audience == "institution" else settings.agency_scope
    return issuer.mint(
        _org_number_of(certificate), scope, now=SystemClock().now(), cnf_certificate=certificate
    )


def _org_number_of(certificate_pem: bytes) -> str:
    from cryptography import x509

    from kfr_grpc.auth.certificates import org_number_from_certificate

    with _kfr_errors():
        return org_number_from_certificate(x509.load_pem_x509_certificate(certificate_pem))


def _customer_ids(ids: tuple[str, ...], ids_file: Any) -> list[str]:
    """IDs from the command line, or one per line from --ids-from (keeps them out of `ps`)."""
    collected = list(ids)
    if ids_file is not None:
        collected += [line.strip() for line in ids_file if line.strip()]
    if not collected:
        _fail("give customer IDs as arguments or with --ids-from FILE ('-' for stdin)")
    return collected


_ROLE_CHOICE = {"owner": pb.ROLE_OWNER, "disponent": pb.ROLE_DISPONENT}
_IDS_FROM = click.option(
    "--ids-from",
    "ids_file",
    type=click.File("r"),
    default=None,
    help="Read customer IDs from FILE, one per line ('-' for stdin).",
)


@main.command()
@_client_options
@click.option("--institution", required=True, help="Your organisation number.")
@click.option("--role", type=click.Choice(list(_ROLE_CHOICE)), default="owner", show_default=True)
@click.option("--start-date", default="", help="YYYY-MM-DD; default today.")
@_IDS_FROM
@click.argument("customer_ids", nargs=-1)
def report(
    institution: str,
    role: str,
    start_date: str,
    ids_file: Any,
    customer_ids: tuple[str, ...],
    **options: Any,
) -> None:
    """Report new relationships (at most 1000 per call; all or nothing)."""
    request = pb.ReportRequest(
        institution_org_number=institution,
        relationships=[
            pb.Relationship(customer_id=customer, role=_ROLE_CHOICE[role], start_date=start_date)
            for customer in _customer_ids(customer_ids, ids_file)
        ],
    )
    _call(options, "institution", lambda c, m: c.institutions.Report.with_call(request, metadata=m))


@main.command()
@_client_options
@click.option("--institution", required=True, help="Your organisation number.")
@click.option("--role", type=click.Choice([*_ROLE_CHOICE, "all"]), default="all", show_default=True)
@click.option("--end-date", default="", help="YYYY-MM-DD; default today.")
@_IDS_FROM
@click.argument("customer_ids", nargs=-1)
def end(
    institution: str,
    role: str,
    end_date: str,
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
@click.option("--mandate", required=True, help="The legal mandate for this lookup.")
@click.option("--case-ref", default=None, help="Your case reference (UUID); default a new one.")
@click.argument("customer_id")
def lookup(
    customer_id: str,
    from_date: str,
    to_date: str,
    owner_only: bool,
    mandate: str,
    case_ref: str | None,
    **options: Any,
) -> None:
    """Find the institutions where a customer has or had a relationship (agencies)."""
    request = pb.LookupRequest(
        customer_id=customer_id,
        from_date=from_date,
        to_date=to_date,
        role_filter=pb.ROLE_FILTER_OWNER_ONLY if owner_only else pb.ROLE_FILTER_ALL,
        legal_mandate=mandate,
        account_info_request_id=case_ref or str(uuid.uuid4()),
    )
    _call(options, "agency", lambda c, m: c.lookups.Lookup.with_call(request, metadata=m))


if __name__ == "__main__":
    main()
