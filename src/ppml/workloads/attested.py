"""The demo's key broker: started on loopback, with a policy pinning this ppml code in a simulated TEE.

The data owner creates ``kbs:NAME`` and encrypts through the admin API; the workload gets the key only after
its (simulated) TEE attests. On a machine without TEE hardware that is the closest honest stand-in for the real
flow, and every step says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ppml._keyfiles import load_ed25519_private_key
from ppml.attestation.collectors.simulated import code_measurement
from ppml.broker.client import AdminClient
from ppml.broker.config import BrokerConfig
from ppml.broker.server import BackgroundBroker
from ppml.broker.setup import init_broker
from ppml.errors import KeyProviderError
from ppml.kms import KeyRing
from ppml.kms.kbs import KbsKeyManagement, forget_cached_keys
from ppml.testing.simulated_tee import load_or_create_simulator_key
from ppml.workloads.workspace import Workspace

POLICY = "ppml-demo"


@dataclass
class AttestedBroker:
    """A running broker and the two key rings around it: the owner's (admin) and the workload's (attests)."""

    url: str
    directory: Path
    admin: AdminClient
    owner_keyring: KeyRing
    workload_keyring: KeyRing

    def releases(self) -> tuple[int, int]:
        """(resources released, requests refused) according to the audit log."""
        records = self.admin.audit(limit=10_000)
        released = sum(1 for r in records if r["event"] == "release" and r["outcome"] == "released")
        refused = sum(1 for r in records if r["outcome"] == "refused")
        return released, refused


def demo_policy() -> dict[str, object]:
    """Accept only the simulated TEE running exactly this installed ppml code."""
    return {"description": "ppml demo: a SIMULATED TEE running this ppml code (development only)",
            "allowed_tees": ["simulated"], "sgx": {"mrenclave": [code_measurement().hex()]},
            "accepted_tcb_statuses": [None], "max_evidence_age_seconds": 300}


@contextmanager
def attested_broker(work: Workspace, key_name: str, say: Callable[[str], None]) -> Iterator[AttestedBroker]:
    """Start the workspace's broker (creating it on first use) with ``kbs:key_name`` under the demo policy."""
    directory = work.root / "kbs"
    simulator_key = work.root / "simulated-tee.key"
    load_or_create_simulator_key(simulator_key)
    simulator_pub = work.root / "simulated-tee.pub"
    if not (directory / "broker.json").exists():
        from ppml.broker.jws import write_public_key

        write_public_key(simulator_pub, load_or_create_simulator_key(simulator_key).public_key())
        init_broker(directory, simulator_public_key=simulator_pub)
    ca_file, admin_key = str(directory / "tls" / "ca.pem"), str(directory / "admin" / "admin-key.pem")
    with BackgroundBroker(BrokerConfig.load(directory / "broker.json")) as server:
        admin = AdminClient(server.url, admin_key=load_ed25519_private_key(admin_key), ca_file=ca_file)
        try:
            admin.put_policy(POLICY, demo_policy())
            owner = KbsKeyManagement(server.url, ca_file=ca_file, admin_client=admin, policy=POLICY)
            try:
                owner.create_key(key_name)
            except KeyProviderError as error:
                if "already exists" not in str(error):
                    raise
            workload = {"url": server.url, "ca_file": ca_file, "attester": "simulated",
                        "simulator_key": str(simulator_key)}
            yield AttestedBroker(url=server.url, directory=directory, admin=admin,
                                 owner_keyring=KeyRing(backends=(owner,)),
                                 workload_keyring=KeyRing({"kbs": workload}))
        finally:
            admin.close()
            forget_cached_keys()  # close this process's broker connections before the broker stops
