"""Attestation sessions: one challenge, at most one attestation, and a lifetime after which nothing is released.

A session starts at ``/kbs/v0/auth`` with a fresh 256-bit nonce. ``/kbs/v0/attest`` consumes that nonce exactly
once, so evidence can never be replayed into the same session, and a new session has a new nonce the old evidence
does not carry. Sessions live in memory only: a restarted broker forgets them, and clients simply attest again.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ppml.attestation.claims import Claims
from ppml.errors import SessionError

DEFAULT_SESSION_TTL_SECONDS = 300
DEFAULT_MAX_SESSIONS = 100_000


@dataclass
class Session:
    """One client's state between the challenge and the releases it may receive."""

    id: str
    nonce: str
    tee: str
    issued_at: datetime
    expires_at: datetime
    claims: Claims | None = None
    tee_pubkey: Mapping[str, Any] | None = None
    tee_key: Any = field(default=None, repr=False)  # tee_pubkey, parsed and validated once
    attested_at: datetime | None = None
    token: str | None = None
    _attest_started: bool = field(default=False, repr=False)

    @property
    def attested(self) -> bool:
        return self.claims is not None


class SessionTable:
    """Sessions by id, pruned lazily; thread-safe because the server may run handlers in worker threads."""

    def __init__(self, *, ttl_seconds: float = DEFAULT_SESSION_TTL_SECONDS,
                 max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        if ttl_seconds <= 0:
            raise ValueError("session ttl must be positive")
        self.ttl = timedelta(seconds=ttl_seconds)
        self.max_sessions = max_sessions
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def start(self, tee: str, now: datetime) -> Session:
        """A new session with a fresh nonce."""
        session = Session(id=secrets.token_urlsafe(32), nonce=secrets.token_urlsafe(32), tee=tee,
                          issued_at=now, expires_at=now + self.ttl)
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                self._prune(now)
            if len(self._sessions) >= self.max_sessions:
                raise SessionError("the broker has too many open sessions; retry later", status=503)
            self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None, now: datetime) -> Session:
        """The live session ``session_id``; raise :class:`SessionError` if it is unknown or expired."""
        if not session_id:
            raise SessionError("no kbs-session-id cookie: start with POST /kbs/v0/auth", status=401)
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and now >= session.expires_at:
                del self._sessions[session_id]
                raise SessionError("the session has expired: start again with POST /kbs/v0/auth", status=401)
        if session is None:
            raise SessionError("unknown session (expired, or the broker restarted): start again with "
                               "POST /kbs/v0/auth", status=401)
        return session

    def begin_attestation(self, session: Session) -> None:
        """Consume the session's nonce: a second attestation in the same session is a replay."""
        with self._lock:
            if session._attest_started:
                raise SessionError("this session's nonce was already used: evidence cannot be replayed; start "
                                   "a new session", status=401)
            session._attest_started = True

    def _prune(self, now: datetime) -> None:
        expired = [sid for sid, s in self._sessions.items() if now >= s.expires_at]
        for sid in expired:
            del self._sessions[sid]
