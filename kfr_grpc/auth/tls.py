"""The server side of mutual TLS: the server's certificate and key, and the client trust
(CA bundle and CRLs), handed to gRPC through dynamic credentials and to the REST endpoint
as Python ``ssl`` contexts.

gRPC asks before every new connection's handshake whether the configuration changed; a
changed CA bundle or CRL (re-read when its file changes) and a certificate swapped by
``reload`` (SIGHUP) apply to new connections, without dropping the ones open. The REST
endpoint's context does the same from its handshake callback.
"""

from __future__ import annotations

import logging
import ssl
import threading
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kfr_grpc.auth.trust import ClientTrust, load_client_trust
from kfr_grpc.config import TlsConfig
from kfr_grpc.errors import ConfigError
from kfr_grpc.watched import WatchedFiles

log = logging.getLogger("kfr.tls")


class ServerTls:
    def __init__(self, tls: TlsConfig, *, check_seconds: float) -> None:
        self._config = tls
        self._pair = read_key_pair(tls)
        self._files = (tls.cert, tls.key)
        self.trust = WatchedFiles(
            "client CA bundle and CRLs",
            [tls.client_ca, *tls.crls],
            lambda: load_client_trust(tls.client_ca, tls.crls),
            check_seconds=check_seconds,
        )
        self._lock = threading.Lock()
        self._served: tuple[tuple[bytes, bytes], ClientTrust] | None = None
        self._contexts: tuple[tuple[bytes, bytes], ClientTrust, ssl.SSLContext] | None = None

    @property
    def certificate_pem(self) -> bytes:
        return self._pair[1]

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(),
            self._configuration_if_changed,
            require_client_authentication=True,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """A context for Python's TLS (the REST endpoint) with the same certificate and
        client trust: each handshake switches to a context made from the current ones."""
        front = self._current_context()

        def switch(ssl_object: ssl.SSLObject, _name: str | None, _: ssl.SSLContext) -> None:
            try:
                ssl_object.context = self._current_context()
            except Exception:  # never fail a handshake for it: the context before serves
                log.exception("could not refresh the TLS configuration; keeping the current one")

        front.sni_callback = switch
        return front

    def _current_context(self) -> ssl.SSLContext:
        pair, trust = self._pair, self.trust.get()
        made = self._contexts
        if made is not None and made[0] is pair and made[1] is trust:
            return made[2]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=trust.ca_pem.decode("ascii"))
        context.set_alpn_protocols(["http/1.1"])
        # No resumption: a resumed session skips the chain's check against today's trust.
        context.options |= ssl.OP_NO_TICKET
        context.num_tickets = 0
        # (``ssl`` reads a key pair from files only: the configured ones, checked already)
        context.load_cert_chain(self._files[0], self._files[1])
        self._contexts = (pair, trust, context)
        return context

    def reload(self, tls: TlsConfig) -> None:
        """Re-reads the server certificate and key (kept if the new pair is unusable) and
        looks at the CA bundle and CRLs now."""
        if (tls.client_ca, tls.crls) != (self._config.client_ca, self._config.crls):
            log.warning(
                "tls.client_ca and tls.crls paths are read at start; restart to change them"
            )
        try:
            pair = read_key_pair(tls)
        except ConfigError as error:
            log.error("keeping the current server certificate: %s", error)
        else:
            with self._lock:
                self._pair, self._files = pair, (tls.cert, tls.key)
        self.trust.check()

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        with self._lock:
            self._served = (self._pair, self.trust.get())
            (key, certificate), trust = self._served
        return grpc.ssl_server_certificate_configuration(
            [(key, certificate)], root_certificates=trust.ca_pem
        )

    def _configuration_if_changed(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC calls this before every TLS handshake; None keeps the current one."""
        try:
            current = (self._pair, self.trust.get())
            if self._served is not None and all(
                new is old for new, old in zip(current, self._served, strict=True)
            ):
                return None
            return self._configuration()
        except Exception:  # never let an exception escape into gRPC's handshake
            log.exception("could not refresh the TLS configuration; keeping the current one")
            return None


def read_key_pair(tls: TlsConfig) -> tuple[bytes, bytes]:
    """The server's (key, certificate chain) PEM, checked to belong together."""
    key_pem, cert_pem = _read(tls.key, "tls.key"), _read(tls.cert, "tls.cert")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
        certificate = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as error:
        raise ConfigError(f"tls.cert / tls.key cannot be read: {error}") from None
    if certificate.public_key().public_numbers() != key.public_key().public_numbers():
        raise ConfigError(f"tls.key {tls.key} is not the key of tls.cert {tls.cert}")
    return key_pem, cert_pem


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{setting}: cannot read {path}: {error.strerror}") from None


def check_client_files(ca: Path, cert: Path, key: Path) -> None:
    """Refuses, naming the file, a client's CA bundle, certificate or key that gRPC would
    only fail on later with a handshake error that names none of them."""
    try:
        x509.load_pem_x509_certificates(_read(ca, "--ca"))
    except ValueError:
        raise ConfigError(
            f"--ca {ca} holds no PEM certificate (the CA that issued the server's)"
        ) from None
    try:
        certificate = x509.load_pem_x509_certificate(_read(cert, "--cert"))
    except ValueError:
        raise ConfigError(
            f"--cert {cert} is not a PEM certificate (is it the key? the certificate is the "
            "file with BEGIN CERTIFICATE)"
        ) from None
    try:
        private_key = serialization.load_pem_private_key(_read(key, "--key"), password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"--key {key} is not an unencrypted PEM private key") from None
    if certificate.public_key().public_numbers() != private_key.public_key().public_numbers():
        raise ConfigError(f"--key {key} is not the key of --cert {cert}")
