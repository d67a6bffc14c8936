"""The broker's durable state in one SQLite database: resources (encrypted at rest), policies and the audit log.

Durability. The database runs in WAL mode. Admin writes (resources, policies) commit with ``synchronous=FULL``:
they survive a process crash and a power loss. Audit records of releases and refusals commit with
``synchronous=NORMAL``: they survive a process crash or SIGKILL, but the last few may be lost on power loss
(they are fsynced with the next admin write or checkpoint). Each admin write and its audit record are one
transaction, so after a crash both exist or neither does.

Resources. A value is sealed with AES-256-GCM under a fresh data key from ``kms.generate_data_key(kms_key)``;
the wrapped data key, the key name and the nonce sit in the same row. The AAD binds the resource path, its
version and its policy name, so a row copied to another path or pointed at a weaker policy does not decrypt.
Versions only grow, even across a delete, so a (path, version) pair names one value forever. Rows are unwrapped
with the key name they record: changing ``kms_key`` affects new writes only.

Cache. Decrypted values are kept in memory (at most ``cache_size`` entries), keyed by the whole stored row, so a
release does not call the KMS; any write clears the cache, and a row changed by another process misses it.

Audit chain. ``hash = SHA-256(prev_hash || canonical_json({"seq", "time", "event", "subject", "outcome",
"detail"}))`` where canonical JSON has sorted keys, no spaces and ASCII escapes; the first record's
``prev_hash`` is 32 zero bytes. Triggers refuse UPDATE and DELETE on the table.

Limits. This protects the values' confidentiality and binding at rest. Someone who can write the database file can
still edit a policy document, roll a resource back to an older row of the same path, or rewrite the whole audit
chain; keep the file private (it is created with mode 0600) and export the chain head elsewhere to detect that.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sqlite3
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ppml.attestation.policy import Policy
from ppml.errors import (
    AuditChainBroken,
    BrokerError,
    BrokerStoreCorrupt,
    ConfigError,
    InvalidRequest,
    PolicyInUse,
    PolicyNotFound,
    ResourceNotFound,
)
from ppml.kms._base import KeyManagementService, validate_key_name

__all__ = ["AuditRecord", "BrokerStore", "Resource", "ResourceInfo", "validate_name", "validate_resource_path"]

SCHEMA_VERSION = 1
GENESIS_HASH = bytes(32)
_PART = re.compile(r"[A-Za-z0-9._-]{1,128}")
_NONCE_SIZE = 12
_AAD_LABEL = b"ppml/broker/resource/v1\x00"
# Detail keys that would mean a caller is about to log a secret; values and keys never enter the audit log.
_FORBIDDEN_DETAIL_KEYS = frozenset({"value", "plaintext", "secret", "private_key", "data_key", "wrapped_key",
                                    "key_material"})

_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE policies (
    name TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE resources (
    path TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    policy TEXT NOT NULL REFERENCES policies(name) ON DELETE RESTRICT,
    kms_key TEXT NOT NULL,
    wrapped_key BLOB NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE resource_versions (path TEXT PRIMARY KEY, last_version INTEGER NOT NULL);
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    event TEXT NOT NULL,
    subject TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resource:
    """A stored resource with its plaintext value; ``repr`` hides the value."""

    path: str
    version: int
    policy: str
    value: bytes = field(repr=False)


@dataclass(frozen=True)
class ResourceInfo:
    """What may be listed about a resource: never its value."""

    path: str
    version: int
    policy: str
    updated: str


@dataclass(frozen=True)
class AuditRecord:
    """One link of the audit chain."""

    seq: int
    time: str
    event: str
    subject: str
    outcome: str
    detail: dict[str, Any]
    prev_hash: bytes
    hash: bytes

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view, hashes in hex."""
        return {"seq": self.seq, "time": self.time, "event": self.event, "subject": self.subject,
                "outcome": self.outcome, "detail": self.detail, "prev_hash": self.prev_hash.hex(),
                "hash": self.hash.hex()}


