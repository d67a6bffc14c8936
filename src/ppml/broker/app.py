"""The broker's HTTP face: an ASGI app (Starlette) mapping the KBS protocol and the admin API onto :class:`Broker`.

Handlers are plain functions. Those that may wait run in a worker thread, so as not to stall the event loop that
serves every other client: evidence verification (it may fetch collateral), admin calls (they fsync), and releases
when the storage KMS may be remote. Those that only touch memory (auth, health, metrics, OpenAPI) run on the loop,
and so do releases when the storage KMS is local (then a release is a few in-memory lookups, one JWE and one
non-durable SQLite append, well under a millisecond): the hop to a worker thread and back, with the GIL handoffs
it causes, cost more CPU than such a handler itself (``bench/kbs.py``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request, cookie_parser
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ppml._b64 import b64url, unb64url
from ppml._json import strict_loads
from ppml.broker.openapi import openapi_document
from ppml.broker.service import Broker
from ppml.errors import AttestationError, BrokerError, ConfigError, PolicyDenied, PPMLError

log = logging.getLogger(__name__)

SESSION_COOKIE = "kbs-session-id"
_ERROR_TYPE = "https://ppml.dev/kbs/errors/"
_MAX_BODY = 1 << 20  # evidence with certificate chains is a few KiB; anything near 1 MiB is abuse


def create_app(broker: Broker, *, secure_cookies: bool = True, release_on_loop: bool = False) -> Starlette:
    """The ASGI app serving ``broker``; ``secure_cookies=False`` only for the explicit plain-HTTP mode.

    ``release_on_loop`` runs releases on the event loop: only for a storage KMS that never waits on the network.
    """

    def auth(request: Request, body: Any) -> Response:
        session = broker.auth(body)
        response = JSONResponse({"nonce": session.nonce, "extra-params": ""})
        response.set_cookie(SESSION_COOKIE, session.id, max_age=int(broker.sessions.ttl.total_seconds()),
                            path="/kbs/v0", httponly=True, secure=secure_cookies, samesite="strict")
        return response

    def attest(request: Request, body: Any) -> Response:
        token = broker.attest(request.cookies.get(SESSION_COOKIE), body)
        return JSONResponse({"token": token})

    def resource(request: Request, body: Any) -> Response:
        return JSONResponse(broker.release(request.cookies.get(SESSION_COOKIE), _path(request)))

    def admin_resource(request: Request, body: Any) -> Response:
        admin = broker.authorize_admin(request.headers.get("authorization"))
        path = _path(request)
        if request.method == "PUT":
            doc = _require_object(body)
            try:
                value = unb64url(doc.get("value"))
            except ValueError:
                raise BrokerError("resource 'value' must be base64url") from None
            policy = doc.get("policy")
            if not isinstance(policy, str):
                raise BrokerError("resource 'policy' must name a policy")
            return JSONResponse({"path": path, "version": broker.put_resource(admin, path, value, policy)})
        if request.method == "DELETE":
            broker.store.delete_resource(path, actor=admin)
            return JSONResponse({"path": path, "deleted": True})
        stored = broker.store.get_resource(path)
        broker.store.append_audit("admin-read", subject=path, outcome="read", detail={"admin": admin})
        return JSONResponse({"path": path, "version": stored.version, "policy": stored.policy,
                             "value": b64url(stored.value)})

    def admin_resources(request: Request, body: Any) -> Response:
        broker.authorize_admin(request.headers.get("authorization"))
        return JSONResponse({"resources": [
            {"path": r.path, "version": r.version, "policy": r.policy} for r in broker.store.list_resources()]})

    def admin_policy(request: Request, body: Any) -> Response:
        admin = broker.authorize_admin(request.headers.get("authorization"))
        name = request.path_params["name"]
        if request.method == "PUT":
            return JSONResponse({"name": name, "policy": broker.put_policy(admin, name, body).to_dict()})
        if request.method == "DELETE":
            broker.store.delete_policy(name, actor=admin)
            return JSONResponse({"name": name, "deleted": True})
        return JSONResponse({"name": name, "policy": broker.store.get_policy(name).to_dict()})

    def admin_policies(request: Request, body: Any) -> Response:
        broker.authorize_admin(request.headers.get("authorization"))
        return JSONResponse({"policies": broker.store.list_policies()})

    def admin_audit(request: Request, body: Any) -> Response:
        broker.authorize_admin(request.headers.get("authorization"))
        after = _int_param(request, "after", 0)
        limit = min(_int_param(request, "limit", 1000), 10_000)
        records = broker.store.read_audit(after_seq=after, limit=limit)
        return JSONResponse({"records": [r.to_dict() for r in records]})

    def admin_audit_verify(request: Request, body: Any) -> Response:
        broker.authorize_admin(request.headers.get("authorization"))
        return JSONResponse({"verified_records": broker.store.verify_audit_chain()})

    def metrics(request: Request, body: Any) -> Response:
        return PlainTextResponse(broker.metrics.render(), media_type="text/plain; version=0.0.4")

    def health(request: Request, body: Any) -> Response:
        return JSONResponse({"status": "ok"})

    def openapi(request: Request, body: Any) -> Response:
        return JSONResponse(openapi_document())

    resource_path = "/{repository}/{type}/{tag}"
    routes = [
        Route("/kbs/v0/auth", _endpoint(broker, auth, "auth", on_loop=True), methods=["POST"]),
        Route("/kbs/v0/attest", _endpoint(broker, attest, "attest"), methods=["POST"]),
        Route("/kbs/v0/resource" + resource_path, _endpoint(broker, resource, "resource", on_loop=release_on_loop),
              methods=["GET"]),
        Route("/kbs/v0/admin/resource" + resource_path, _endpoint(broker, admin_resource, "admin"),
              methods=["GET", "PUT", "DELETE"]),
        Route("/kbs/v0/admin/resources", _endpoint(broker, admin_resources, "admin"), methods=["GET"]),
        Route("/kbs/v0/admin/policy/{name}", _endpoint(broker, admin_policy, "admin"),
              methods=["GET", "PUT", "DELETE"]),
        Route("/kbs/v0/admin/policies", _endpoint(broker, admin_policies, "admin"), methods=["GET"]),
        Route("/kbs/v0/admin/audit", _endpoint(broker, admin_audit, "admin"), methods=["GET"]),
        Route("/kbs/v0/admin/audit/verify", _endpoint(broker, admin_audit_verify, "admin"), methods=["GET"]),
        Route("/metrics", _endpoint(broker, metrics, "metrics", on_loop=True), methods=["GET"]),
        Route("/healthz", _endpoint(broker, health, "health", on_loop=True), methods=["GET"]),
        Route("/openapi.json", _endpoint(broker, openapi, "openapi", on_loop=True), methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    return _ReleaseFastPath(app, broker) if release_on_loop else app  # type: ignore[return-value]


_RESOURCE_PREFIX = "/kbs/v0/resource/"


class _ReleaseFastPath:
    """``GET /kbs/v0/resource/<repository>/<type>/<tag>`` straight to the broker, on the event loop.

    The release is the broker's hot path; Starlette's routing, request and response objects cost as much CPU as
    the release itself. Same responses, errors and metrics as the routed endpoint; everything else, and any
    path that does not have exactly three non-empty segments, goes to the app.
    """

    def __init__(self, app: Starlette, broker: Broker) -> None:
        self.app = app
        self.broker = broker
        self.routes = app.routes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:  # noqa: ANN401 - ASGI
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "GET" or not path.startswith(_RESOURCE_PREFIX):
            await self.app(scope, receive, send)
            return
        parts = path[len(_RESOURCE_PREFIX):].split("/")
        if len(parts) != 3 or not all(parts):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 200
        try:
            envelope = self.broker.release(_session_cookie(scope), "/".join(parts))
        except PPMLError as error:
            response: Response = _problem(error)
        except Exception:  # never leak a traceback (or a secret in it) to a client
            log.exception("internal error in resource")
            response = JSONResponse({"type": _ERROR_TYPE + "internal", "detail": "internal error"}, status_code=500)
        else:
            body = json.dumps(envelope, separators=(",", ":")).encode("ascii")  # JWE members are base64url
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode("ascii"))]})
            await send({"type": "http.response.body", "body": body})
            response = None  # type: ignore[assignment]
        if response is not None:
            status = response.status_code
            await response(scope, receive, send)
        self.broker.metrics.count("kbs_http_requests_total", "HTTP requests by endpoint and status.",
                                  endpoint="resource", status=str(status))
        self.broker.metrics.observe(time.perf_counter() - started, endpoint="resource")


def _session_cookie(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            return cookie_parser(value.decode("latin-1")).get(SESSION_COOKIE)
    return None


_Handler = Callable[[Request, Any], Response]


def _endpoint(broker: Broker, handler: _Handler, name: str, *,
              on_loop: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler: read and parse the JSON body, map errors to problem responses, record metrics.

    The handler runs in a worker thread unless ``on_loop``: then it must never wait on I/O.
    """
    from starlette.concurrency import run_in_threadpool

    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        try:
            body = await _json_body(request)
            response = handler(request, body) if on_loop else await run_in_threadpool(handler, request, body)
        except PPMLError as error:
            response = _problem(error)
        except Exception:  # never leak a traceback (or a secret in it) to a client
            log.exception("internal error in %s", name)
            response = JSONResponse({"type": _ERROR_TYPE + "internal", "detail": "internal error"}, status_code=500)
        broker.metrics.count("kbs_http_requests_total", "HTTP requests by endpoint and status.", endpoint=name,
                             status=str(response.status_code))
        broker.metrics.observe(time.perf_counter() - started, endpoint=name)
        return response

    return endpoint


