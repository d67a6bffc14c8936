"""The main job: TPC-H on encrypted data, end to end, checked and timed against plaintext.

Steps: generate TPC-H; start the key broker with a key under a policy that pins this code in a (simulated)
TEE; encrypt the tables as the data owner; run the queries on the plaintext (the engine's own Parquet reader)
and, after attesting to the broker, on the encrypted tables; check that both give the same answers (and, at
scale factor 1, the official answers); write the results encrypted; show the broker's audit log.

The encrypted tables and results go to the work directory, to a local Azurite (the Azure Storage emulator,
``storage="azurite"``) started for the run, or under any fsspec URL (``storage_url="abfs://container/prefix"``,
credentials from ``AZURE_STORAGE_*`` or the Azure identity chain); the queries then read them from there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ppml.data.objectstore import is_blob_url
from ppml.engines.registry import open_engine
from ppml.errors import ConfigError
from ppml.kms import KeyRing
from ppml.workloads.attested import POLICY, attested_broker
from ppml.workloads.tpch.answers import check_answer, compare_tables
from ppml.workloads.tpch.datagen import _check_scale, generate
from ppml.workloads.tpch.pipeline import (
    QueryRun,
    encrypt_tables,
    join_url,
    plain_tables,
    register_encrypted,
    register_plain,
    run_queries,
    write_results,
    write_timings,
)
from ppml.workloads.workspace import Workspace

Say = Callable[[str], None]
STORAGES = ("local", "azurite")
AZURITE_CONTAINER = "ppml-demo"


@dataclass
class QueryReport:
    """One row of the demo's table."""

    query: int
    plain_seconds: float
    encrypted_seconds: float
    rows: int
    check: str

    @property
    def ratio(self) -> float:
        return self.encrypted_seconds / self.plain_seconds if self.plain_seconds else float("nan")


@dataclass
class DemoReport:
    """Everything the demo did and where it left its outputs."""

    engine: str
    scale: float
    workspace: Workspace
    storage: str = "local"  # local, azurite, or the storage URL given
    storage_root: str = ""  # where the encrypted tables and results are: a directory or a URL
    tables: dict[str, str] = field(default_factory=dict)
    results: dict[int, str] = field(default_factory=dict)
    queries: list[QueryReport] = field(default_factory=list)
    timings_csv: Path | None = None
    broker_url: str = ""
    broker_dir: Path | None = None
    releases: int = 0

    @property
    def failures(self) -> list[QueryReport]:
        return [q for q in self.queries if not q.check.startswith("ok")]


def run_demo(*, engine: str = "duckdb", scale: float = 0.1, workdir: str | None = None,
             queries: Sequence[int] = tuple(range(1, 23)), say: Say = print,
             engine_settings: dict | None = None,  # type: ignore[type-arg]
             storage: str = "local", storage_url: str | None = None) -> DemoReport:
    """Run the whole demo; ``say`` receives one line per step."""
    _check_scale(scale)  # before creating anything
    _check_storage(storage, storage_url)
    work = Workspace.create(workdir, prefix="ppml-demo-")
    with _storage(work, storage, storage_url, say) as root:
        report = DemoReport(engine, scale, work, storage=storage_url or storage, storage_root=root)
        _run_demo(report, queries, say, engine_settings)
    return report


def _check_storage(storage: str, storage_url: str | None) -> None:
    if storage not in STORAGES:
        raise ConfigError(f"unknown storage {storage!r}; choose one of: {', '.join(STORAGES)}")
    if storage == "azurite" and storage_url and not is_blob_url(storage_url):
        raise ConfigError(f"{storage_url}: with Azurite, the storage URL must be abfs://container/prefix")


@contextmanager
def _storage(work: Workspace, storage: str, storage_url: str | None, say: Say) -> Iterator[str]:
    """Where tables and results go: the work directory, a URL, or Azurite started for the run (its data kept in
    the work directory; its connection string exported, so Spark's Python workers started inside find it)."""
    if storage == "azurite":
        from ppml.testing.azurite import exported, running_azurite

        with running_azurite(work.root / "azurite") as azurite, exported(azurite.environ()):
            root = (storage_url or f"abfs://{AZURITE_CONTAINER}").rstrip("/")
            say(f"storage: Azurite, the Azure Storage emulator, on {azurite.blob_endpoint}: encrypted tables and "
                f"results go to {root}")
            yield root
    elif storage_url:
        say(f"storage: {storage_url} (credentials from the environment or the Azure identity chain)")
        yield storage_url.rstrip("/")
    else:
        yield str(work.root)