def validate_resource_path(path: str) -> str:
    """Return ``path`` if it is ``repository/type/tag`` with safe parts, else raise ``InvalidRequest``."""
    parts = path.split("/") if isinstance(path, str) else []
    if len(parts) != 3 or not all(_safe_part(part) for part in parts):
        raise InvalidRequest(f"invalid resource path {path!r}: expected repository/type/tag, each part 1-128 of "
                             "letters, digits, '.', '_' or '-' (no '..')")
    return path


def validate_name(name: str, what: str = "policy name") -> str:
    """Return ``name`` if it is one safe path part, else raise ``InvalidRequest``."""
    if not isinstance(name, str) or not _safe_part(name):
        raise InvalidRequest(f"invalid {what} {name!r}: use 1-128 letters, digits, '.', '_' or '-' (no '..')")
    return name


def _safe_part(part: str) -> bool:
    return bool(_PART.fullmatch(part)) and part != "." and ".." not in part


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class BrokerStore:
    """Resources, policies and the audit log of one broker; one instance may be shared by many threads."""

    def __init__(self, path: str | os.PathLike[str], *, kms: KeyManagementService, kms_key: str,
                 clock: Callable[[], datetime] = _utcnow, cache_size: int = 1024) -> None:
        self.path = Path(path)
        self._kms = kms
        self._kms_key = validate_key_name(kms_key)
        self._clock = clock
        self._cache: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._cache_size = cache_size
        self._policies: dict[str, Policy] = {}  # stored document -> parsed policy (keyed by content, never stale)
        self._lock = threading.RLock()
        self._db = self._connect()
        self._db.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints (and their fsyncs) run off the request path
        self._ensure_schema()
        self._closed = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="ppml-broker-checkpoint",
                                              daemon=True)
        self._checkpointer.start()

    def __enter__(self) -> BrokerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database; the instance cannot be used afterwards."""
        self._closed.set()
        self._checkpointer.join(timeout=5)
        with self._lock:
            self._cache.clear()
            with contextlib.suppress(sqlite3.Error):  # the data is safe in the WAL; the next open checkpoints it
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()

    def _checkpoint_loop(self, interval: float = 1.0) -> None:
        """Copy the WAL into the database once a second from a connection of its own.

        A checkpoint fsyncs; run by the connection that commits releases, it would stall every client for
        milliseconds a few times a second. PASSIVE never waits for, nor blocks, the writer.
        """
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            log.exception("broker store: cannot open the checkpoint connection; the WAL will grow until restart")
            return
        try:
            while not self._closed.wait(interval):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as error:
                    log.warning("broker store: checkpoint failed (%s); will retry", error)
        finally:
            db.close()

    # -- resources ---------------------------------------------------------------------------------------------

    def put_resource(self, path: str, value: bytes, *, policy: str, actor: str = "admin") -> int:
        """Store ``value`` as the next version of ``path`` under ``policy``; return the new version number."""
        validate_resource_path(path)
        validate_name(policy)
        if not isinstance(value, (bytes, bytearray)):
            raise InvalidRequest(f"resource {path}: the value must be bytes")
        data_key, wrapped = self._kms.generate_data_key(self._kms_key)  # outside the write lock: may be remote
        with self._write() as db:
            if db.execute("SELECT 1 FROM policies WHERE name = ?", (policy,)).fetchone() is None:
                raise PolicyNotFound(f"cannot store resource {path}: policy {policy!r} does not exist; create it "
                                     "first")
            row = db.execute("SELECT last_version FROM resource_versions WHERE path = ?", (path,)).fetchone()
            version = (row[0] if row else 0) + 1
            nonce = os.urandom(_NONCE_SIZE)
            sealed = AESGCM(data_key.insecure_bytes()).encrypt(nonce, bytes(value), _aad(path, version, policy))
            db.execute("INSERT INTO resource_versions (path, last_version) VALUES (?, ?) "
                       "ON CONFLICT(path) DO UPDATE SET last_version = excluded.last_version", (path, version))
            db.execute("INSERT OR REPLACE INTO resources (path, version, policy, kms_key, wrapped_key, nonce, "
                       "ciphertext, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (path, version, policy, self._kms_key, wrapped, nonce, sealed, self._now()))
            self._append(db, "resource.put", subject=actor, outcome="ok",
                         detail={"path": path, "version": version, "policy": policy,
                                 "kms_key": self._kms.key_uri(self._kms_key)})
        return version

    def get_resource(self, path: str) -> Resource:
        """The current version of ``path``, decrypted; raise ``ResourceNotFound`` or ``BrokerStoreCorrupt``."""
        validate_resource_path(path)
        with self._reading() as db:
            row = db.execute("SELECT version, policy, kms_key, CAST(wrapped_key AS BLOB), CAST(nonce AS BLOB), "
                             "CAST(ciphertext AS BLOB) FROM resources WHERE path = ?", (path,)).fetchone()
            if row is None:
                raise ResourceNotFound(f"no resource {path}")
            cache_key = (path, *row)
            value = self._cache.get(cache_key)
            if value is not None:
                self._cache.move_to_end(cache_key)
                return Resource(path, row[0], row[1], value)
        value = self._open(path, *row)
        with self._lock:
            self._cache[cache_key] = value
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return Resource(path, row[0], row[1], value)

    def delete_resource(self, path: str, *, actor: str = "admin") -> None:
        """Remove ``path`` (all of it); its version counter is kept so a later put continues the numbering."""
        validate_resource_path(path)
        with self._write() as db:
            row = db.execute("SELECT version FROM resources WHERE path = ?", (path,)).fetchone()
            if row is None:
                raise ResourceNotFound(f"no resource {path}")
            db.execute("DELETE FROM resources WHERE path = ?", (path,))
            self._append(db, "resource.delete", subject=actor, outcome="ok",
                         detail={"path": path, "version": row[0]})

    def list_resources(self) -> list[ResourceInfo]:
        """Every resource's path, version, policy and update time, sorted by path; no values."""
        with self._reading() as db:
            rows = db.execute("SELECT path, version, policy, updated FROM resources ORDER BY path").fetchall()
        return [ResourceInfo(*row) for row in rows]

    def _open(self, path: str, version: int, policy: str, kms_key: str, wrapped: bytes, nonce: bytes,
              sealed: bytes) -> bytes:
        data_key = self._kms.unwrap_key(wrapped, kms_key)  # KeyProviderError names the key; let it through
        try:
            return AESGCM(data_key.insecure_bytes()).decrypt(nonce, sealed, _aad(path, version, policy))
        except (InvalidTag, ValueError):
            raise BrokerStoreCorrupt(f"resource {path} version {version} does not authenticate: its stored row "
                                     "was modified, or copied from another resource") from None

    # -- policies ----------------------------------------------------------------------------------------------

    def put_policy(self, name: str, policy: Policy, *, actor: str = "admin") -> None:
        """Create or replace policy ``name``."""
        validate_name(name)
        if not isinstance(policy, Policy):
            raise InvalidRequest(f"policy {name}: expected a Policy, got {type(policy).__name__}")
        document = json.dumps(policy.to_dict(), sort_keys=True, separators=(",", ":"))
        with self._write() as db:
            db.execute("INSERT INTO policies (name, document, updated) VALUES (?, ?, ?) ON CONFLICT(name) DO "
                       "UPDATE SET document = excluded.document, updated = excluded.updated",
                       (name, document, self._now()))
            self._append(db, "policy.put", subject=actor, outcome="ok",
                         detail={"policy": name, "sha256": hashlib.sha256(document.encode()).hexdigest()})

    def get_policy(self, name: str) -> Policy:
        """Policy ``name``; raise ``PolicyNotFound`` if there is none."""
        validate_name(name)
        with self._reading() as db:
            row = db.execute("SELECT document FROM policies WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise PolicyNotFound(f"no policy {name!r}")
        return self._parsed_policy(name, row[0])

    def _parsed_policy(self, name: str, document: str) -> Policy:
        """Parse a stored policy once per distinct document: the row is read on every release, the JSON not."""
        cached = self._policies.get(document)
        if cached is not None:
            return cached
        try:
            policy = Policy.from_json(document)
        except ConfigError as error:
            raise BrokerStoreCorrupt(f"stored policy {name!r} no longer parses: {error}") from None
        if len(self._policies) >= 256:
            self._policies.clear()
        self._policies[document] = policy
        return policy

    def list_policies(self) -> list[str]:
        """Every policy name, sorted."""
        with self._reading() as db:
            return [row[0] for row in db.execute("SELECT name FROM policies ORDER BY name")]

    def delete_policy(self, name: str, *, actor: str = "admin") -> None:
        """Remove policy ``name``; refuse with ``PolicyInUse`` while a resource still uses it."""
        validate_name(name)
        with self._write() as db:
            if db.execute("SELECT 1 FROM policies WHERE name = ?", (name,)).fetchone() is None:
                raise PolicyNotFound(f"no policy {name!r}")
            users = [row[0] for row in db.execute("SELECT path FROM resources WHERE policy = ? ORDER BY path "
                                                  "LIMIT 4", (name,))]
            if users:
                more = ", ..." if len(users) > 3 else ""
                raise PolicyInUse(f"policy {name!r} is used by {', '.join(users[:3])}{more}; move or delete those "
                                  "resources first")
            db.execute("DELETE FROM policies WHERE name = ?", (name,))
            self._append(db, "policy.delete", subject=actor, outcome="ok", detail={"policy": name})

    # -- audit -------------------------------------------------------------------------------------------------

    def append_audit(self, event: str, *, subject: str, outcome: str, detail: Mapping[str, Any]) -> AuditRecord:
        """Append one record (crash-safe, not power-loss-safe until the next admin write); return it."""
        with self._write(durable=False) as db:
            return self._append(db, event, subject=subject, outcome=outcome, detail=detail)

    def read_audit(self, after_seq: int = 0, limit: int = 1000) -> list[AuditRecord]:
        """Up to ``limit`` records with ``seq > after_seq``, oldest first."""
        with self._reading() as db:
            rows = db.execute("SELECT seq, time, event, subject, outcome, detail, prev_hash, hash FROM audit "
                              "WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)).fetchall()
        return [_record(row) for row in rows]

    def verify_audit_chain(self) -> int:
        """Recompute every link; return the number of records, or raise ``AuditChainBroken`` at the first bad one."""
        previous, expected_seq = GENESIS_HASH, 1
        for row in self._audit_rows():
            seq = row[0]
            if seq != expected_seq:
                raise AuditChainBroken(f"audit log broken at seq {expected_seq}: the next record is seq {seq} "
                                       "(records were removed)", seq=expected_seq)
            try:
                record = _record(row)
            except ValueError:
                raise AuditChainBroken(f"audit log broken at seq {seq}: its detail is not JSON", seq=seq) from None
            if record.prev_hash != previous:
                raise AuditChainBroken(f"audit log broken at seq {seq}: prev_hash does not match record "
                                       f"{seq - 1}", seq=seq)
            if _link_hash(previous, seq, record.time, record.event, record.subject, record.outcome,
                          record.detail) != record.hash:
                raise AuditChainBroken(f"audit log broken at seq {seq}: the record was modified", seq=seq)
            previous, expected_seq = record.hash, seq + 1
        return expected_seq - 1

    def _audit_rows(self, batch: int = 1000) -> Iterator[tuple[Any, ...]]:
        after = 0
        while True:
            with self._reading() as db:
                rows = db.execute("SELECT seq, time, event, subject, outcome, detail, prev_hash, hash "
                                  "FROM audit WHERE seq > ? ORDER BY seq LIMIT ?", (after, batch)).fetchall()
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1][0]

    def _append(self, db: sqlite3.Connection, event: str, *, subject: str, outcome: str,
                detail: Mapping[str, Any]) -> AuditRecord:
        for name, value in (("event", event), ("subject", subject), ("outcome", outcome)):
            if not isinstance(value, str):
                raise TypeError(f"audit {name} must be a string")
        detail = _clean_detail(detail)
        last = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
        time = self._now()
        digest = _link_hash(prev_hash, seq, time, event, subject, outcome, detail)
        db.execute("INSERT INTO audit (seq, time, event, subject, outcome, detail, prev_hash, hash) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (seq, time, event, subject, outcome, _canonical(detail),
                                                      prev_hash, digest))
        return AuditRecord(seq, time, event, subject, outcome, detail, prev_hash, digest)

    # -- database ----------------------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            if not self.path.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))  # sqlite would use the umask
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=5000")
        except (OSError, sqlite3.Error) as error:
            raise ConfigError(f"cannot open broker database {self.path}: {error}") from None
        if mode != "wal":
            db.close()
            raise ConfigError(f"broker database {self.path}: cannot use WAL mode (got {mode!r}); put it on a "
                              "local file system")
        return db

    def _ensure_schema(self) -> None:
        with self._write() as db:
            exists = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'")
            if exists.fetchone() is None:
                for statement in _SCHEMA.split(";\n"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            version = db.execute("SELECT version FROM schema_version").fetchone()
        if version is None or version[0] != SCHEMA_VERSION:
            raise ConfigError(f"broker database {self.path} has schema version {version and version[0]}; this "
                              f"ppml reads version {SCHEMA_VERSION}")

    @contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction under the instance lock; FULL sync for admin writes, which clear the cache."""
        with self._reading() as db:
            if durable:
                db.execute("PRAGMA synchronous=FULL")
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            finally:
                if durable:
                    self._cache.clear()
                    db.execute("PRAGMA synchronous=NORMAL")

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection under the instance lock; a database failure becomes one ``BrokerError`` (HTTP 503)."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as error:
                raise BrokerError(f"broker database {self.path}: {error}", status=503) from None

    def _now(self) -> str:
        return self._clock().astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _aad(path: str, version: int, policy: str) -> bytes:
    return b"".join((_AAD_LABEL, path.encode("ascii"), b"\x00", struct.pack(">Q", version),
                     policy.encode("ascii")))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _link_hash(prev_hash: bytes, seq: int, time: str, event: str, subject: str, outcome: str,
               detail: Mapping[str, Any]) -> bytes:
    body = {"seq": seq, "time": time, "event": event, "subject": subject, "outcome": outcome, "detail": detail}
    return hashlib.sha256(prev_hash + _canonical(body).encode("ascii")).digest()


def _clean_detail(detail: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON round trip of ``detail`` (so it hashes the same when read back), refusing secret-looking keys."""
    if not isinstance(detail, Mapping):
        raise TypeError("audit detail must be a mapping")
    try:
        clean = json.loads(_canonical(dict(detail)))
    except (TypeError, ValueError) as error:
        raise TypeError(f"audit detail must be plain JSON data: {error}") from None
    _refuse_secrets(clean)
    return clean


def _refuse_secrets(value: Any) -> None:
    if isinstance(value, dict):
        leaked = sorted(_FORBIDDEN_DETAIL_KEYS & set(value))
        if leaked:
            raise ValueError(f"audit detail may not carry key material or values (key {leaked[0]!r})")
        for item in value.values():
            _refuse_secrets(item)
    elif isinstance(value, list):
        for item in value:
            _refuse_secrets(item)


def _record(row: tuple[Any, ...]) -> AuditRecord:
    seq, time, event, subject, outcome, detail, prev_hash, digest = row
    return AuditRecord(seq, time, event, subject, outcome, json.loads(detail), bytes(prev_hash), bytes(digest))
