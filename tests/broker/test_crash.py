"""Durability of the broker under SIGKILL: no acknowledged admin write is lost, torn, or missing from the audit log.

The broker runs as a real ``ppml broker serve`` process. Two admin clients write as fast as they can (new
resources, new versions of one resource, policies) while the process is killed with SIGKILL; it is restarted on
the same directory and every write that was acknowledged with HTTP 200 must still be there, decrypt, and have its
record in an audit chain that still verifies. A write in flight at the kill may or may not have landed, but if it
did, it must be whole. ``docs/broker.md`` ("Durability") promises this.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from ppml._keyfiles import load_ed25519_private_key as load_admin_key
from ppml._tls import tls_context
from ppml.attestation.collectors.simulated import SimulatedAttester
from ppml.broker.client import AdminClient, KbsClient
from ppml.errors import BrokerError
from ppml.testing.simulated_tee import simulated_attester
from tests.conftest import make_broker_dir

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")

CYCLES = 3
MIN_ACKS_BEFORE_KILL = 25  # enough acknowledged writes that losing one would show
POLICY = "crash"
POLICY_DOC = {"allowed_tees": ["simulated"], "accepted_tcb_statuses": [None], "description": "crash test"}
SAME_PATH = "crash/key/rotating"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BrokerProcess:
    """``ppml broker serve`` in a child process; stderr goes to a file so a failing test can show it."""

    def __init__(self, config: Path, ca_file: str, log: Path) -> None:
        self.config, self.ca_file, self.log = config, ca_file, log
        self.port = _free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        with self.log.open("ab") as err:
            err.write(f"--- start on port {self.port} ---\n".encode())
            err.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ppml", "broker", "serve", "--config", str(self.config),
                 "--port", str(self.port)], stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout
        with httpx.Client(verify=tls_context(self.ca_file), timeout=1.0) as http:
            while True:
                if self.process.poll() is not None:
                    raise AssertionError(f"the broker exited with {self.process.returncode}:\n{self.stderr()}")
                try:
                    if http.get(f"{self.url}/healthz").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"the broker did not answer /healthz in {timeout} s:\n{self.stderr()}")
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown handler, no checkpoint, no flush runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=10)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-20_000:] if self.log.exists() else ""


@dataclass
class Ledger:
    """What the writers were told: acknowledged writes, and the one write each writer had in flight."""

    resources: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # path -> last acknowledged
    resource_puts: set[tuple[str, int]] = field(default_factory=set)  # every acknowledged (path, version)
    policy_puts: set[tuple[str, str]] = field(default_factory=set)  # every acknowledged (name, sha256)
    in_flight: dict[str, bytes] = field(default_factory=dict)  # path -> value sent but not acknowledged
    errors: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def acks(self) -> int:
        with self.lock:
            return len(self.resource_puts) + len(self.policy_puts)


def _policy_sha256(document: dict[str, Any]) -> str:
    """The digest the store records for a policy: of its canonical stored document."""
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _write_until_refused(admin: AdminClient, ledger: Ledger, cycle: int, writer: int, stop: threading.Event) -> None:
    """Write until the broker stops answering; record each acknowledged write, and the last unacknowledged one."""
    i = 0
    try:
        while not stop.is_set():
            i += 1
            if writer == 0:
                path, policy_name = f"crash/distinct/c{cycle}-{i}", None
            else:
                path = SAME_PATH if i % 5 else None
                policy_name = None if path else f"crash-c{cycle}-{i}"
            try:
                if path is not None:
                    value = f"cycle {cycle} writer {writer} write {i} ".encode() + os.urandom(16)
                    with ledger.lock:
                        ledger.in_flight[path] = value
                    version = admin.put_resource(path, value, policy=POLICY)
                    with ledger.lock:
                        del ledger.in_flight[path]
                        ledger.resources[path] = (version, value)
                        ledger.resource_puts.add((path, version))
                else:
                    answer = admin.put_policy(policy_name, {**POLICY_DOC, "description": f"write {i}"})
                    with ledger.lock:
                        ledger.policy_puts.add((policy_name, _policy_sha256(answer["policy"])))
            except BrokerError as error:
                if error.status == 503 and str(error).startswith("cannot reach"):
                    return  # the broker is gone (connection reset or refused): this write stays in flight
                raise
    except BaseException as error:  # surface in the test, not as an unhandled thread exception
        ledger.errors.append(error)


def _audit_records(admin: AdminClient) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    while True:
        page = admin.audit(after=records[-1]["seq"] if records else 0, limit=1000)
        records += page
        if len(page) < 1000:
            return records


def _check_after_restart(broker: BrokerProcess, admin: AdminClient, ledger: Ledger,
                         attester: SimulatedAttester) -> None:
    """Everything acknowledged is there, intact, decryptable, audited; in-flight writes are absent or whole."""
    assert admin.verify_audit() > 0
    stored = {item["path"]: item for item in admin.list_resources()}
    for path, (version, value) in ledger.resources.items():
        assert path in stored, f"acknowledged resource {path} v{version} was lost"
        current = admin.get_resource(path)  # the broker decrypts it; a torn row would fail here
        if stored[path]["version"] == version:
            assert current == value, f"{path} v{version} does not hold the acknowledged value"
        else:  # only the write in flight at the kill may have landed on top
            assert stored[path]["version"] == version + 1, f"{path}: v{stored[path]['version']} after ack v{version}"
            assert current == ledger.in_flight.get(path), f"{path}: a newer version that no writer sent"
    for path, value in ledger.in_flight.items():
        if path in stored and path not in ledger.resources:
            assert admin.get_resource(path) == value, f"in-flight write {path} landed torn"
    records = _audit_records(admin)
    audited_resources = {(r["detail"]["path"], r["detail"]["version"]) for r in records if r["event"] == "resource.put"}
    audited_policies = {(r["detail"]["policy"], r["detail"]["sha256"]) for r in records if r["event"] == "policy.put"}
    assert ledger.resource_puts <= audited_resources, sorted(ledger.resource_puts - audited_resources)[:5]
    assert ledger.policy_puts <= audited_policies, sorted(ledger.policy_puts - audited_policies)[:5]
    for name, _ in ledger.policy_puts:
        assert admin.get_policy(name)["allowed_tees"] == ["simulated"]
    workload = KbsClient(broker.url, attester=attester, ca_file=broker.ca_file)
    try:  # and the attested path: a release decrypts to the stored value
        assert workload.get_resource(SAME_PATH) == admin.get_resource(SAME_PATH)
    finally:
        workload.close()


def _resync(admin: AdminClient, ledger: Ledger) -> None:
    """Adopt whatever landed of the writes in flight: that is the state the next cycle's writes build on."""
    stored = {item["path"]: item["version"] for item in admin.list_resources()}
    for path, value in ledger.in_flight.items():
        if path in stored and stored[path] != ledger.resources.get(path, (0, b""))[0]:
            ledger.resources[path] = (stored[path], value)
            ledger.resource_puts.add((path, stored[path]))
    ledger.in_flight.clear()