def _run_demo(report: DemoReport, queries: Sequence[int], say: Say,
              engine_settings: dict | None) -> None:  # type: ignore[type-arg]
    engine, scale, work, root = report.engine, report.scale, report.workspace, report.storage_root
    plain_dir = work.root / f"tpch-sf{scale:g}" / "plain"
    if not (plain_dir / "lineitem.parquet").exists():
        say(f"1. generating TPC-H at scale factor {scale:g} with tpchgen-cli ...")
        generate(plain_dir, scale, overwrite=True)
    else:
        say(f"1. TPC-H at scale factor {scale:g} already generated in {plain_dir}")
    with attested_broker(work, "tpch", say) as kbs:
        key_uri = "kbs:tpch"
        report.broker_url, report.broker_dir = kbs.url, kbs.directory
        say(f"2. key broker on {kbs.url} (TLS); primary key {key_uri} released only under policy "
            f"'{POLICY}': a SIMULATED TEE running this exact ppml code (no TEE hardware here; it proves nothing)")
        encrypted_dir = join_url(root, f"tpch-sf{scale:g}/encrypted")
        datasets = encrypt_tables(plain_dir, encrypted_dir, kbs.owner_keyring, key_uri=key_uri)
        report.tables = datasets
        say(f"3. the data owner encrypted the 8 tables into {encrypted_dir} (.ppml containers of Parquet, "
            "AES-256-GCM; data keys wrapped by kbs:tpch)")

        plain_runs = _run(engine, work.keyring, queries, lambda e: register_plain(e, plain_dir), engine_settings)
        say(f"4. ran {len(queries)} queries on plaintext Parquet with {engine}'s own reader")
        encrypted_runs = _run(engine, kbs.workload_keyring, queries, lambda e: register_encrypted(e, datasets),
                              engine_settings)
        say(f"5. ran {len(queries)} queries on the encrypted tables: the workload attested to the broker, "
            "received kbs:tpch as a JWE to its ephemeral key, and decrypted inside its process")

        for plain, encrypted in zip(plain_runs, encrypted_runs, strict=True):
            difference = compare_tables(plain.result, encrypted.result)
            check = "ok (same as plaintext)" if difference is None else f"DIFFERS from plaintext: {difference}"
            if difference is None and scale == 1:
                verdict = check_answer(encrypted.query, encrypted.result)
                check = "ok (official answer)" if verdict.ok else f"WRONG: {verdict.message}"
            report.queries.append(QueryReport(plain.query, plain.seconds, encrypted.seconds,
                                              encrypted.result.num_rows, check))
        say("6. checked every encrypted result against the plaintext run"
            + (" and the official TPC-H answers" if scale == 1 else ""))
        results_dir = join_url(root, "results")
        report.results = write_results(encrypted_runs, results_dir, kbs.workload_keyring, key_uri=key_uri)
        local = root == str(work.root)  # timings stay local: they hold no data
        report.timings_csv = (work.root / "results" if local else work.root) / "timings.csv"
        write_timings(report.timings_csv, [
            {"query": q.query, "plain_seconds": round(q.plain_seconds, 4), "encrypted_seconds":
             round(q.encrypted_seconds, 4), "ratio": round(q.ratio, 3), "rows": q.rows, "check": q.check}
            for q in report.queries])
        say(f"7. the workload wrote the {len(report.results)} results encrypted with {key_uri} to {results_dir}")
        report.releases, refused = kbs.releases()
        say(f"8. broker audit log: {report.releases} attested release(s), {refused} refusal(s); hash chain of "
            f"{kbs.admin.verify_audit()} records verified")


def _run(engine_name: str, keyring: KeyRing, queries: Sequence[int], register: Callable[..., None],
         settings: dict | None) -> list[QueryRun]:  # type: ignore[type-arg]
    engine = open_engine(engine_name, keyring, **(settings or {}))
    try:
        register(engine)
        return run_queries(engine, queries, repeat=2 if engine_name == "duckdb" else 1)  # best of 2: less noise
    finally:
        engine.close()


__all__ = ["DemoReport", "QueryReport", "plain_tables", "run_demo"]
