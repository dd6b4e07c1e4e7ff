"""API keys and tenants: who is calling, and which sessions they may see.

Every REST route but ``/healthz`` (and the dashboard's static files) needs a bearer token, compared
in constant time against the configured keys. A key is a tenant: the sessions it creates are its
own, and every other tenant's session is invisible to it, a 404 exactly like a session that does
not exist (an id that answers "forbidden" would tell an attacker that it is live). Operators hold
admin keys (``FRAMECAST_ADMIN_KEYS``), which see and act on every session and read the
per-session metrics.

Keys are never logged or returned; sessions remember only a short fingerprint of the key that
created them (their ``owner``). Websockets are authorized by their session's own stream token
(``ingest.py``), so a key holder can hand one stream to a worker without sharing the key.

A server without any keys listens on loopback only (``config.py``) and has a single tenant: every
caller is its operator.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from fastapi import Request

from framecast_server.config import Settings
from framecast_server.errors import Unauthorized


def fingerprint(key: str) -> str:
    """A short, non-reversible name for an API key."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def bearer(header: str) -> str:
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def matches(candidate: str, keys: list[str]) -> bool:
    """Constant-time comparison against every configured key."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(candidate.encode(), key.encode())
    return found


@dataclass(frozen=True)
class Caller:
    """Who made a request: the fingerprint of their key (None on a keyless server), and whether
    they are an operator, who sees every tenant's sessions."""

    owner: str | None
    admin: bool

    def sees(self, owner: str | None) -> bool:
        """Whether this caller may see (and act on) a session created by ``owner``."""
        return self.admin or owner == self.owner


#: The caller of a keyless server: the one tenant, its own operator.
OPERATOR = Caller(owner=None, admin=True)


def identify(settings: Settings, authorization: str) -> Caller:
    """The caller an ``Authorization`` header names.

    Raises:
        Unauthorized: the server has keys and the header carries none of them.
    """
    if not settings.api_keys and not settings.admin_keys:
        return OPERATOR
    key = bearer(authorization)
    # Both lists are compared in full whatever matches, so the timing says nothing about which.
    admin = bool(key) and matches(key, settings.admin_keys)
    tenant = bool(key) and matches(key, settings.api_keys)
    if not (admin or tenant):
        raise Unauthorized("missing or wrong API key: send 'Authorization: Bearer <key>'")
    return Caller(owner=fingerprint(key), admin=admin)


async def require_api_key(request: Request) -> Caller:
    """FastAPI dependency: the caller, or 401 when the server has keys and the request none."""
    return identify(request.app.state.settings, request.headers.get("authorization", ""))
