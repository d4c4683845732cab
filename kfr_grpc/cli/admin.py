"""Operator commands: the server, keys, institutions, retention, backups, statistics."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

import click

from kfr_grpc import logs
from kfr_grpc.allocator import tune_malloc
from kfr_grpc.cli.common import (
    CONFIG_OPTION,
    fail,
    kfr_errors,
    load,
    main,
    opened_store,
    operations,
)
from kfr_grpc.clock import SystemClock
from kfr_grpc.cluster.connect import etcd_client
from kfr_grpc.cluster.etcd import EtcdUnavailable
from kfr_grpc.cluster.log import ReplicatedLog
from kfr_grpc.cluster.status import cluster_status
from kfr_grpc.config import Config, host_port
from kfr_grpc.dev.setup import SIGNING_KEY_NAME, TEST_AGENCY_ORG, DevSetup
from kfr_grpc.doctor import ClientIdentity, Status, examine
from kfr_grpc.kek import kek_from, write_new_kek
from kfr_grpc.keyring import Keyring
from kfr_grpc.lifetime import stop_when_orphaned
from kfr_grpc.readiness import remove_ready, write_ready
from kfr_grpc.register.digest import content_digest
from kfr_grpc.register.storage import MigrationResult
from kfr_grpc.server import build_server
from kfr_grpc.store.layout import STORE_FORMAT
from kfr_grpc.store.lmdb_store import compact as compact_store
from kfr_grpc.store.lmdb_store import restore as restore_store
from kfr_grpc.supervisor import Supervisor

# --- server --------------------------------------------------------------------------------


@main.command()
@CONFIG_OPTION
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(1, 64),
    help="Server processes sharing the store and the port (SO_REUSEPORT).",
)  # fmt: skip
@click.option(
    "--ready-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Write {pid, port, metrics_port, rest_port} here as JSON once serving (removed at "
    "stop).",
)  # fmt: skip
@click.option("--worker-index", type=int, default=None, hidden=True)
@click.option("--supervisor-pid", type=int, default=None, hidden=True)
def serve(
    config_path: Path,
    workers: int,
    ready_file: Path | None,
    worker_index: int | None,
    supervisor_pid: int | None,
) -> None:
    """Run the server until SIGTERM or SIGINT."""
    tuned = tune_malloc(os.environ)  # before any thread starts: see kfr_grpc.allocator
    config = load(config_path)
    logs.configure(config.log_level, config.log_format, worker_index, background=workers == 1)
    if tuned:
        logging.getLogger("kfr.server").info(
            "malloc: %s", ", ".join(f"{name}={value}" for name, value in tuned.items())
        )
    if worker_index and config.metrics.listen:  # each worker its own metrics port
        host, port = host_port(config.metrics.listen)
        shifted = port + worker_index if port else 0
        metrics = config.metrics.model_copy(update={"listen": f"{host}:{shifted}"})
        config = config.model_copy(update={"metrics": metrics})
    if workers > 1:
        port = host_port(config.listen)[1]
        if port == 0:
            fail("--workers needs a fixed port in listen, not port 0")
        supervisor = Supervisor(
            config.path, workers, config.server.grace_seconds, ready_file=ready_file, port=port
        )
        sys.exit(supervisor.run())
    _serve(config, ready_file, worker_index, supervisor_pid)


def _serve(
    config: Config, ready_file: Path | None, worker_index: int | None, supervisor_pid: int | None
) -> None:
    with kfr_errors():
        asyncio.run(_run_server(config, ready_file, worker_index, supervisor_pid))


async def _run_server(
    config: Config, ready_file: Path | None, worker_index: int | None, supervisor_pid: int | None
) -> None:
    """Serves until SIGTERM or SIGINT; SIGHUP reloads."""
    server = await build_server(
        config, shared_port=worker_index is not None, run_retention=not worker_index
    )
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload)
    if supervisor_pid is not None:
        stop_when_orphaned(supervisor_pid)  # a worker whose supervisor was killed stops
    port = await server.start()
    if ready_file is not None:
        write_ready(
            ready_file,
            {
                "pid": os.getpid(), "port": port, "metrics_port": server.metrics_port,
                "rest_port": server.rest_port,
            },
        )  # fmt: skip
    await stopping.wait()
    if ready_file is not None:
        remove_ready(ready_file)
    await server.stop()


# --- keys ----------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Manage the keyring (the register's secrets) and rotate keys."""


