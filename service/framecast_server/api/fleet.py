"""The fleet's session list: ``GET /v1/sessions`` on one replica answers for every replica.

Behind a proxy, a list request reaches one replica, and the caller wants the whole fleet's. So a
replica with ``FRAMECAST_PEERS`` asks each peer for its own sessions (``?scope=replica``, with the
caller's own ``Authorization``: each peer applies its tenants' rules itself), at once and with a
short timeout, and answers with its own and theirs. A peer that does not answer is named in the
``Framecast-Unanswered`` header (JSON: ``[{"replica", "url", "reason"}]``) and the list has what
the others said: a dead replica must not take the list down with it.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError

from framecast import protocol
from framecast_server.config import Peer
from framecast_server.models import SessionInfo

#: Seconds a peer has to answer.
PEER_TIMEOUT = 3.0


@dataclass(frozen=True)
class Unanswered:
    """A peer that did not answer the list request, and why."""

    replica: str | None
    url: str
    reason: str

    def describe(self) -> dict[str, Any]:
        return {"replica": self.replica, "url": self.url, "reason": self.reason}


async def peer_sessions(
    peers: list[Peer], own: str | None, authorization: str
) -> tuple[list[SessionInfo], list[Unanswered]]:
    """Every peer's sessions (``own``, this replica's id, is skipped), and the peers that did not answer."""
    asked = [peer for peer in peers if peer.replica is None or peer.replica != own]
    if not asked:
        return [], []
    headers = {"Authorization": authorization} if authorization else {}
    async with httpx.AsyncClient(timeout=PEER_TIMEOUT, headers=headers, trust_env=False) as client:
        answers = await asyncio.gather(*(_ask(client, peer) for peer in asked))
    found: list[SessionInfo] = []
    missing: list[Unanswered] = []
    for answer in answers:
        if isinstance(answer, Unanswered):
            missing.append(answer)
        else:
            found.extend(answer)
    return found, missing


async def _ask(client: httpx.AsyncClient, peer: Peer) -> list[SessionInfo] | Unanswered:
    try:
        response = await client.get(peer.url.rstrip("/") + "/v1/sessions", params={"scope": "replica"})
    except httpx.HTTPError as exc:
        return Unanswered(peer.replica, peer.url, f"{type(exc).__name__}: {exc}"[:200])
    if response.status_code != 200:
        return Unanswered(peer.replica, peer.url, f"answered HTTP {response.status_code}")
    try:
        return [SessionInfo.model_validate(item) for item in response.json()]
    except (ValueError, TypeError, ValidationError) as exc:
        return Unanswered(peer.replica, peer.url, f"answered something that is not a session list ({exc})"[:200])


def merge(own: list[SessionInfo], theirs: list[SessionInfo]) -> list[SessionInfo]:
    """One list, each session once (a peer list that names this replica too answers its sessions
    twice), oldest first."""
    seen: dict[str, SessionInfo] = {}
    for info in [*own, *theirs]:
        seen.setdefault(info.id, info)
    return sorted(seen.values(), key=lambda info: info.created_at)


def unanswered_header(missing: list[Unanswered]) -> dict[str, str]:
    """The response header naming the peers that did not answer (none when all did)."""
    if not missing:
        return {}
    return {protocol.UNANSWERED_HEADER: json.dumps([m.describe() for m in missing], ensure_ascii=True)}
