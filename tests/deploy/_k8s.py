"""Validate manifests against the Kubernetes OpenAPI schemas that kubernetes-validate bundles (strict mode)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import yaml

KUBE_VERSION = "1.30"
# Custom resources have no bundled schema; their tests check them by hand.
CUSTOM_RESOURCES = {("cert-manager.io/v1", "Certificate")}


def documents(text: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def validate_all(docs: list[dict[str, Any]]) -> None:
    """Every built-in object is valid for ``KUBE_VERSION``; unknown fields fail (strict)."""
    assert docs
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_RESOURCES:
            continue
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:  # noqa: ANN401 - any YAML node
    """Every ``(dotted path, value)`` in a document, for searching keys anywhere."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}", value
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]")