KEK_OPTION = click.option(
    "--kek", "kek_spec", metavar="file:PATH|env:NAME",
    help="Seal the keys under this key-encryption key (`kfr keys kek PATH` makes a file).",
)  # fmt: skip


@keys.command("init")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@KEK_OPTION
def keys_init(path: Path, kek_spec: str | None) -> None:
    """Create a new keyring file at PATH (mode 0600). Keep it outside the data directory."""
    with kfr_errors():
        keyring = Keyring.generate()
        if kek_spec:
            keyring = keyring.with_kek(kek_from(kek_spec, path))
        keyring.save(path)
    sealed = f", its keys sealed under {keyring.kek.spec}" if keyring.kek else ""
    click.echo(f"keyring {keyring.id} written to {path}{sealed}")
    click.echo("Back it up apart from the data: without it the data cannot be read.")


@keys.command("kek")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def keys_kek(path: Path) -> None:
    """Write a new key-encryption key to PATH (mode 0600): keep it apart from the keyring."""
    with kfr_errors():
        spec = write_new_kek(path)
    click.echo(f"key-encryption key written; seal the keyring under it with --kek {spec}")


@keys.command("encrypt")
@click.option("--kek", "kek_spec", metavar="file:PATH|env:NAME", required=True,
              help="The key-encryption key to seal the keyring's keys under.")  # fmt: skip
@CONFIG_OPTION
def keys_encrypt(kek_spec: str, config_path: Path) -> None:
    """Seal the configured keyring's keys under a key-encryption key (or under a new one:
    re-wrapping). The server keeps running; it re-reads the file."""
    config = load(config_path)
    with kfr_errors():
        kek = kek_from(kek_spec, config.keyring)
        Keyring.update(config.keyring, lambda keyring: keyring.with_kek(kek))
    click.echo(f"keyring {config.keyring}: keys sealed under {kek.spec}")
    click.echo("Back up the keyring file and the key-encryption key, apart from each other.")


@keys.command("rotate")
@click.option("--pseudonym", is_flag=True, help="Rotate the pseudonym key instead of the seal key.")
@CONFIG_OPTION
def keys_rotate(pseudonym: bool, config_path: Path) -> None:
    """Add a new key version; new writes use it at once (the server too, no restart)."""
    config = load(config_path)
    with opened_store(config) as store, kfr_errors():
        version = store.rotate_key(pseudonym=pseudonym)
    purpose, follow_up = ("pseudonym", "repseudonymise") if pseudonym else ("seal", "reseal")
    click.echo(f"{purpose} key version {version} added to {config.keyring} and in use")
    click.echo(f"back up the keyring now; then run `kfr keys {follow_up}` to move old data")


@keys.command("reseal")
@CONFIG_OPTION
def keys_reseal(config_path: Path) -> None:
    """Re-seal every value with the current seal key, then retire unused key versions."""
    config = load(config_path)
    with opened_store(config) as store, kfr_errors():
        total = store.sealed_value_count()
        with click.progressbar(length=total, label="re-sealing", file=sys.stderr) as bar:
            result = store.reseal(bar.update)
    click.echo(f"looked at {result.examined} values, re-sealed {result.changed}")
    click.echo(f"retired seal key versions: {_versions(result.retired)}")


@keys.command("repseudonymise")
@CONFIG_OPTION
def keys_repseudonymise(config_path: Path) -> None:
    """Rebuild the index under the current pseudonym key (resumable), then retire old keys.

    The server keeps answering correctly while this runs; if it is interrupted, run it
    again and it continues where it stopped.
    """
    result = _over_relationships(config_path, "re-pseudonymising", "repseudonymise")
    click.echo(f"moved {result.changed} relationships to the current pseudonym key")
    if not result.finished:
        fail("new writes under old keys arrived meanwhile; run the command again to finish")
    click.echo(f"retired pseudonym key versions: {_versions(result.retired)}")


