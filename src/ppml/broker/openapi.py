"""The broker's OpenAPI 3.1 description, served at ``/openapi.json``; a test keeps it in step with the routes."""

from __future__ import annotations

from typing import Any

from ppml import __version__

_PROBLEM = {"$ref": "#/components/schemas/Problem"}
_RESOURCE_PARAMS = [
    {"name": n, "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$"}}
    for n in ("repository", "type", "tag")
]
_ADMIN = [{"adminToken": []}]


def _op(summary: str, *, ok: str, body: dict[str, Any] | None = None, params: list[Any] | None = None,
        security: list[Any] | None = None, errors: tuple[int, ...] = (400, 401)) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {"200": {"description": ok}}}
    for status in errors:
        op["responses"][str(status)] = {"description": "refused", "content": {"application/json": {"schema": _PROBLEM}}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    if security:
        op["security"] = security
    return op


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of every route the app serves."""
    name_param = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "ppml key broker (KBS)", "version": __version__,
                 "description": "Trustee KBS protocol: POST auth, POST attest, GET resource (JWE to the TEE key)."},
        "paths": {
            "/kbs/v0/auth": {"post": _op(
                "Open a session; returns the nonce and sets the kbs-session-id cookie", ok="challenge",
                body={"type": "object", "required": ["version", "tee"],
                      "properties": {"version": {"type": "string"}, "tee": {"type": "string"},
                                     "extra-params": {}}})},
            "/kbs/v0/attest": {"post": _op(
                "Submit evidence bound to the nonce and the TEE public key; returns an attestation token",
                ok="attestation token", body={"type": "object", "required": ["tee-evidence"], "properties": {
                    "runtime-data": {"type": "object", "properties": {"nonce": {"type": "string"},
                                                                      "tee-pubkey": {"type": "object"}}},
                    "tee-pubkey": {"type": "object"}, "tee-evidence": {"type": "object"}}})},
            "/kbs/v0/resource/{repository}/{type}/{tag}": {"get": _op(
                "Release a resource as a flattened JWE to the attested TEE public key", ok="JWE",
                params=_RESOURCE_PARAMS, errors=(401, 403, 404))},
            "/kbs/v0/admin/resource/{repository}/{type}/{tag}": {
                "get": _op("Read a resource (audited)", ok="resource", params=_RESOURCE_PARAMS, security=_ADMIN,
                           errors=(401, 404)),
                "put": _op("Store a new version of a resource under a policy", ok="version", params=_RESOURCE_PARAMS,
                           security=_ADMIN, body={"type": "object", "required": ["value", "policy"], "properties": {
                               "value": {"type": "string", "contentEncoding": "base64url"},
                               "policy": {"type": "string"}}}),
                "delete": _op("Delete a resource", ok="deleted", params=_RESOURCE_PARAMS, security=_ADMIN,
                              errors=(401, 404)),
            },
            "/kbs/v0/admin/resources": {"get": _op("List resources (no values)", ok="list", security=_ADMIN)},
            "/kbs/v0/admin/policy/{name}": {
                "get": _op("Read a policy", ok="policy", params=name_param, security=_ADMIN, errors=(401, 404)),
                "put": _op("Create or replace a policy (see docs/policy.md)", ok="policy", params=name_param,
                           security=_ADMIN, body={"type": "object"}),
                "delete": _op("Delete an unused policy", ok="deleted", params=name_param, security=_ADMIN,
                              errors=(401, 404, 409)),
            },
            "/kbs/v0/admin/policies": {"get": _op("List policy names", ok="list", security=_ADMIN)},
            "/kbs/v0/admin/audit": {"get": _op("Read audit records after a sequence number", ok="records",
                                               security=_ADMIN, params=[
                {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}}])},
            "/kbs/v0/admin/audit/verify": {"get": _op("Verify the audit hash chain", ok="count", security=_ADMIN)},
            "/metrics": {"get": _op("Prometheus metrics", ok="text exposition", errors=())},
            "/healthz": {"get": _op("Liveness", ok="ok", errors=())},
            "/openapi.json": {"get": _op("This document", ok="OpenAPI", errors=())},
        },
        "components": {
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (EdDSA)"}},
            "schemas": {"Problem": {"type": "object", "properties": {
                "type": {"type": "string"}, "detail": {"type": "string"}, "rule": {"type": "string"}}}},
        },
    }
