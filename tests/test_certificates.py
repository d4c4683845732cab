"""Reading the organisation number from enterprise certificates."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from kfr_grpc.auth.certificates import org_number_from_certificate
from kfr_grpc.auth.peer import parse_peer_certificate
from kfr_grpc.dev import pki
from kfr_grpc.errors import Unauthenticated


@pytest.fixture(scope="module")
def ca() -> pki.Issued:
    return pki.make_ca()


@pytest.mark.parametrize("style", ["serialNumber", "organizationIdentifier"])
def test_both_certificate_styles(ca, style):
    issued = pki.issue_enterprise(ca, "311000004", "Testbanken", style=style)
    assert parse_peer_certificate(issued.cert_pem).org_number == "311000004"


def _with_subject(ca, *attributes: x509.NameAttribute) -> x509.Certificate:
    return pki.issue_client(
        ca, [x509.NameAttribute(NameOID.COMMON_NAME, "x"), *attributes]
    ).certificate


@pytest.mark.parametrize(
    "attributes",
    [
        (),
        (x509.NameAttribute(NameOID.SERIAL_NUMBER, "123456789"),),  # bad check digit
        (x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, "VATNO-311000004"),),
        (  # two different organisations: ambiguous
            x509.NameAttribute(NameOID.SERIAL_NUMBER, "311000004"),
            x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, "NTRNO-313000001"),
        ),
    ],
)
def test_certificates_without_one_clear_org_number_are_refused(ca, attributes):
    with pytest.raises(Unauthenticated):
        org_number_from_certificate(_with_subject(ca, *attributes))


def test_the_same_org_number_in_both_places_is_fine(ca):
    certificate = _with_subject(
        ca,
        x509.NameAttribute(NameOID.SERIAL_NUMBER, "311000004"),
        x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, "NTRNO-311000004"),
    )
    assert org_number_from_certificate(certificate) == "311000004"


def test_garbage_is_unauthenticated():
    with pytest.raises(Unauthenticated):
        parse_peer_certificate(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")


def test_peer_certificate_carries_its_rfc8705_thumbprint_and_serial(ca):
    from kfr_grpc.dev.tokens import certificate_thumbprint

    issued = pki.issue_enterprise(ca, "311000004", "Testbanken")
    peer = parse_peer_certificate(issued.cert_pem)
    assert peer.thumbprint == certificate_thumbprint(issued.cert_pem)
    assert len(peer.thumbprint) == 43 and "=" not in peer.thumbprint
    assert peer.serial == issued.certificate.serial_number
    assert peer.issuer == ca.certificate.subject.public_bytes()
