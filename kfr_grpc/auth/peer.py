"""What the server needs to know of a client certificate, parsed once per certificate."""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kfr_grpc.auth.certificates import org_number_from_certificate
from kfr_grpc.errors import Unauthenticated


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    org_number: str
    # base64url(SHA-256(DER)) without padding: RFC 8705's x5t#S256 confirmation value.
    thumbprint: str
    issuer: bytes  # DER of the issuer's name
    serial: int


def parse_peer_certificate(pem: bytes) -> PeerCertificate:
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise Unauthenticated("the client certificate cannot be parsed") from None
    digest = hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()
    return PeerCertificate(
        org_number=org_number_from_certificate(certificate),
        thumbprint=base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii"),
        issuer=certificate.issuer.public_bytes(),
        serial=certificate.serial_number,
    )


def cached_parser(maxsize: int = 4096) -> Callable[[bytes], PeerCertificate]:
    """A parser that remembers recent certificates: clients reconnect with the same one."""
    return functools.lru_cache(maxsize=maxsize)(parse_peer_certificate)
