"""The security matrix: tokens, delegation, certificate binding and revocation, each case
against the live server, asserting the exact status code and that nothing was written."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta

import grpc
import pytest
from cryptography.hazmat.primitives import serialization

from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.dev import pki, tokens
from tests.support import (
    AGENCY_ORG,
    INSTITUTION_ORG,
    LOOKUP_SCOPE,
    MANDATE,
    OTHER_INSTITUTION_ORG,
    READ_SCOPE,
    VENDOR_ORG,
    WRITE_SCOPE,
    RunningServer,
    refused_in_the_handshake,
)
from tests.test_server import list_own, lookup, report, rpc_error

StatusCode = grpc.StatusCode
OWNER = pb.ROLE_OWNER


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned_token(header: dict, claims: dict) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


def _claims(server: RunningServer, consumer: str = INSTITUTION_ORG, scope: str = WRITE_SCOPE):
    now = int(server.clock.now().timestamp())
    return {
        "iss": server.issuer.issuer,
        "scope": scope,
        "iat": now,
        "exp": now + 120,
        "consumer": tokens.organisation(consumer),
    }


def refused_report(
    server: RunningServer, ids, *, token: object, identity=None, org=INSTITUTION_ORG
):
    """A Report that must fail: returns the error after checking nothing was written."""
    client = server.client(identity or server.pki.institution, token=token)
    before = server.relationship_count()
    error = rpc_error(report, client, org, (ids.person(), OWNER, ""), timeout=5)
    assert server.relationship_count() == before
    return error


def accepted_report(server: RunningServer, ids, *, token: object, identity=None) -> None:
    client = server.client(identity or server.pki.institution, token=token)
    assert report(client, INSTITUTION_ORG, (ids.person(), OWNER, "")).registered_count == 1


# --- the token itself -----------------------------------------------------------------------


def test_no_token(server, ids):
    error = refused_report(server, ids, token=None)
    assert error.code() is StatusCode.UNAUTHENTICATED
    assert "access token is required" in error.details()


@pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c", "", "Bearer"])
def test_malformed_token(server, ids, token):
    assert refused_report(server, ids, token=token).code() is StatusCode.UNAUTHENTICATED


def test_alg_none(server, ids):
    token = _unsigned_token({"alg": "none", "kid": server.issuer.kid}, _claims(server)) + "."
    error = refused_report(server, ids, token=token)
    assert error.code() is StatusCode.UNAUTHENTICATED
    assert "only RS256" in error.details()


def test_hs256_signed_with_the_public_key(server, ids):
    public_pem = server.issuer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = _unsigned_token({"alg": "HS256", "kid": server.issuer.kid}, _claims(server))
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    error = refused_report(server, ids, token=f"{signing_input}.{_b64(signature)}")
    assert error.code() is StatusCode.UNAUTHENTICATED
    assert "only RS256" in error.details()


def test_rs256_token_with_a_forged_signature(server, ids):
    forger = tokens.TokenIssuer(tokens.new_signing_key(), server.issuer.kid, server.issuer.issuer)
    token = forger.mint(INSTITUTION_ORG, WRITE_SCOPE, now=server.clock.now())
    error = refused_report(server, ids, token=token)
    assert error.code() is StatusCode.UNAUTHENTICATED
    assert "signature" in error.details()


def test_unknown_kid_then_jwks_rotation_accepts_the_same_token(server, ids):
    new_key = tokens.new_signing_key()
    rotated = tokens.TokenIssuer(
        new_key, "rotated-key-2", server.issuer.issuer, server.issuer.audience
    )
    token = rotated.mint(INSTITUTION_ORG, WRITE_SCOPE, now=server.clock.now())
    error = refused_report(server, ids, token=token)
    assert error.code() is StatusCode.UNAUTHENTICATED
    assert "JWKS does not hold" in error.details()
    # The issuer publishes the new key next to the old one; no restart.
    tokens.write_jwks(
        server.jwks_path, {server.issuer.kid: server.issuer.key, "rotated-key-2": new_key}
    )
    accepted_report(server, ids, token=token)
    accepted_report(server, ids, token=server.token(server.pki.institution))  # old key still ok


def test_wrong_issuer(server, ids):
    token = server.token(server.pki.institution, iss="https://someone-else.example/")
    error = refused_report(server, ids, token=token)
    assert error.code() is StatusCode.UNAUTHENTICATED
    assert "another issuer" in error.details()


def test_wrong_audience(server_factory, ids):
    server = server_factory(tokens_toml='audience = "https://kfr.test/api"')
    assert server.issuer.audience == "https://kfr.test/api"
    error = refused_report(server, ids, token=server.token(server.pki.institution, aud="other"))
    assert error.code() is StatusCode.UNAUTHENTICATED
    assert "another audience" in error.details()
    missing = refused_report(server, ids, token=server.token(server.pki.institution, aud=None))
    assert missing.code() is StatusCode.UNAUTHENTICATED
    accepted_report(server, ids, token=server.token(server.pki.institution))


def test_expired(server, ids):
    identity = server.pki.institution
    now = server.clock.now()
    expired = server.issuer.mint(INSTITUTION_ORG, WRITE_SCOPE, now=now - timedelta(minutes=10))
    error = refused_report(server, ids, token=expired)
    assert error.code() is StatusCode.UNAUTHENTICATED
    assert "expired" in error.details()
    # Within the 30 s leeway a token that just expired still passes.
    just_expired = server.issuer.mint(
        INSTITUTION_ORG, WRITE_SCOPE, now=now - timedelta(seconds=140), ttl=120
    )
    accepted_report(server, ids, token=just_expired, identity=identity)


def test_a_token_valid_for_longer_than_the_maximum_lifetime_is_refused(server_factory, ids):
    server = server_factory(tokens_toml="max_lifetime_seconds = 600")
    long_lived = server.token(server.pki.institution, ttl=601)
    error = refused_report(server, ids, token=long_lived)
    assert error.code() is StatusCode.UNAUTHENTICATED
    assert "tokens.max_lifetime_seconds" in error.details()
    # A year-9999 expiry is no way around it; a token just within the maximum passes.
    forever = server.token(server.pki.institution, exp=253402300799)
    assert refused_report(server, ids, token=forever).code() is StatusCode.UNAUTHENTICATED
    # Issued long ago with a fresh nbf is no way around it either.
    now = int(server.clock.now().timestamp())
    dormant = server.token(server.pki.institution, iat=now - 86400, nbf=now, exp=now + 300)
    assert "tokens.max_lifetime_seconds" in refused_report(server, ids, token=dormant).details()
    accepted_report(server, ids, token=server.token(server.pki.institution, ttl=600))


def test_the_maximum_token_lifetime_is_five_minutes_by_default(server, ids):
    error = refused_report(server, ids, token=server.token(server.pki.institution, ttl=301))
    assert "300 s" in error.details()
    accepted_report(server, ids, token=server.token(server.pki.institution, ttl=300))


def test_not_yet_valid(server, ids):
    now = int(server.clock.now().timestamp())
    error = refused_report(server, ids, token=server.token(server.pki.institution, nbf=now + 300))
    assert error.code() is StatusCode.UNAUTHENTICATED
    assert "not valid yet" in error.details()
    future = refused_report(server, ids, token=server.token(server.pki.institution, iat=now + 300))
    assert future.code() is StatusCode.UNAUTHENTICATED
    assert "issued in the future" in future.details()


def test_token_without_consumer(server, ids):
    error = refused_report(server, ids, token=server.token(server.pki.institution, consumer=None))
    assert error.code() is StatusCode.UNAUTHENTICATED


# --- a caller identified before ----------------------------------------------------------
# The server remembers a caller it identified (certificate and token) for as long as what
# the identity rested on holds. Each test reuses one token, so that the second call could
# only be refused if that memory is checked.


def test_a_remembered_caller_is_refused_once_its_token_expires(server, ids):
    token = server.token(server.pki.institution, ttl=120)
    accepted_report(server, ids, token=token)
    start = server.clock.now()
    server.clock.set(start + timedelta(seconds=120 + 31))  # past the expiry and the leeway
    try:
        error = refused_report(server, ids, token=token)
    finally:
        server.clock.set(start)
    assert error.code() is StatusCode.UNAUTHENTICATED and "expired" in error.details()


def test_a_remembered_caller_is_refused_once_its_certificate_is_revoked(server, ids):
    token = server.token(server.pki.institution)
    accepted_report(server, ids, token=token)
    server.crl_path.write_bytes(
        pki.make_crl(server.pki.authority, [_serial(server.pki.institution)])
    )
    error = refused_report(server, ids, token=token)
    assert error.code() is StatusCode.UNAUTHENTICATED and "revoked" in error.details()


def test_a_remembered_caller_is_refused_once_the_issuer_drops_its_key(server, ids):
    token = server.token(server.pki.institution)
    accepted_report(server, ids, token=token)
    tokens.write_jwks(server.jwks_path, {"another-key": tokens.new_signing_key()})
    error = refused_report(server, ids, token=token)
    assert error.code() is StatusCode.UNAUTHENTICATED and "JWKS does not hold" in error.details()


# --- scopes ---------------------------------------------------------------------------------


def test_institution_token_on_lookup(server, ids):
    customer = ids.person()
    accepted_report(server, ids, token=server.token(server.pki.institution))
    before = server.relationship_count()
    institution_token = server.token(server.pki.agency, scope=WRITE_SCOPE)
    error = rpc_error(lookup, server.client(server.pki.agency, token=institution_token), customer)
    assert error.code() is StatusCode.PERMISSION_DENIED
    assert LOOKUP_SCOPE in error.details()
    assert server.relationship_count() == before


def test_agency_token_on_report(server, ids):
    agency_token = server.token(server.pki.institution, scope=READ_SCOPE)
    error = refused_report(server, ids, token=agency_token)
    assert error.code() is StatusCode.PERMISSION_DENIED
    assert WRITE_SCOPE in error.details()


def test_scope_is_matched_as_a_whole_word_among_several(server, ids):
    several = server.token(server.pki.institution, scope=f"openid {WRITE_SCOPE} other")
    accepted_report(server, ids, token=several)
    prefix = server.token(server.pki.institution, scope=f"{WRITE_SCOPE}x")
    assert refused_report(server, ids, token=prefix).code() is StatusCode.PERMISSION_DENIED


# --- who is calling -------------------------------------------------------------------------


def test_consumer_is_not_the_certificate(server, ids):
    token = server.token(server.pki.institution, consumer=OTHER_INSTITUTION_ORG)
    error = refused_report(server, ids, token=token, org=OTHER_INSTITUTION_ORG)
    assert error.code() is StatusCode.UNAUTHENTICATED
    assert "consumer" in error.details()


def test_delegated_token_with_supplier_not_the_certificate(server, ids):
    token = server.token(server.pki.institution, consumer=INSTITUTION_ORG, supplier=VENDOR_ORG)
    error = refused_report(server, ids, token=token, identity=server.pki.other_institution)
    assert error.code() is StatusCode.UNAUTHENTICATED
    assert "supplier" in error.details()


def test_delegated_token_acts_for_the_consumer(server, ids, caplog):
    vendor = server.pki.vendor
    token = server.token(vendor, consumer=INSTITUTION_ORG, supplier=VENDOR_ORG)
    client = server.client(vendor, token=token)
    customer = ids.person()
    assert report(client, INSTITUTION_ORG, (customer, OWNER, "2024-01-01")).registered_count == 1
    institution = server.client(server.pki.institution)
    assert list_own(institution, INSTITUTION_ORG, customer) == [(OWNER, [("2024-01-01", "")])]
    assert any(f"caller={INSTITUTION_ORG} via={VENDOR_ORG}" in r.message for r in caplog.records)


def test_vendor_writing_for_an_institution_other_than_the_consumer(server, ids):
    vendor = server.pki.vendor
    token = server.token(vendor, consumer=INSTITUTION_ORG, supplier=VENDOR_ORG)
    error = refused_report(server, ids, token=token, identity=vendor, org=OTHER_INSTITUTION_ORG)
    assert error.code() is StatusCode.PERMISSION_DENIED
    assert "is not the organisation" in error.details()


def test_a_vendor_may_not_look_up_for_an_agency_unless_the_agency_allows_it(server, ids):
    vendor = server.pki.vendor
    token = server.token(vendor, consumer=AGENCY_ORG, supplier=VENDOR_ORG, scope=READ_SCOPE)
    error = rpc_error(lookup, server.client(vendor, token=token), ids.person())
    assert error.code() is StatusCode.PERMISSION_DENIED
    assert "does not take lookups made for it by a vendor" in error.details()

    from kfr_grpc.auth.authenticator import Caller
    from kfr_grpc.auth.policy import AccessPolicy
    from kfr_grpc.config import AgencyConfig

    allowing = AgencyConfig(org_number=AGENCY_ORG, mandates=[MANDATE], allow_suppliers=True)
    policy = AccessPolicy([allowing])
    caller = Caller(AGENCY_ORG, VENDOR_ORG, supplier=VENDOR_ORG)
    assert policy.agency(caller).allow_suppliers
    # Allowed, the vendor is named in the lookup counters.
    from kfr_grpc.api.observability import FinishedCall
    from kfr_grpc.api.recording import LOOKUP_SERVICE, RegisterRecorder

    counted = []

    class Statistics:
        def count(self, agency: str, mandate: str, status: str) -> None:
            counted.append((agency, mandate, status))

    call = FinishedCall(f"/{LOOKUP_SERVICE}/Lookup", "00000000-0000-0000-0000-000000000000")
    call.caller = caller
    call.request = pb.LookupRequest(legal_mandate=MANDATE)
    RegisterRecorder(None, Statistics(), policy, None).record(call)
    assert counted == [(AGENCY_ORG, f"{MANDATE} (supplier {VENDOR_ORG})", "OK")]


def test_vendor_without_delegation_acts_for_itself_only(server, ids):
    # The vendor's own token (consumer = vendor) may not write for the institution.
    error = refused_report(
        server, ids, token=server.token(server.pki.vendor), identity=server.pki.vendor
    )
    assert error.code() is StatusCode.PERMISSION_DENIED


def test_cnf_bound_to_another_certificate(server, ids):
    institution = server.pki.institution
    other_cert = server.pki.institution_org_identifier.cert.read_bytes()  # same org, other cert
    token = server.token(institution, cnf_certificate=other_cert)
    error = refused_report(server, ids, token=token)
    assert error.code() is StatusCode.UNAUTHENTICATED
    assert "cnf" in error.details()
    bound = server.token(institution, cnf_certificate=institution.cert.read_bytes())
    accepted_report(server, ids, token=bound)


# --- certificates ---------------------------------------------------------------------------


def _serial(identity) -> int:
    return pki.x509.load_pem_x509_certificate(identity.cert.read_bytes()).serial_number


def test_revoked_certificate_then_accepted_after_the_crl_is_replaced(server, ids):
    institution = server.pki.institution
    server.crl_path.write_bytes(pki.make_crl(server.pki.authority, [_serial(institution)]))
    error = refused_report(server, ids, token=server.token(institution))
    assert error.code() is StatusCode.UNAUTHENTICATED
    assert "revoked" in error.details()
    server.crl_path.write_bytes(pki.make_crl(server.pki.authority, []))
    accepted_report(server, ids, token=server.token(institution))


def test_a_crl_not_signed_by_the_client_ca_is_refused_and_the_previous_one_stays(
    server, ids, caplog
):
    institution = server.pki.institution
    server.crl_path.write_bytes(pki.make_crl(server.pki.authority, [_serial(institution)]))
    assert refused_report(server, ids, token=server.token(institution)).code() is (
        StatusCode.UNAUTHENTICATED
    )
    # A CRL from a stranger revoking nobody: were it loaded, the institution would pass.
    stranger = pki.make_ca("Stranger")
    server.crl_path.write_bytes(pki.make_crl(stranger, []))
    error = refused_report(server, ids, token=server.token(institution))
    assert error.code() is StatusCode.UNAUTHENTICATED and "revoked" in error.details()
    assert any("not signed by any CA" in r.getMessage() for r in caplog.records)
    other = server.pki.other_institution  # the control: the previous CRL revokes only one
    client = server.client(other)
    assert report(client, OTHER_INSTITUTION_ORG, (ids.person(), OWNER, "")).registered_count == 1


def test_a_crl_past_its_next_update_is_still_enforced(server, ids, caplog):
    institution = server.pki.institution
    stale = pki.make_crl(server.pki.authority, [_serial(institution)], days=-1)
    server.crl_path.write_bytes(stale)
    error = refused_report(server, ids, token=server.token(institution))
    assert error.code() is StatusCode.UNAUTHENTICATED and "revoked" in error.details()
    assert any("past its next update" in r.getMessage() for r in caplog.records)
    server.crl_path.write_bytes(pki.make_crl(server.pki.authority, []))  # the control
    accepted_report(server, ids, token=server.token(institution))


def test_client_ca_bundle_is_re_read_when_it_changes(server, ids):
    foreign = server.pki.foreign_ca_institution
    error = refused_report(server, ids, token=server.token(foreign), identity=foreign)
    refused_in_the_handshake(server, error, ids.person())
    # The operator adds the other CA to the bundle; new connections see it, no restart.
    bundle = server.directory / "client-ca.pem"
    bundle.write_bytes(bundle.read_bytes() + _foreign_ca_pem(server))
    accepted_report(server, ids, token=server.token(foreign), identity=foreign)


def _foreign_ca_pem(server: RunningServer) -> bytes:
    return server.pki.foreign_authority.certificate.public_bytes(serialization.Encoding.PEM)


# --- what the token cache does not skip -----------------------------------------------------


def test_a_cached_token_still_meets_revocation_and_its_binding(server, ids):
    institution = server.pki.institution
    bound = server.token(institution, cnf_certificate=institution.cert.read_bytes())
    accepted_report(server, ids, token=bound)  # verified once: now in the token cache
    accepted_report(server, ids, token=bound)
    # The same token from a connection with another certificate of the same organisation.
    other_certificate = server.pki.institution_org_identifier
    error = refused_report(server, ids, token=bound, identity=other_certificate)
    assert error.code() is StatusCode.UNAUTHENTICATED and "cnf" in error.details()
    # And once the certificate it is bound to is revoked.
    server.crl_path.write_bytes(pki.make_crl(server.pki.authority, [_serial(institution)]))
    error = refused_report(server, ids, token=bound)
    assert error.code() is StatusCode.UNAUTHENTICATED and "revoked" in error.details()


def test_a_cached_token_still_meets_the_consumer_check(server, ids):
    token = server.token(server.pki.institution)
    accepted_report(server, ids, token=token)  # cached
    error = refused_report(server, ids, token=token, identity=server.pki.other_institution)
    assert error.code() is StatusCode.UNAUTHENTICATED and "consumer" in error.details()


def test_a_message_over_4_mb_is_resource_exhausted(server, ids):
    client = server.client(server.pki.institution)
    huge = pb.ReportRequest(
        institution_org_number=INSTITUTION_ORG,
        relationships=[pb.Relationship(customer_id="1" * 4000) for _ in range(1100)],
    )
    assert huge.ByteSize() > 4 * 1024 * 1024
    error = rpc_error(client.institutions.Report, huge, timeout=10)
    assert error.code() is StatusCode.RESOURCE_EXHAUSTED
    assert server.relationship_count() == 0
    assert report(client, INSTITUTION_ORG, (ids.person(), OWNER, "")).registered_count == 1