@contextmanager
def _admin(broker: BrokerProcess, key_path: Path) -> Iterator[AdminClient]:
    client = AdminClient(broker.url, admin_key=load_admin_key(str(key_path)), ca_file=broker.ca_file, timeout=10)
    try:
        yield client
    finally:
        client.close()


def test_sigkill_during_admin_writes_loses_no_acknowledged_write(tmp_path: Path) -> None:
    config, simulator_key = make_broker_dir(tmp_path)
    directory = config.parent
    broker = BrokerProcess(config, str(directory / "tls" / "ca.pem"), tmp_path / "broker.stderr")
    admin_key = directory / "admin" / "admin-key.pem"
    attester = simulated_attester(simulator_key)
    ledger = Ledger()
    try:
        broker.start()
        with _admin(broker, admin_key) as admin:
            admin.put_policy(POLICY, POLICY_DOC)
            admin.put_resource(SAME_PATH, b"initial", policy=POLICY)
            ledger.resources[SAME_PATH] = (1, b"initial")
            ledger.resource_puts.add((SAME_PATH, 1))
        for cycle in range(CYCLES):
            stop = threading.Event()
            clients = [AdminClient(broker.url, admin_key=load_admin_key(str(admin_key)), ca_file=broker.ca_file,
                                   timeout=10) for _ in range(2)]
            writers = [threading.Thread(target=_write_until_refused, args=(clients[w], ledger, cycle, w, stop))
                       for w in range(2)]
            for thread in writers:
                thread.start()
            try:
                before, deadline = ledger.acks(), time.monotonic() + 5
                while ledger.acks() - before < MIN_ACKS_BEFORE_KILL and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(0.05 * (cycle + 1))  # land the kill at a different point of a write each time
                assert ledger.acks() - before >= MIN_ACKS_BEFORE_KILL, "the writers made too little progress"
                broker.kill()
            finally:
                stop.set()
                for thread in writers:
                    thread.join(timeout=15)
                for client in clients:
                    client.close()
            assert not ledger.errors, ledger.errors
            assert not any(thread.is_alive() for thread in writers)
            broker.start()
            with _admin(broker, admin_key) as admin:
                _check_after_restart(broker, admin, ledger, attester)
                _resync(admin, ledger)
        assert len(ledger.resource_puts) >= CYCLES * MIN_ACKS_BEFORE_KILL // 2
    except BaseException:
        print(f"broker stderr ({broker.log}):\n{broker.stderr()}", file=sys.stderr)
        raise
    finally:
        broker.kill()
