"""Build a :class:`Broker` from its configuration and serve it with uvicorn over TLS."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ppml._keyfiles import load_ed25519_public_key
from ppml.attestation.verifier import EvidenceVerifier, VerifierSettings
from ppml.broker import jws
from ppml.broker.app import create_app
from ppml.broker.config import BrokerConfig
from ppml.broker.service import ADMIN_AUDIENCE, Broker
from ppml.broker.sessions import SessionTable
from ppml.broker.store import BrokerStore
from ppml.errors import ConfigError
from ppml.kms import KeyRing

log = logging.getLogger(__name__)


def load_public_keys(paths: tuple[Path, ...], what: str) -> list[Ed25519PublicKey]:
    """Ed25519 public keys from PEM files; a missing or foreign key is a ``ConfigError`` naming the file."""
    keys = []
    for path in paths:
        try:
            keys.append(load_ed25519_public_key(path))
        except ConfigError as error:
            raise ConfigError(f"{what} {error}") from None
    return keys


def verifier_settings(config: BrokerConfig) -> VerifierSettings:
    """Trust anchors beyond the pinned vendor roots: collateral source, simulator keys, token issuers."""
    collateral = None
    if config.collateral:
        collateral = _collateral_source(config.collateral)
    issuers = {}
    if config.token_issuers:
        from ppml.attestation import tokens

        issuers = {issuer: _jwks_source(tokens, issuer, options) for issuer, options in config.token_issuers.items()}
    simulators = load_public_keys(config.simulator_public_keys, "simulator")
    if simulators:
        log.warning("this broker trusts %d SIMULATED TEE key(s): evidence signed by them proves nothing about "
                    "the hardware; never use this with real data", len(simulators))
    return VerifierSettings(collateral=collateral, simulator_keys=tuple(simulators), token_issuers=issuers)


def _collateral_source(options: Mapping[str, Any]) -> Any:  # noqa: ANN401 - a CollateralSource
    """Intel collateral for SGX/TDX TCB appraisal: an offline bundle directory, or a PCS/PCCS URL (cached)."""
    from ppml.attestation.collateral_source import OfflineBundle, PcsClient

    if "offline_bundle" in options:
        return OfflineBundle(options["offline_bundle"])
    if "pcs_url" in options:
        return PcsClient(options["pcs_url"], cache_dir=options.get("cache_dir"), verify=options.get("ca_file"))
    raise ConfigError("broker configuration: collateral needs offline_bundle or pcs_url")


def _jwks_source(tokens: Any, issuer: str, options: object) -> Any:  # noqa: ANN401 - module and JwksSource
    """The signing keys of one token issuer: a JWKS file (offline) or a JWKS URL fetched over verified TLS."""
    if not isinstance(options, dict) or len({"jwks_file", "jwks_url"} & set(options)) != 1:
        raise ConfigError(f"token issuer {issuer!r}: give exactly one of jwks_file or jwks_url")
    if "jwks_file" in options:
        try:
            return tokens.StaticJwks(Path(options["jwks_file"]).read_bytes())
        except OSError as error:
            raise ConfigError(f"token issuer {issuer!r}: cannot read {options['jwks_file']}: {error}") from None
    return tokens.JwksUrl(options["jwks_url"], verify=options.get("ca_file") or True)


# Storage KMS schemes whose unwrap never waits on the network (the local keystore reads a local file), so that a
# release, which unwraps after every admin write clears the store's cache, may run on the event loop.
_LOCAL_STORAGE_SCHEMES = frozenset({"local"})


def release_on_loop(config: BrokerConfig) -> bool:
    """Whether releases may run on the event loop: yes when the storage KMS is local (see ``ppml.broker.app``)."""
    return config.storage_key_uri.partition(":")[0] in _LOCAL_STORAGE_SCHEMES


def build_broker(config: BrokerConfig) -> Broker:
    """The broker described by ``config``: store, verifier, token key and admin keys."""
    ring = KeyRing(config.storage_kms)
    kms, key_name = ring.resolve(config.storage_key_uri)
    store = BrokerStore(config.database, kms=kms, kms_key=key_name)
    admin = jws.AdminVerifier(load_public_keys(config.admin_public_keys, "admin"), audience=ADMIN_AUDIENCE)
    return Broker(store, EvidenceVerifier(verifier_settings(config)), jws.load_or_create_ed25519_key(config.token_key),
                  admin=admin, sessions=SessionTable(ttl_seconds=config.session_ttl_seconds))


def serve(config: BrokerConfig, *, host: str | None = None, port: int | None = None,
          insecure_http: bool = False) -> None:
    """Serve until interrupted. TLS is required unless ``insecure_http`` is set, which logs a warning."""
    listen_host, _, listen_port = config.listen.rpartition(":")
    host = host or listen_host or "127.0.0.1"
    port = port if port is not None else int(listen_port or 8443)
    tls = config.tls_certificate is not None and not insecure_http
    if not tls and not insecure_http:
        raise ConfigError("the broker configuration has no tls section: add a certificate and key (ppml broker "
                          "init makes them), or pass --insecure-http for local development")
    if insecure_http:
        log.warning("serving the key broker over PLAIN HTTP on %s:%d: keys travel JWE-wrapped, but sessions and "
                    "admin tokens can be stolen; development only", host, port)
    broker = build_broker(config)
    app = create_app(broker, secure_cookies=tls, release_on_loop=release_on_loop(config))
    uvicorn_config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="off", http="httptools",
        ssl_certfile=str(config.tls_certificate) if tls else None,
        ssl_keyfile=str(config.tls_private_key) if tls else None,
    )
    log.info("key broker listening on %s://%s:%d", "https" if tls else "http", host, port)
    _quiet_garbage_collector()
    uvicorn.Server(uvicorn_config).run()


def _quiet_garbage_collector() -> None:
    """Move start-up objects out of the collector's view and collect young objects less often.

    Each release allocates a few hundred short-lived objects; with the default threshold (700) a full young
    collection runs every couple of requests and lengthens the latency tail of every client waiting behind it.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


class BackgroundBroker:
    """A broker served by uvicorn on a background thread, on a loopback port chosen by the OS.

    For the demo, tests and benchmarks; production runs ``ppml broker serve`` as its own process.
    """

    def __init__(self, config: BrokerConfig, *, host: str = "127.0.0.1") -> None:
        import socket
        import threading

        if config.tls_certificate is None:
            raise ConfigError("a background broker needs TLS: its configuration has no tls section")
        self.broker = build_broker(config)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, 0))
        self.port = self._socket.getsockname()[1]
        self.url = f"https://{host}:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(
            create_app(self.broker, release_on_loop=release_on_loop(config)), log_level="warning",
            access_log=False, lifespan="off", http="httptools",
            timeout_graceful_shutdown=2,
            ssl_certfile=str(config.tls_certificate), ssl_keyfile=str(config.tls_private_key)))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name="ppml-broker", daemon=True)

    def __enter__(self) -> BackgroundBroker:
        import time

        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError("the key broker did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
        self.broker.store.close()
