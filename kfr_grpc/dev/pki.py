"""A throwaway certificate authority and Norwegian-style enterprise certificates.

For local setups and tests only: keys are ECDSA P-256 and unencrypted on disk.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = timedelta(days=825)


@dataclass(frozen=True)
class Issued:
    """A certificate with its private key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> Issued:
        """Reads a certificate and its unencrypted key, as ``write`` leaves them."""
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} is not an EC private key")
        return cls(certificate, key)

    def write(self, cert_path: Path, key_path: Path) -> None:
        cert_path.write_bytes(self.cert_pem)
        descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(self.key_pem)


def make_ca(common_name: str = "KFR dev CA") -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(certificate, key)


def issue_server(ca: Issued, host: str = "localhost") -> Issued:
    """A TLS server certificate for ``host``, also valid for 127.0.0.1 and ::1."""
    names: list[x509.GeneralName] = [x509.DNSName(host)]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", "::1")]
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, host)]
    return _issue(ca, subject, ExtendedKeyUsageOID.SERVER_AUTH, names)


def issue_enterprise(
    ca: Issued,
    org_number: str,
    name: str,
    *,
    style: str = "serialNumber",
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> Issued:
    """A client certificate naming ``org_number`` as a Norwegian enterprise certificate does.

    ``style`` is "serialNumber" (classic, OID 2.5.4.5) or "organizationIdentifier"
    (OID 2.5.4.97, ``NTRNO-<orgnr>``).
    """
    if style == "serialNumber":
        org_attribute = x509.NameAttribute(NameOID.SERIAL_NUMBER, org_number)
    elif style == "organizationIdentifier":
        org_attribute = x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, f"NTRNO-{org_number}")
    else:
        raise ValueError(f"unknown certificate style {style!r}")
    subject = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "NO"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
        x509.NameAttribute(NameOID.COMMON_NAME, name),
        org_attribute,
    ]
    return _issue(
        ca, subject, ExtendedKeyUsageOID.CLIENT_AUTH, [], not_before=not_before, not_after=not_after
    )


def issue_client(ca: Issued, subject: list[x509.NameAttribute]) -> Issued:
    """A client certificate with an arbitrary subject (for tests of odd certificates)."""
    return _issue(ca, subject, ExtendedKeyUsageOID.CLIENT_AUTH, [])


def make_crl(ca: Issued, revoked_serials: list[int] = (), *, days: int = 30) -> bytes:
    """A PEM CRL signed by ``ca`` revoking ``revoked_serials``, valid for ``days`` (a
    negative number: one past its next update, issued a day before that)."""
    now = datetime.now(UTC)
    next_update = now + timedelta(days=days)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(min(now - timedelta(minutes=5), next_update - timedelta(days=1)))
        .next_update(next_update)
    )
    for serial in revoked_serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(now - timedelta(minutes=1))
            .build()
        )
    crl = builder.sign(ca.key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.PEM)


def revoked_serials(crl_pem: bytes) -> list[int]:
    return [entry.serial_number for entry in x509.load_pem_x509_crl(crl_pem)]


def _issue(
    ca: Issued,
    subject: list[x509.NameAttribute],
    usage: x509.ObjectIdentifier,
    alt_names: list[x509.GeneralName],
    *,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(minutes=5))
        .not_valid_after(not_after or now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)
