"""What the session manager asks before it opens a session: is there memory for its encoders, and
has its API key any quota left? (The session count limits stay in ``manager.py``.)"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from framecast_server.budget import EncoderMemoryBudget, chunks_in_flight, default_budget
from framecast_server.config import Settings
from framecast_server.planning.plan import SessionPlan
from framecast_server.quotas import KeyAccount, KeyLedger


class Admission:
    """The server's memory budget and its API keys' quotas (one per server, kept by SessionManager).

    A session counts against the budget from its admission on: while its encoder starts (up to
    ``open_timeout``) it is not among the open sessions yet, so admitted plans are also held here
    until then, and concurrent requests cannot all take the same memory.
    """

    def __init__(self, settings: Settings) -> None:
        self.memory = EncoderMemoryBudget(
            settings.memory_budget or default_budget(),
            settings.encoder_memory_limit or None,
            chunks_in_flight(settings),
        )
        self.keys = KeyLedger(settings.max_key_bytes or None, settings.max_key_seconds or None)
        self._starting_for = settings.open_timeout + 5.0
        self._starting: list[tuple[float, SessionPlan]] = []

    def admit(self, plan: SessionPlan, owner: str | None, sessions: Iterable[Any]) -> KeyAccount | None:
        """Check ``plan`` for the key with fingerprint ``owner`` against what the open ones among
        ``sessions`` (the manager's, finished ones included) and sessions still starting hold, and
        narrow its quotas to what the key has left. Returns the account its encoder's reports are
        charged to (None without a key).

        Raises:
            OverBudget: no memory left in the budget now, or the key's quota is used up (503).
            InvalidConfig: the streams could never fit into one encoder process (422, ``streams``).
        """
        now = time.monotonic()
        known = {id(s.plan): s for s in sessions}
        # Starting: admitted, not yet among the sessions (or never to be: their start failed).
        self._starting = [(until, p) for until, p in self._starting if until > now and id(p) not in known]
        held = [s.plan for s in known.values() if not s.state.done] + [p for _, p in self._starting]
        limits, account = self.keys.admit(owner, plan.limits)
        self.memory.admit(plan, held)
        plan.limits = limits
        self._starting.append((now + self._starting_for, plan))
        return account
