"""Kubernetes manifests as YAML: block style, keys in the order written, no anchors."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # noqa: ANN401 - PyYAML's signature
        return True


def dump_all(documents: Iterable[dict[str, Any]]) -> str:
    """Documents separated by ``---``, readable by ``kubectl apply -f -``."""
    return yaml.dump_all(list(documents), Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                         explicit_start=True, width=120)
