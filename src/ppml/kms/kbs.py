"""The ``kbs:`` backend: primary keys held by the ppml key broker, released only to attested TEEs.

Key ``kbs:NAME`` is the broker resource ``<repository>/ppml-key/NAME``, whose value is the key's version table
(the same JSON and the same data-key wrapping as a ``local:`` key, see :mod:`ppml.kms._key_table`). Inside a TEE
the backend attests to the broker (once per session) and receives the table as a JWE only it can open; the table
is then cached in memory for ``cache_ttl_seconds``. On the data owner's machine, given ``admin_key``, it reads and
manages the table through the broker's authenticated admin API instead.

Options are plain strings and numbers, so a Spark executor rebuilds the same backend from the key ring's options
and attests by itself: no key ever travels through Spark.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from ppml._keyfiles import load_ed25519_private_key
from ppml._secrets import SecretKey
from ppml.errors import BrokerError, ConfigError, KeyNotFound, KeyProviderError
from ppml.kms import _key_table
from ppml.kms._base import KeyInfo, KeyManagementService

log = logging.getLogger(__name__)

RESOURCE_TYPE = "ppml-key"

# Key tables released to this process, shared by every backend instance (a Spark worker runs many tasks):
# (broker URL, resource path, owner or attester) -> (monotonic expiry, table). The owner's copy never serves a
# workload: a workload in the same process still attests.
_CACHE: dict[tuple[str, str, str], tuple[float, dict[str, Any]]] = {}
_CLIENTS: dict[tuple[Any, ...], Any] = {}
_LOCK = threading.Lock()


class KbsKeyManagement(KeyManagementService):
    """Primary keys in a ppml key broker."""

    scheme = "kbs"

    def __init__(self, url: str, *, ca_file: str | None = None, attester: str = "auto",
                 simulator_key: str | None = None, admin_key: str | None = None, repository: str = "default",
                 policy: str = "default", cache_ttl_seconds: float = 300.0, insecure_http: bool = False,
                 admin_client: Any = None) -> None:  # noqa: ANN401 - an AdminClient, for the owner's tools
        if not isinstance(url, str) or not url:
            raise ConfigError("the kbs: backend needs the broker URL (option 'url')")
        if cache_ttl_seconds < 0:
            raise ConfigError("kbs: cache_ttl_seconds must not be negative")
        self.url = url.rstrip("/")
        self._ca_file = ca_file
        self._attester = attester
        self._simulator_key = simulator_key
        self._admin_key_path = admin_key
        self._repository = repository
        self._policy = policy
        self._ttl = cache_ttl_seconds
        self._insecure_http = insecure_http
        self._admin_client = admin_client

    def __repr__(self) -> str:
        return f"KbsKeyManagement({self.url!r})"

    def resource_path(self, name: str) -> str:
        return f"{self._repository}/{RESOURCE_TYPE}/{name}"

    # -- data keys ----------------------------------------------------------------------------------------------

    def _wrap(self, data_key: SecretKey, name: str) -> bytes:
        return _key_table.wrap(self._table(name), self.key_uri(name), name, data_key)

    def _unwrap(self, wrapped: bytes, name: str) -> SecretKey:
        return _key_table.unwrap(self._table(name), self.key_uri(name), name, wrapped)

    def _table(self, name: str) -> dict[str, Any]:
        path = self.resource_path(name)
        owner = bool(self._admin_key_path) or self._admin_client is not None
        cache_key = (self.url, path, "owner" if owner else f"tee:{self._attester}")
        with _LOCK:
            cached = _CACHE.get(cache_key)
            if cached is not None and time.monotonic() < cached[0]:
                return cached[1]
        table = self._admin_entry(name) if owner else self._parse(name, self._released(name))
        with _LOCK:
            _CACHE[cache_key] = (time.monotonic() + self._ttl, table)
        return table

    # -- key management (data owner, admin API) ------------------------------------------------------------------

    def _create(self, name: str) -> KeyInfo:
        admin = self._admin()
        path = self.resource_path(name)
        if any(r["path"] == path for r in admin.list_resources()):
            raise KeyProviderError(f"key {self.key_uri(name)} already exists in the broker at {self.url}")
        entry = _key_table.new_entry()
        self._store(name, entry)
        return _key_table.info(self.key_uri(name), entry)

    def import_entry(self, name: str, entry: dict[str, Any]) -> KeyInfo:
        """Store a key table taken from another backend (e.g. ``LocalKeystore.export_entry``) as ``kbs:name``."""
        _key_table.check_entry(entry, self.key_uri(name))
        self._store(name, entry)
        return _key_table.info(self.key_uri(name), entry)

    def _rotate(self, name: str) -> KeyInfo:
        entry = self._admin_entry(name)
        _key_table.rotate(entry)
        self._store(name, entry)
        return _key_table.info(self.key_uri(name), entry)

    def _disable(self, name: str, version: int | None) -> KeyInfo:
        entry = self._admin_entry(name)
        _key_table.disable(entry, self.key_uri(name), version)
        self._store(name, entry)
        return _key_table.info(self.key_uri(name), entry)

    def _list(self) -> list[KeyInfo]:
        prefix = f"{self._repository}/{RESOURCE_TYPE}/"
        names = sorted(r["path"][len(prefix):] for r in self._admin().list_resources() if r["path"].startswith(prefix))
        return [_key_table.info(self.key_uri(n), self._admin_entry(n)) for n in names]

    def _admin_entry(self, name: str) -> dict[str, Any]:
        return self._parse(name, self._fetch(name, lambda path: self._admin().get_resource(path)))

    def _released(self, name: str) -> bytes:
        return self._fetch(name, lambda path: self._tee_client().get_resource(path))

    def _fetch(self, name: str, get: Any) -> bytes:  # noqa: ANN401 - a callable path -> bytes
        try:
            return bytes(get(self.resource_path(name)))
        except BrokerError as error:
            if error.status == 404:
                raise KeyNotFound(f"no key {self.key_uri(name)} in the broker at {self.url}") from None
            raise

    def _parse(self, name: str, raw: bytes) -> dict[str, Any]:
        try:
            return _key_table.check_entry(json.loads(raw), self.key_uri(name))
        except ValueError:
            raise KeyProviderError(f"broker resource {self.resource_path(name)} is not a ppml key table") from None

    def _store(self, name: str, entry: dict[str, Any]) -> None:
        path = self.resource_path(name)
        self._admin().put_resource(path, json.dumps(entry, sort_keys=True).encode("utf-8"), policy=self._policy)
        with _LOCK:
            for key in [k for k in _CACHE if k[:2] == (self.url, path)]:
                del _CACHE[key]

    # -- clients ---------------------------------------------------------------------------------------------

    def _admin(self) -> Any:  # noqa: ANN401 - AdminClient, imported lazily
        from ppml.broker.client import AdminClient

        if self._admin_client is not None:
            return self._admin_client
        if not self._admin_key_path:
            raise KeyProviderError(f"managing keys in the broker at {self.url} needs an admin key "
                                   "(option 'admin_key')")
        key = ("admin", self.url, self._admin_key_path, self._ca_file)
        with _LOCK:
            if key not in _CLIENTS:
                _CLIENTS[key] = AdminClient(self.url, admin_key=load_ed25519_private_key(self._admin_key_path),
                                            ca_file=self._ca_file, insecure_http=self._insecure_http)
            return _CLIENTS[key]

    def _tee_client(self) -> Any:  # noqa: ANN401 - KbsClient, imported lazily
        from ppml.attestation.collectors import attester_by_name
        from ppml.broker.client import KbsClient

        key = ("tee", self.url, self._attester, self._simulator_key, self._ca_file)
        with _LOCK:
            if key not in _CLIENTS:
                attester = attester_by_name(self._attester, simulator_key_path=self._simulator_key)
                _CLIENTS[key] = KbsClient(self.url, attester=attester, ca_file=self._ca_file,
                                          insecure_http=self._insecure_http)
            return _CLIENTS[key]


def forget_cached_keys() -> None:
    """Drop every key table this process received (tests, and after a policy change)."""
    with _LOCK:
        _CACHE.clear()
        for client in _CLIENTS.values():
            client.close()
        _CLIENTS.clear()
