"""Prometheus text exposition (format 0.0.4) for the broker: counters and one latency histogram.

Small enough to own: the broker needs three counters and a histogram, not a client library.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

_Labels = tuple[tuple[str, str], ...]


class Metrics:
    """Thread-safe counters keyed by (name, labels) and a request-latency histogram per endpoint."""

    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self._buckets = tuple(buckets)
        self._counters: dict[tuple[str, _Labels], float] = defaultdict(float)
        self._histograms: dict[_Labels, list[float]] = {}
        self._sums: dict[_Labels, float] = defaultdict(float)
        self._help: dict[str, str] = {}
        self._lock = threading.Lock()

    def count(self, name: str, help_text: str, **labels: str) -> None:
        """Add one to counter ``name`` with ``labels``."""
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._help.setdefault(name, help_text)
            self._counters[key] += 1

    def observe(self, seconds: float, **labels: str) -> None:
        """Record one request duration."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            counts = self._histograms.setdefault(key, [0.0] * (len(self._buckets) + 1))
            for i, bound in enumerate(self._buckets):
                if seconds <= bound:
                    counts[i] += 1
            counts[-1] += 1
            self._sums[key] += seconds

    def render(self) -> str:
        """The exposition text served at ``/metrics``."""
        lines: list[str] = []
        with self._lock:
            by_name: dict[str, list[tuple[_Labels, float]]] = defaultdict(list)
            for (name, labels), value in self._counters.items():
                by_name[name].append((labels, value))
            for name in sorted(by_name):
                lines += [f"# HELP {name} {self._help[name]}", f"# TYPE {name} counter"]
                lines += [f"{name}{_format(labels)} {value:g}" for labels, value in sorted(by_name[name])]
            hist = "kbs_request_duration_seconds"
            lines += [f"# HELP {hist} Time to answer a request, by endpoint.", f"# TYPE {hist} histogram"]
            for labels, counts in sorted(self._histograms.items()):
                for bound, count in zip((*map(str, self._buckets), "+Inf"), counts, strict=True):
                    lines.append(f"{hist}_bucket{_format((*labels, ('le', bound)))} {count:g}")
                lines.append(f"{hist}_sum{_format(labels)} {self._sums[labels]:.6f}")
                lines.append(f"{hist}_count{_format(labels)} {counts[-1]:g}")
        return "\n".join(lines) + "\n"


def _format(labels: _Labels) -> str:
    if not labels:
        return ""
    escaped = (f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in labels)
    return "{" + ",".join(escaped) + "}"
