"""The organisation number in a Norwegian enterprise certificate (virksomhetssertifikat).

Classic certificates carry it in the subject's serialNumber (OID 2.5.4.5); newer ones
(eIDAS style) in organizationIdentifier (OID 2.5.4.97) as ``NTRNO-<orgnr>``. The TLS
layer has already verified the certificate chain; this module only reads the subject.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

from kfr_grpc.errors import Unauthenticated
from kfr_grpc.register.customer_ids import parse_org_number
from kfr_grpc.register.values import InvalidValue

_NTR_PREFIX = "NTRNO-"


def org_number_from_certificate(certificate: x509.Certificate) -> str:
    subject = certificate.subject
    candidates = [a.value for a in subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)]
    candidates += [
        a.value.removeprefix(_NTR_PREFIX)
        for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER)
        if isinstance(a.value, str) and a.value.startswith(_NTR_PREFIX)
    ]
    org_numbers = set()
    for candidate in candidates:
        try:
            org_numbers.add(parse_org_number(str(candidate)))
        except InvalidValue:
            continue
    if len(org_numbers) != 1:
        raise Unauthenticated(
            "the client certificate must name exactly one Norwegian organisation number, in "
            "subject serialNumber (2.5.4.5) or organizationIdentifier (2.5.4.97, NTRNO-<orgnr>)"
        )
    return org_numbers.pop()
