"""The key broker service (KBS): attestation-gated release of keys and secrets (see ``docs/broker.md``)."""

from __future__ import annotations

from ppml.broker.client import AdminClient, KbsClient
from ppml.broker.service import Broker
from ppml.broker.store import BrokerStore

__all__ = ["AdminClient", "Broker", "BrokerStore", "KbsClient"]