@main.command("migrate")
@CONFIG_OPTION
def migrate(config_path: Path) -> None:
    """Bring the store and keyring to this version's formats, online and resumable:
    rewrite a keyring of format 1 as Tink keysets, pad values of store format 3, move
    clear keys of formats 3 and 4 to tags (format 5)."""
    result = _over_relationships(config_path, "migrating", "migrate")
    if not result.finished:
        fail("writes under old keys arrived meanwhile; run the command again to finish")
    click.echo(
        f"moved {result.changed} records to tagged keys; store format {STORE_FORMAT.decode()}"
    )
    click.echo(f"retired pseudonym key versions: {_versions(result.retired)}")


def _over_relationships(config_path: Path, label: str, method: str) -> MigrationResult:
    """Runs the store's ``method`` (a pass over every relationship) with a progress bar."""
    with opened_store(load(config_path)) as store, kfr_errors():
        with store.read() as view:
            total = view.relationship_count()
        with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
            return getattr(store, method)(bar.update)


def _versions(versions: tuple[int, ...]) -> str:
    return ", ".join(str(v) for v in versions) or "none"


# --- institutions ---------------------------------------------------------------------------


@main.group()
def institutions() -> None:
    """Register, list and close the institutions that may report."""


@institutions.command("add")
@click.argument("org_number")
@click.argument("name")
@CONFIG_OPTION
def institutions_add(org_number: str, name: str, config_path: Path) -> None:
    """Register institution ORG_NUMBER under NAME (works while the server runs).

    Adding an institution again under the same name changes nothing.
    """
    with operations(config_path) as ops, kfr_errors():
        institution, created = ops.add_institution(org_number, name)
    state = "registered" if created else "already registered:"
    click.echo(f"{state} {institution.org_number} {institution.name}")


@institutions.command("list")
@CONFIG_OPTION
def institutions_list(config_path: Path) -> None:
    """List institutions: org number, registered, closed (or -), name."""
    with operations(config_path, readonly=True) as ops, kfr_errors():
        click.echo("org_number\tregistered\tclosed\tname")
        for institution in ops.institutions():
            closed = institution.closed_on.isoformat() if institution.closed_on else "-"
            registered = institution.registered_on.isoformat()
            click.echo(f"{institution.org_number}\t{registered}\t{closed}\t{institution.name}")


@institutions.command("close")
@click.argument("org_number")
@click.option("--date", "day", required=True, help="The day it ceased to exist, YYYY-MM-DD.")
@CONFIG_OPTION
def institutions_close(org_number: str, day: str, config_path: Path) -> None:
    """The institution ceased to exist: end all its relationships on DATE (one transaction).

    It can no longer report; lookups show its history until retention removes it.
    """
    with operations(config_path) as ops, kfr_errors():
        ended = ops.close_institution(org_number, day)
    click.echo(f"closed {org_number} on {day}: {ended} active relationships ended")


@institutions.command("collection-accounts")
@click.argument("org_number")
@click.argument("accounts", nargs=-1, metavar="[ACCOUNT]...")
@click.option("--set", "replace", is_flag=True, help="Replace the list with the ACCOUNTs given.")
@click.option("--clear", is_flag=True, help="Remove all of them.")
@CONFIG_OPTION
def institutions_collection_accounts(
    org_number: str, accounts: tuple[str, ...], replace: bool, clear: bool, config_path: Path
) -> None:
    """Show the institution's collection account numbers, or replace them:
    `kfr institutions collection-accounts ORG_NUMBER --set ACCOUNT...`."""
    if replace == clear and (replace or accounts):
        fail("give --set ACCOUNT... or --clear")
    if (replace and not accounts) or (accounts and not replace):
        fail("give --set ACCOUNT... (at least one account), or --clear")
    with operations(config_path, readonly=not (replace or clear)) as ops, kfr_errors():
        if replace or clear:
            institution = ops.set_collection_accounts(org_number, accounts)
        else:
            institution = ops.institution(org_number)
    for account in institution.collection_accounts:
        click.echo(account)


# --- doctor -----------------------------------------------------------------------------------


