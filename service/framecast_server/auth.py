"""API keys: bearer tokens on every REST route but /healthz, compared in constant time.

Keys are never logged or returned; sessions remember only a short fingerprint of the key that
created them (for per-key limits). Websockets are authorized by their session's own stream token
(``ingest.py``), so a key holder can hand one stream to a worker without sharing the key.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request

from .errors import Unauthorized


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


async def require_api_key(request: Request) -> str | None:
    """FastAPI dependency: the caller's key fingerprint, or None when the server has no keys."""
    keys = request.app.state.settings.api_keys
    if not keys:
        return None
    key = bearer(request.headers.get("authorization", ""))
    if not key or not matches(key, keys):
        raise Unauthorized("missing or wrong API key: send 'Authorization: Bearer <key>'")
    return fingerprint(key)
