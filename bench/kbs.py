"""Key broker throughput and latency with simulated evidence, and the DCAP quote verification rate.

    .venv/bin/python bench/kbs.py [--clients 1,10,50] [--seconds 5] [--quick] [--pin] [--profile FILE]

The broker runs as its own process (``ppml broker serve`` on loopback TLS, in a fresh directory made by
``init_broker`` that trusts a simulator key). The load comes from one asyncio process with one keep-alive
connection per simulated workload. Client and broker share the machine's cores, so the table shows the CPU
that each side used. A broker near 100% of one core is the bottleneck: it is one Python process, so Python
code gets one core whatever the thread pool size. The load generator uses a minimal HTTP/1.1 client because
httpx costs about 10x more client CPU per request, enough to make the client the bottleneck on 2 cores
(``--http-client httpx`` shows this). ``--pin`` puts the broker on one core and the load on the other.

Rows, for each client count:
- "flows": auth -> attest -> GET resource, with a new session and ephemeral key each time (the cost that a
  fresh executor pays).
- "session": attest once, then GET the resource again and again (the cost per key while a session lives).
- "paced" (50 clients only): the session GETs offered at a fixed ``--rate``, with latency counted from each
  request's scheduled time.
"flows" and "session" are closed loops, so their mean latency = clients / throughput (Little's law).
Requests are built with the real client's code (report_data, Evidence.to_json, jwk_from_public_key). Each
client's first release and every 50th release after it are decrypted with jwe.decrypt and compared with the
stored value.

DCAP: ``verify_sgx_quote`` / ``verify_tdx_quote`` on the dcap-qvl vectors, with their collateral passed in
(nothing is fetched), single-threaded, at a time inside the collateral's validity window.
Targets: >= 500 releases/s with simulated evidence; p99 < 50 ms at 50 concurrent clients; >= 200 DCAP quotes/s.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from ppml._tls import tls_context
from ppml.attestation import Collateral, verify_sgx_quote, verify_tdx_quote
from ppml.attestation.collectors.simulated import SimulatedAttester
from ppml.attestation.evidence import report_data
from ppml.broker import jwe
from ppml.broker.app import SESSION_COOKIE
from ppml.broker.client import PROTOCOL_VERSION, AdminClient
from ppml.broker.jws import load_or_create_ed25519_key, write_public_key
from ppml.broker.setup import init_broker
from ppml.kms.local import KdfParams
from ppml.testing.simulated_tee import simulated_attester

VECTORS = Path(__file__).resolve().parents[1] / "tests" / "vectors" / "attestation"
RESOURCE = "bench/key/dataset"
TARGET_RELEASES, TARGET_P99_MS, TARGET_P99_CLIENTS, TARGET_DCAP = 500.0, 50.0, 50, 200.0
CHECK_EVERY = 50  # decrypt the first release of each client and every CHECK_EVERY-th after it
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# -- the broker process --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BrokerProcess:
    """``ppml broker serve`` in a fresh directory; optionally under the thread-aware profiler of this script."""

    def __init__(self, work: Path, *, profile: Path | None = None, pin: bool = False) -> None:
        simulator_key = work / "simulator.key"
        write_public_key(work / "simulator.pub", load_or_create_ed25519_key(simulator_key).public_key())
        made = init_broker(work / "kbs", simulator_public_key=work / "simulator.pub",
                           kdf=KdfParams(memory_kib=1024, iterations=1, lanes=1))  # cheap: the KDF runs once
        self.simulator_key, self.made, self.profile, self.pin = simulator_key, made, profile, pin
        self.port = _free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.ssl = tls_context(str(made.ca_certificate))
        self.stderr_path = work / "broker.stderr"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BrokerProcess:
        serve = ["broker", "serve", "--config", str(self.made.config), "--port", str(self.port)]
        command = ([sys.executable, __file__, "--serve-profiled", str(self.profile), "--", *serve] if self.profile
                   else [sys.executable, "-m", "ppml", *serve])
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        pin = self.pin and len(cores) >= 2
        with self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=(
                (lambda: os.sched_setaffinity(0, {cores[0]})) if pin else None))  # safe: no threads here yet
        if pin:
            os.sched_setaffinity(0, set(cores[1:]))
        deadline = time.monotonic() + 30
        with httpx.Client(verify=self.ssl, timeout=1.0) as http:
            while True:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise SystemExit(f"the broker did not start:\n{self.stderr_path.read_text()[-4000:]}")
                try:
                    if http.get(f"{self.url}/healthz").status_code == 200:
                        return self
                except httpx.HTTPError:
                    time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # uvicorn exits cleanly, so a profile gets written
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def cpu_seconds(self) -> float:
        """User + system CPU time the broker process has used (Linux /proc)."""
        assert self.process is not None
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK

    def admin(self) -> AdminClient:
        key = load_or_create_ed25519_key(self.made.admin_key)
        return AdminClient(self.url, admin_key=key, ca_file=str(self.made.ca_certificate))


# -- the load --------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """What one workload at one client count produced."""

    operations: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    broker_cpu: float = 0.0
    client_cpu: float = 0.0
    checked: int = 0

    @property
    def rate(self) -> float:
        return self.operations / self.seconds

    def percentile(self, q: float) -> float:
        """The ``q`` quantile of latency, in milliseconds."""
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


class RawHttp:
    """A keep-alive HTTP/1.1 connection that knows the one cookie of the protocol.

    About a tenth of httpx's client CPU per request: with httpx, the load generator, not the broker, runs out of
    CPU first on a 2-core machine (``--http-client httpx`` shows it).
    """

    def __init__(self, url: str, context: ssl.SSLContext) -> None:
        self.host, _, port = url.removeprefix("https://").partition(":")
        self.port, self.context = int(port), context
        self.session: str | None = None
        self._stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:  # noqa: ANN401 - JSON
        if self._stream is None:
            self._stream = await asyncio.open_connection(self.host, self.port, ssl=self.context)
        reader, writer = self._stream
        data = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-length: {len(data)}\r\n"
        if data:
            head += "content-type: application/json\r\n"
        if self.session:
            head += f"cookie: {SESSION_COOKIE}={self.session}\r\n"
        writer.write(head.encode("ascii") + b"\r\n" + data)
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.lower()
            if name == "content-length":
                length = int(value)
            elif name == "set-cookie" and value.strip().startswith(SESSION_COOKIE + "="):
                self.session = value.strip().split(";", 1)[0].partition("=")[2]
        return int(lines[0].split(" ", 2)[1]), json.loads(await reader.readexactly(length))

    async def aclose(self) -> None:
        if self._stream is not None:
            self._stream[1].close()


class HttpxHttp:
    """The same interface over ``httpx.AsyncClient``, for comparison."""

    def __init__(self, url: str, context: ssl.SSLContext) -> None:
        self._http = httpx.AsyncClient(base_url=url, verify=context, timeout=30.0)
        self.session: str | None = None

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:  # noqa: ANN401 - JSON
        if self.session is None:
            self._http.cookies.clear()
        response = await self._http.request(method, path, json=body)
        self.session = response.cookies.get(SESSION_COOKIE) or self.session
        return response.status_code, response.json()

    async def aclose(self) -> None:
        await self._http.aclose()


class Workload:
    """One simulated TEE: its own connection and session, a fresh ephemeral key per attestation."""

    def __init__(self, http: RawHttp | HttpxHttp, attester: SimulatedAttester, expected: bytes) -> None:
        self.http, self.attester, self.expected = http, attester, expected
        self.private_key: ec.EllipticCurvePrivateKey | None = None
        self.releases = 0
        self.checked = 0

    async def _call(self, method: str, path: str, body: Any = None) -> Any:  # noqa: ANN401 - JSON
        status, answer = await self.http.request(method, path, body)
        if status != 200:
            raise SystemExit(f"{method} {path}: HTTP {status} {answer}")
        return answer

    async def attest(self) -> None:
        """auth -> attest, built exactly as ppml.broker.client.KbsClient.attest builds them."""
        private_key = ec.generate_private_key(ec.SECP256R1())
        tee_pubkey = jwe.jwk_from_public_key(private_key.public_key())
        self.http.session = None
        challenge = await self._call("POST", "/kbs/v0/auth", {
            "version": PROTOCOL_VERSION, "tee": self.attester.tee, "extra-params": ""})
        evidence = self.attester.collect(report_data(challenge["nonce"], tee_pubkey))
        await self._call("POST", "/kbs/v0/attest", {
            "runtime-data": {"nonce": challenge["nonce"], "tee-pubkey": tee_pubkey},
            "tee-evidence": evidence.to_json()})
        self.private_key = private_key

    async def release(self) -> None:
        envelope = await self._call("GET", f"/kbs/v0/resource/{RESOURCE}")
        if self.releases % CHECK_EVERY == 0:  # prove the broker released the right value, to this key only
            assert self.private_key is not None
            if jwe.decrypt(envelope, self.private_key) != self.expected:
                raise SystemExit("a release decrypted to the wrong value")
            self.checked += 1
        self.releases += 1


async def _measure(broker: BrokerProcess, clients: int, seconds: float, mode: str, expected: bytes,
                   client: type[RawHttp | HttpxHttp], *, rate: float | None = None) -> Run:
    """Warm up (TLS handshakes, caches), then count what starts and ends inside ``seconds``.

    Closed loop unless ``rate`` (requests/s, all clients together): then each client sends on a fixed schedule
    and latency counts from the scheduled time, so a stalled broker cannot hide its queue (no coordinated
    omission).
    """
    attester = simulated_attester(broker.simulator_key)
    workloads = [Workload(client(broker.url, broker.ssl), attester, expected) for _ in range(clients)]
    run = Run(seconds=seconds)
    interval = clients / rate if rate else 0.0

    async def loop(index: int, workload: Workload, start: float, end: float, latencies: list[float]) -> None:
        scheduled = start + index * interval / clients
        while (began := time.perf_counter() if not rate else scheduled) < end:
            if rate:
                await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
                scheduled += interval
            if mode == "flows":
                await workload.attest()
            await workload.release()
            if (done := time.perf_counter()) <= end:
                latencies.append(done - began)

    try:
        if mode != "flows":
            await asyncio.gather(*(w.attest() for w in workloads))
        warmup, warmup_end = time.perf_counter(), time.perf_counter() + min(1.0, seconds / 4)
        await asyncio.gather(*(loop(i, w, warmup, warmup_end, []) for i, w in enumerate(workloads)))
        broker_cpu, client_cpu, started = broker.cpu_seconds(), sum(os.times()[:2]), time.perf_counter()
        await asyncio.gather(*(loop(i, w, started, started + seconds, run.latencies)
                               for i, w in enumerate(workloads)))
        elapsed = time.perf_counter() - started
        run.broker_cpu = (broker.cpu_seconds() - broker_cpu) / elapsed
        run.client_cpu = (sum(os.times()[:2]) - client_cpu) / elapsed
        run.operations = len(run.latencies)
        run.checked = sum(w.checked for w in workloads)
    finally:
        await asyncio.gather(*(w.http.aclose() for w in workloads))
    return run


# -- DCAP ------------------------------------------------------------------------------------------------------


def _collateral(relative: str) -> Collateral:
    """A Collateral from dcap-qvl's JSON bundle, which stores each signed body and its signature apart."""
    doc = json.loads((VECTORS / relative).read_text())

    def wrap(key: str, body: str, signature: str) -> bytes:
        return f'{{"{key}":{body},"signature":"{signature}"}}'.encode()

    return Collateral(tcb_info_json=wrap("tcbInfo", doc["tcb_info"], doc["tcb_info_signature"]),
                      qe_identity_json=wrap("enclaveIdentity", doc["qe_identity"], doc["qe_identity_signature"]),
                      tcb_signing_chain=[doc["tcb_info_issuer_chain"].encode()],
                      root_crl=bytes.fromhex(doc["root_ca_crl"]), pck_crl=bytes.fromhex(doc["pck_crl"]))


