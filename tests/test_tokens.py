"""Token verification details: the cache, JWKS sources (file and https), reloading files."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import jwt
import pytest

from kfr_grpc.auth import tokens as token_module
from kfr_grpc.auth.jwks import JwksSource, parse_jwks
from kfr_grpc.auth.tokens import TokenSettings, TokenVerifier
from kfr_grpc.clock import FixedClock
from kfr_grpc.dev import pki, tokens
from kfr_grpc.errors import Unauthenticated
from kfr_grpc.watched import WatchedFiles
from tests.support import TODAY, wait_for

ISSUER = "https://issuer.test/"
ORG = "311000004"


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock.on(TODAY)


@pytest.fixture
def key():
    return tokens.new_signing_key()


@pytest.fixture
def jwks_file(tmp_path: Path, key) -> Path:
    path = tmp_path / "jwks.json"
    tokens.write_jwks(path, {"k1": key})
    return path


@pytest.fixture
def decode_calls(monkeypatch) -> list[int]:
    """Counts signature verifications."""
    calls: list[int] = []
    original = jwt.decode

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(token_module.jwt, "decode", counting)
    return calls


def make_verifier(jwks_file: Path, clock: FixedClock, cache_size: int = 100) -> TokenVerifier:
    source = JwksSource(str(jwks_file), check_seconds=0)
    return TokenVerifier(TokenSettings(ISSUER, None, 30, cache_size), source, clock)


def mint(key, clock: FixedClock, kid: str = "k1", **kwargs) -> str:
    issuer = tokens.TokenIssuer(key, kid, ISSUER)
    return issuer.mint(ORG, "bits:kundeforhold.write", now=clock.now(), **kwargs)


def test_a_reused_token_is_verified_once(jwks_file, clock, key, decode_calls):
    verifier = make_verifier(jwks_file, clock)
    token = mint(key, clock)
    first = verifier.verify(token)
    assert verifier.verify(token) == first
    assert verifier.verify(token).consumer == ORG
    assert len(decode_calls) == 1


def test_the_cache_is_bounded(jwks_file, clock, key, decode_calls):
    verifier = make_verifier(jwks_file, clock, cache_size=2)
    first, second, third = (mint(key, clock, jti=str(n)) for n in range(3))
    for token in (first, second, third, first):
        verifier.verify(token)
    assert len(decode_calls) == 4  # the first was evicted by the third


def test_a_cached_token_stops_working_when_it_expires(jwks_file, clock, key):
    verifier = make_verifier(jwks_file, clock)
    token = mint(key, clock, ttl=60)
    verifier.verify(token)
    clock.set(clock.now() + timedelta(seconds=60 + 29))
    verifier.verify(token)  # within the leeway
    clock.set(clock.now() + timedelta(seconds=2))
    with pytest.raises(Unauthenticated, match="expired"):
        verifier.verify(token)


def test_a_jwks_change_drops_cached_tokens(jwks_file, clock, key):
    verifier = make_verifier(jwks_file, clock)
    token = mint(key, clock)
    verifier.verify(token)
    tokens.write_jwks(jwks_file, {"k2": tokens.new_signing_key()})  # k1 withdrawn
    with pytest.raises(Unauthenticated, match="JWKS does not hold"):
        verifier.verify(token)


def test_parse_jwks_keeps_only_rs256_signing_keys(key):
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    rsa_jwk = tokens.jwk_of(key, "good")
    ec_jwk = {
        **ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True),
        "kid": "ec",
    }
    document = {
        "keys": [
            rsa_jwk,
            {**rsa_jwk, "kid": "enc", "use": "enc"},
            {**rsa_jwk, "kid": "ps", "alg": "PS256"},
            {k: v for k, v in rsa_jwk.items() if k != "kid"},
            ec_jwk,
            "garbage",
        ]
    }
    assert list(parse_jwks(document)) == ["good"]
    with pytest.raises(ValueError):
        parse_jwks({"nokeys": []})


# --- JWKS over https --------------------------------------------------------------------------


class _JwksServer:
    def __init__(self, certificate: Path, key: Path) -> None:
        self.document: dict = {"keys": []}
        self.fetches = 0
        self.hang = False  # answer nothing for as long as it stays set
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                while outer.hang:
                    time.sleep(0.05)
                body = json.dumps(outer.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificate, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://localhost:{self.httpd.server_address[1]}/jwk"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def jwks_server(tmp_path: Path) -> Iterator[tuple[_JwksServer, Path]]:
    ca = pki.make_ca("JWKS test CA")
    ca.write(tmp_path / "jwks-ca.crt", tmp_path / "jwks-ca.key")
    pki.issue_server(ca).write(tmp_path / "jwks.crt", tmp_path / "jwks.key")
    server = _JwksServer(tmp_path / "jwks.crt", tmp_path / "jwks.key")
    yield server, tmp_path / "jwks-ca.crt"
    server.httpd.shutdown()


def test_https_jwks_refreshes_once_per_interval_on_unknown_kids(jwks_server, clock, key):
    server, ca_file = jwks_server
    server.document = {"keys": [tokens.jwk_of(key, "k1")]}
    monotonic = FakeMonotonic()
    source = JwksSource(server.url, ca_file=ca_file, min_refresh_seconds=30, monotonic=monotonic)
    verifier = TokenVerifier(TokenSettings(ISSUER, None, 30, 100), source, clock)
    assert server.fetches == 1
    verifier.verify(mint(key, clock))
    assert server.fetches == 1

    rotated = tokens.new_signing_key()
    new_token = mint(rotated, clock, kid="k2")
    monotonic.now += 31
    with pytest.raises(Unauthenticated, match="JWKS does not hold"):
        verifier.verify(new_token)  # the issuer has not published k2 yet
    wait_for(lambda: server.fetches == 2, "the fetch the unknown kid asked for")
    for n in range(20):  # a flood of made-up kids costs no further fetches
        with pytest.raises(Unauthenticated):
            verifier.verify(mint(rotated, clock, kid=f"bogus-{n}"))
    time.sleep(0.2)
    assert server.fetches == 2

    server.document = {"keys": [tokens.jwk_of(key, "k1"), tokens.jwk_of(rotated, "k2")]}
    monotonic.now += 31
    with pytest.raises(Unauthenticated):  # asks for the fetch; the key is there next time
        verifier.verify(new_token)
    wait_for(lambda: server.fetches == 3, "the next fetch")
    wait_for(lambda: source.key("k2") is not None, "the fetched key")
    assert verifier.verify(new_token).consumer == ORG
    source.close()


def test_https_jwks_failing_at_start_is_retried_later(jwks_server, key, caplog):
    server, ca_file = jwks_server
    server.document = {"not": "a jwks"}
    monotonic = FakeMonotonic()
    source = JwksSource(server.url, ca_file=ca_file, monotonic=monotonic)
    assert source.keys == {}
    assert any("fetching JWKS" in r.getMessage() for r in caplog.records)
    server.document = {"keys": [tokens.jwk_of(key, "k1")]}
    monotonic.now += 31
    assert source.key("k1") is None  # asked for; fetched by the source's thread
    wait_for(lambda: source.key("k1") is not None, "the key once fetched")
    source.close()


def test_a_hanging_issuer_delays_no_verification(jwks_server, clock, key):
    """The issuer's JWKS URL stops answering: verifying a token under a known key, or
    refusing one under an unknown key, takes no longer than before."""
    server, ca_file = jwks_server
    server.document = {"keys": [tokens.jwk_of(key, "k1")]}
    monotonic = FakeMonotonic()
    source = JwksSource(server.url, ca_file=ca_file, min_refresh_seconds=0,
                        max_age_seconds=0, monotonic=monotonic)  # fmt: skip
    verifier = TokenVerifier(TokenSettings(ISSUER, None, 30, 100), source, clock)
    server.hang = True
    try:
        monotonic.now += 3600  # the keys are old: a fetch is due on every use
        stranger = mint(tokens.new_signing_key(), clock, kid="k9")
        started = time.monotonic()
        for _ in range(5):
            assert verifier.verify(mint(key, clock)).consumer == ORG
            with pytest.raises(Unauthenticated):
                verifier.verify(stranger)
        assert time.monotonic() - started < 1.0
    finally:
        server.hang = False
        source.close()


def test_a_bad_jwks_ca_file_is_a_config_error(tmp_path: Path):
    from kfr_grpc.errors import ConfigError

    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(ConfigError, match="jwks_ca"):
        JwksSource("https://localhost:1/jwk", ca_file=bogus)


def test_plain_http_jwks_is_refused():
    from kfr_grpc.errors import ConfigError

    with pytest.raises(ConfigError, match="https"):
        JwksSource("http://insecure.example/jwk")


# --- reloading files -------------------------------------------------------------------------


def test_watched_files_reload_on_change_and_keep_the_last_good_value(tmp_path: Path, caplog):
    path = tmp_path / "value.json"
    path.write_text('{"v": 1}')
    watched = WatchedFiles("value", [path], lambda: json.loads(path.read_text()), check_seconds=0)
    assert watched.get() == {"v": 1}
    path.write_text('{"v": 22}')
    assert watched.get() == {"v": 22}
    path.write_text("{half written")
    assert watched.get() == {"v": 22}
    assert any("keeping the previous one" in r.getMessage() for r in caplog.records)
    path.write_text('{"v": 333}')
    assert watched.get() == {"v": 333}


def test_watched_files_look_at_most_once_per_interval(tmp_path: Path):
    path = tmp_path / "value.txt"
    path.write_text("a")
    monotonic = FakeMonotonic()
    watched = WatchedFiles("value", [path], path.read_text, check_seconds=1, monotonic=monotonic)
    path.write_text("bb")
    assert watched.get() == "a"
    monotonic.now += 1
    assert watched.get() == "bb"
