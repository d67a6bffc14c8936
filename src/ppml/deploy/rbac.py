"""The Spark driver's service account and a namespaced Role with only what the driver does.

The driver creates, watches and deletes its executor pods, its headless service, the executors' config maps
and (with on-demand volumes) their claims; nothing else, in its own namespace only. BigDL bound the
cluster-wide ``edit`` role instead. The service account does not mount its token by default: only the driver
pod template asks for it.
"""

from __future__ import annotations

from typing import Any

RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pods", ("get", "list", "watch", "create", "patch", "delete", "deletecollection")),
    ("services", ("get", "create", "delete")),
    ("configmaps", ("get", "list", "create", "delete", "deletecollection")),
    ("persistentvolumeclaims", ("get", "list", "create", "delete", "deletecollection")),
)


def rbac_manifests(namespace: str, service_account: str) -> list[dict[str, Any]]:
    """``ServiceAccount``, ``Role`` and ``RoleBinding`` for a Spark driver in ``namespace``."""
    def metadata() -> dict[str, Any]:
        return {"name": service_account, "namespace": namespace,
                "labels": {"app.kubernetes.io/name": "ppml-spark", "app.kubernetes.io/component": "rbac"}}

    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata(), "automountServiceAccountToken": False},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": metadata(),
         "rules": [{"apiGroups": [""], "resources": [resource], "verbs": list(verbs)} for resource, verbs in RULES]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": metadata(),
         "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": service_account}},
    ]