@main.command()
@CONFIG_OPTION
@click.option(
    "--ca",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CA of the server's certificate, to call the running server.",
)
@click.option(
    "--cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A client certificate, to call the running server.",
)
@click.option(
    "--key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Its private key.",
)
@click.option("--token", envvar="KFR_TOKEN", default=None, help="An access token for it.")
@click.option(
    "--target", envvar="KFR_TARGET", default=None,
    help="host:port of the server to ask; default the config's listen address.",
)  # fmt: skip
@click.option(
    "--verify", "verify_store", is_flag=True,
    help="Also walk the whole store: every record, index entry and count (server may run).",
)  # fmt: skip
def doctor(config_path: Path, ca: Path | None, cert: Path | None, key: Path | None,
           token: str | None, target: str | None, verify_store: bool) -> None:  # fmt: skip
    """Check a deployment: config, keyring, data directory, certificates, token keys, and
    (given a client identity, or in a dev setup) that the server answers health checks.
    Exit status 1 if anything failed."""
    identity = _doctor_identity(config_path, ca, cert, key, token)
    findings = examine(config_path, identity, target=target, verify_store=verify_store)
    for finding in findings:
        click.echo(str(finding))
    if any(finding.status is Status.FAIL for finding in findings):
        sys.exit(1)


def _doctor_identity(
    config_path: Path, ca: Path | None, cert: Path | None, key: Path | None, token: str | None
) -> ClientIdentity | None:
    if cert and key and token:
        return ClientIdentity(ca or cert, cert, key, token)
    setup = DevSetup(config_path.resolve().parent)
    if not setup.file(SIGNING_KEY_NAME).is_file():
        return None  # not a dev setup: the server is checked only with an identity given
    minted = setup.token_issuer().mint(TEST_AGENCY_ORG, "", now=SystemClock().now())
    return ClientIdentity(
        setup.file("ca.crt"), setup.file("agency.crt"), setup.file("agency.key"), minted
    )


# --- retention, backups, statistics ----------------------------------------------------------