async def _json_body(request: Request) -> Any:  # noqa: ANN401 - any JSON value
    if request.method in ("GET", "DELETE"):
        return None
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > _MAX_BODY:
            raise BrokerError("request body too large", status=413)
    try:
        return strict_loads(raw) if raw else None
    except ValueError as error:
        raise BrokerError(f"request body is not valid JSON: {error}") from None


def _problem(error: PPMLError) -> Response:
    """A JSON problem for a ppml error; the status says whose fault it was."""
    if isinstance(error, PolicyDenied):
        status, kind = 403, "policy-denied"
    elif isinstance(error, BrokerError):
        status, kind = error.status, type(error).__name__
    elif isinstance(error, AttestationError):  # evidence that does not verify: the client is not authenticated
        status, kind = 401, type(error).__name__
    elif isinstance(error, ConfigError):
        status, kind = 400, "bad-request"
    else:  # the broker's own storage or KMS failed
        status, kind = 500, type(error).__name__
    body: dict[str, Any] = {"type": _ERROR_TYPE + kind, "detail": str(error)}
    if isinstance(error, PolicyDenied):
        body["rule"] = error.rule
    return JSONResponse(body, status_code=status)


def _path(request: Request) -> str:
    p = request.path_params
    return f"{p['repository']}/{p['type']}/{p['tag']}"


def _require_object(body: Any) -> dict[str, Any]:  # noqa: ANN401
    if not isinstance(body, dict):
        raise BrokerError("request body must be a JSON object")
    return body


def _int_param(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    if not text.isdigit():
        raise BrokerError(f"query parameter {name!r} must be a non-negative integer")
    return int(text)