def _window_start(quote: str) -> datetime:
    """The start of the vector's collateral validity window, from expected_results.json."""
    entries = json.loads((VECTORS / "expected_results.json").read_text())["dcap_quotes"]
    entry = next(e for e in entries if e["quote"] == quote and e["valid_window_utc"][2] == "OK")
    return datetime.fromisoformat(entry["valid_window_utc"][0])


def dcap_rate(verify: Callable[..., Any], quote_path: str, collateral_path: str, seconds: float) -> tuple[float, str]:
    quote, collateral = (VECTORS / quote_path).read_bytes(), _collateral(collateral_path)
    now = _window_start(quote_path)
    status = verify(quote, now=now, collateral=collateral).tcb_status  # and fail loudly before timing
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        verify(quote, now=now, collateral=collateral)
        count += 1
    return count / elapsed, str(status)


# -- report ----------------------------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,10,50", help="comma-separated concurrent client counts")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per workload and count")
    parser.add_argument("--quick", action="store_true", help="50 clients, 2 s each, 1 s of DCAP")
    parser.add_argument("--rate", type=float, default=TARGET_RELEASES,
                        help=f"releases/s offered in the paced row ({TARGET_P99_CLIENTS} clients)")
    parser.add_argument("--http-client", choices=["raw", "httpx"], default="raw",
                        help="load generator's HTTP client (httpx costs the client ~10x more CPU per request)")
    parser.add_argument("--pin", action="store_true",
                        help="broker on the first core, load generator on the others (steadier figures)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="run the broker under cProfile (all threads) and write its stats to this file")
    args = parser.parse_args()
    counts = [50] if args.quick else sorted({int(c) for c in args.clients.split(",")})
    seconds = 2.0 if args.quick else args.seconds
    logging.getLogger("ppml").setLevel(logging.ERROR)  # the simulated attester warns on every collection

    dcap = {"SGX": dcap_rate(verify_sgx_quote, "sgx/dcap-qvl/sgx_quote", "sgx/dcap-qvl/sgx_quote_collateral.json",
                             seconds / 2),
            "TDX": dcap_rate(verify_tdx_quote, "tdx/dcap-qvl/tdx_quote", "tdx/dcap-qvl/tdx_quote_collateral.json",
                             seconds / 2)}
    expected = secrets.token_bytes(32)
    client = RawHttp if args.http_client == "raw" else HttpxHttp
    results: dict[tuple[str, int], Run] = {}
    with tempfile.TemporaryDirectory(prefix="ppml-bench-kbs-") as work, \
            BrokerProcess(Path(work), profile=args.profile, pin=args.pin) as broker:
        admin = broker.admin()
        try:
            admin.put_policy("bench", {"allowed_tees": ["simulated"], "accepted_tcb_statuses": [None]})
            admin.put_resource(RESOURCE, expected, policy="bench")
        finally:
            admin.close()
        plan = [(mode, clients, None) for clients in counts for mode in ("flows", "session")]
        plan.append(("paced", TARGET_P99_CLIENTS, args.rate))
        for mode, clients, offered in plan:
            results[mode, clients] = run = asyncio.run(
                _measure(broker, clients, seconds, mode, expected, client, rate=offered))
            print(f"  {mode:8} {clients:3d} clients: {run.rate:8.1f}/s  p50 {run.percentile(0.5):7.2f} ms  "
                  f"p99 {run.percentile(0.99):7.2f} ms  broker CPU {run.broker_cpu:4.0%}  client CPU "
                  f"{run.client_cpu:4.0%}  ({run.checked} releases decrypted and checked)", flush=True)

    print_report(results, dcap, seconds=seconds, pinned=args.pin, rate=args.rate)
    if args.profile:
        print(f"\nbroker profile (CPU time, all threads): {args.profile}; read it with python -m pstats")


def print_report(results: dict[tuple[str, int], Run], dcap: dict[str, tuple[float, str]], *, seconds: float,
                 pinned: bool, rate: float) -> None:
    where = "broker pinned to one core, load on the other" if pinned else "cores shared by broker and load"
    print(f"\nkey broker on loopback TLS, {os.cpu_count()} cores ({where}), {seconds:g} s per row; closed loop "
          f"except 'paced' ({rate:g} releases/s offered)\n")
    print(f"{'workload':36} {'clients':>7} {'ops/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'broker CPU':>10} "
          f"{'CPU ms/op':>9} {'client CPU':>10}")
    order = {"flows": 0, "session": 1, "paced": 2}
    for (mode, clients), run in sorted(results.items(), key=lambda item: (item[0][1], order[item[0][0]])):
        name = {"flows": "full attestation+release flows/s", "session": "releases/s (attested session)",
                "paced": f"releases/s (session, paced at {rate:g}/s)"}[mode]
        print(f"{name:36} {clients:7d} {run.rate:8.1f} {run.percentile(0.5):8.2f} {run.percentile(0.99):8.2f} "
              f"{run.broker_cpu:10.0%} {run.broker_cpu / run.rate * 1000:9.2f} {run.client_cpu:10.0%}")
    print(f"\n{'DCAP verification, collateral given':36} {'quotes/s':>8}  TCB status")
    for tee, (quotes, status) in dcap.items():
        print(f"{tee + ' quote (dcap-qvl vector)':36} {quotes:8.1f}  {status}")

    best_session = max(run.rate for (mode, _), run in results.items() if mode == "session")
    print("\ntargets")
    print(f"  releases/s with simulated evidence >= {TARGET_RELEASES:g}: {best_session:.0f} (attested session)  "
          f"{_verdict(best_session >= TARGET_RELEASES)}")
    for mode, label in (("session", "release GET, closed loop"), ("paced", f"release GET at {rate:g}/s offered"),
                        ("flows", "full flow of 3 requests, closed loop")):
        run = results.get((mode, TARGET_P99_CLIENTS))
        if run is None:
            print(f"  p99 < {TARGET_P99_MS:g} ms at {TARGET_P99_CLIENTS} clients ({label}): not measured "
                  f"(add {TARGET_P99_CLIENTS} to --clients)")
            continue
        p99 = run.percentile(0.99)
        print(f"  p99 < {TARGET_P99_MS:g} ms at {TARGET_P99_CLIENTS} clients ({label}): {p99:.1f} ms  "
              f"{_verdict(p99 < TARGET_P99_MS)}")
    worst_dcap = min(quotes for quotes, _ in dcap.values())
    print(f"  DCAP quotes/s >= {TARGET_DCAP:g}: {worst_dcap:.0f} (slower of SGX, TDX)  "
          f"{_verdict(worst_dcap >= TARGET_DCAP)}")


def serve_profiled(out: str, argv: list[str]) -> None:
    """Run ``ppml <argv>`` with every thread profiled, and write the merged stats at exit.

    ``cProfile`` alone sees only the main thread, but the broker's handlers run in a thread pool.
    """
    import cProfile
    import pstats
    import threading

    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start_thread_profile(*_: object) -> None:
        profile = cProfile.Profile(time.thread_time)  # CPU time: wall time would count waits for the GIL
        with lock:
            profiles.append(profile)
        profile.enable()  # replaces this hook for the thread

    threading.setprofile(start_thread_profile)
    main_profile = cProfile.Profile(time.thread_time)
    profiles.append(main_profile)
    sys.argv = ["ppml", *argv]
    from ppml.cli import main as ppml_main

    main_profile.enable()
    try:
        ppml_main()
    except SystemExit:
        pass
    finally:
        main_profile.disable()
        threading.setprofile(None)  # type: ignore[arg-type]
        with lock:
            stats = pstats.Stats(*profiles)
        stats.dump_stats(out)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve-profiled":
        serve_profiled(sys.argv[2], sys.argv[4:])
    else:
        main()