@main.command()
@click.option("--dry-run", is_flag=True, help="Only count what would be removed.")
@CONFIG_OPTION
def purge(dry_run: bool, config_path: Path) -> None:
    """Remove periods that ended more than ten years ago, and expired request records."""
    with operations(config_path, readonly=dry_run) as ops, kfr_errors():
        result = ops.purge(dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    click.echo(
        f"{verb} {result.periods_removed} periods that ended before {result.cutoff.isoformat()} "
        f"({result.relationships_removed} relationships left without any) and "
        f"{result.request_records_removed} expired request log records"
    )


@main.command()
@click.argument("destination", type=click.Path(file_okay=False, path_type=Path))
@CONFIG_OPTION
def backup(destination: Path, config_path: Path) -> None:
    """Write a consistent, compacted copy of the store to DESTINATION (server may run).

    The copy is sealed like the live store; the keyring is never included.
    """
    config = load(config_path)
    if destination.resolve().is_relative_to(config.data_dir):
        fail("the backup destination must not lie inside data_dir")
    with opened_store(config, readonly=True) as store, kfr_errors():
        result = store.backup(destination)
    click.echo(
        f"backup in {result.path}: {result.bytes} bytes, {result.relationships} relationships, "
        f"{result.institutions} institutions (keyring {store.keyring.id}, not included)"
    )


@main.command()
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@CONFIG_OPTION
def restore(source: Path, config_path: Path) -> None:
    """Replace the store with the backup in SOURCE (stop the server first)."""
    config = load(config_path)
    with kfr_errors():
        keyring = Keyring.load(config.keyring)
        result, kept_aside = restore_store(source, config.data_dir, keyring)
    if kept_aside is not None:
        click.echo(f"the previous store was moved to {kept_aside}")
    click.echo(
        f"restored {result.relationships} relationships and {result.institutions} institutions "
        f"into {config.data_dir}"
    )


@main.command()
@CONFIG_OPTION
def compact(config_path: Path) -> None:
    """Rewrite the store with only what is live, online (a server may run).

    LMDB keeps freed pages and the unused room in pages: what purges, closures, re-sealing
    and re-pseudonymisation removed stays in the data file until then. Reads and writes
    go on while the copy is written; writes wait only while it catches up and is swapped
    in. The server also compacts by itself every maintenance.compact_seconds. In a
    cluster, each node compacts its own copy.
    """
    config = load(config_path)
    with kfr_errors():
        keyring = Keyring.load(config.keyring)
        result, before = compact_store(config.data_dir, keyring)
    click.echo(
        f"compacted {config.data_dir}: {before} -> {result.bytes} bytes, "
        f"{result.relationships} relationships, {result.institutions} institutions"
    )


@main.command("lookup-counts")
@CONFIG_OPTION
def lookup_counts(config_path: Path) -> None:
    """Agency lookups per day, agency, mandate and outcome (all that lookups leave behind)."""
    config = load(config_path)
    with opened_store(config, readonly=True) as store, kfr_errors(), store.read() as view:
        click.echo("day\tagency\tmandate\toutcomes")
        for count in view.lookup_counts():
            outcome = " ".join(f"{status}={n}" for status, n in sorted(count.by_status.items()))
            click.echo(f"{count.day.isoformat()}\t{count.agency}\t{count.mandate}\t{outcome}")


# --- cluster -------------------------------------------------------------------------------


@main.group()
def cluster() -> None:
    """Cluster mode: status, and forgetting a node for good."""


def _cluster_log(config_path: Path) -> ReplicatedLog:
    config = load(config_path)
    if config.cluster is None:
        fail(f"{config_path} has no [cluster] section: this is a single node")
    return ReplicatedLog(etcd_client(config.cluster), config.cluster.prefix)


@cluster.command("status")
@CONFIG_OPTION
def cluster_status_command(config_path: Path) -> None:
    """JSON: every node's applied log position, lag and last heartbeat, the scheduler's
    holder, and etcd's members. Exit status 1 without an etcd quorum."""
    replicated_log = _cluster_log(config_path)
    try:
        status = cluster_status(replicated_log)
    finally:
        replicated_log.etcd.close()
    click.echo(json.dumps(status, indent=2))
    if not status["quorum"]:
        sys.exit(1)


@cluster.command("forget")
@click.argument("node")
@CONFIG_OPTION
def cluster_forget(node: str, config_path: Path) -> None:
    """Remove NODE from the registered nodes (it was taken out for good), so that log
    compaction no longer waits for it. A node that comes back registers again."""
    replicated_log = _cluster_log(config_path)
    try:
        removed = replicated_log.forget(node)
    except EtcdUnavailable as error:
        fail(f"etcd: {error}")
    finally:
        replicated_log.etcd.close()
    click.echo(f"forgot {node}" if removed else f"no node {node} was registered")


@cluster.command("seed")
@CONFIG_OPTION
def cluster_seed(config_path: Path) -> None:
    """Start an empty log (a new etcd, or a new prefix) at this node's store's position:
    for a cluster rebuilt from a backup. Refused if the log has entries."""
    config = load(config_path)
    with opened_store(config, readonly=True) as store:
        position = store.log_position()
    replicated_log = _cluster_log(config_path)
    try:
        seeded = replicated_log.seed(position)
    except EtcdUnavailable as error:
        fail(f"etcd: {error}")
    finally:
        replicated_log.etcd.close()
    if not seeded:
        fail("the log is not empty: only an empty log can be seeded")
    click.echo(f"the log starts after position {position}: start the nodes")


@main.command()
@CONFIG_OPTION
def digest(config_path: Path) -> None:
    """A digest of the register's content (institutions, relationships with their periods,
    collection accounts) and the log position it is at: equal on nodes at the same
    position. Reads this node's store as it is (the server may run)."""
    config = load(config_path)
    with opened_store(config, readonly=True) as store, kfr_errors(), store.read() as view:
        content = content_digest(view)
        position = store.log_position()
    click.echo(
        json.dumps(
            {
                "log_position": position,
                "digest": content.digest,
                "institutions": content.institutions,
                "relationships": content.relationships,
                "collection_accounts": content.collection_accounts,
            }
        )
    )
