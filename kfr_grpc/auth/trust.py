"""The client CA bundle and its certificate revocation lists.

CRLs (PEM or DER) must be signed by a CA in the bundle; the serials they list are
refused for certificates of that issuer. A CRL past its next-update time still counts
(its revocations stay in force) and a warning is logged, so that a late CRL never lets
a revoked certificate back in.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from kfr_grpc.auth.peer import PeerCertificate
from kfr_grpc.errors import ConfigError

log = logging.getLogger("kfr.trust")


@dataclass(frozen=True)
class ClientTrust:
    """The CA bundle (PEM, for the TLS layer) and the revoked (issuer, serial) pairs."""

    ca_pem: bytes
    revoked: frozenset[tuple[bytes, int]]

    def is_revoked(self, peer: PeerCertificate) -> bool:
        return (peer.issuer, peer.serial) in self.revoked


def load_client_trust(ca_path: Path, crl_paths: Sequence[Path]) -> ClientTrust:
    ca_pem = _read(ca_path, "tls.client_ca")
    try:
        authorities = x509.load_pem_x509_certificates(ca_pem)
    except ValueError as error:
        raise ConfigError(
            f"tls.client_ca {ca_path} holds no readable certificate: {error}"
        ) from None
    revoked: set[tuple[bytes, int]] = set()
    for path in crl_paths:
        crl = _load_crl(path)
        issuer = _verified_issuer(crl, authorities, path)
        if crl.next_update_utc is not None and crl.next_update_utc < datetime.now(UTC):
            log.warning(
                "CRL %s is past its next update (%s); still enforcing it", path, crl.next_update_utc
            )
        issuer_name = issuer.subject.public_bytes()
        revoked.update((issuer_name, entry.serial_number) for entry in crl)
    return ClientTrust(ca_pem=ca_pem, revoked=frozenset(revoked))


def _load_crl(path: Path) -> x509.CertificateRevocationList:
    data = _read(path, "tls.crls")
    try:
        if b"-----BEGIN X509 CRL-----" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as error:
        raise ConfigError(f"tls.crls: {path} is not a CRL: {error}") from None


def _verified_issuer(
    crl: x509.CertificateRevocationList, authorities: list[x509.Certificate], path: Path
) -> x509.Certificate:
    for authority in authorities:
        if authority.subject == crl.issuer and crl.is_signature_valid(authority.public_key()):
            return authority
    raise ConfigError(f"tls.crls: {path} is not signed by any CA in tls.client_ca")


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{setting}: cannot read {path}: {error.strerror}") from None
