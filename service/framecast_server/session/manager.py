"""All sessions of one server: creating them (plan, admission, encoder), finding them for a
caller, reaping idle ones, draining, finalizing them all at shutdown, and remembering finished ones
across restarts (``records.py``). Owned by the app's lifespan.

In a fleet (``FRAMECAST_REPLICA_ID``) a session id names its owner, ``<replica>.<hex>``: the proxy
in front routes every request for a session to the replica that has it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import time
from typing import Union

from framecast_server.auth import Caller
from framecast_server.config import Settings
from framecast_server.errors import DiskFull, Draining, SessionNotFound, TooManySessions
from framecast_server.metrics import Gauges, Metrics, OpenOutput, OpenSession
from framecast_server.models import SessionConfig
from framecast_server.planning.plan import OutputPlan, SessionPlan, make_plan
from framecast_server.quotas import free_bytes, size_text
from framecast_server.session import records
from framecast_server.session.admission import Admission
from framecast_server.session.client_memory import ClientMemory, MemoryBudget, Unavailable, segment_size, sweep
from framecast_server.session.disk import OutputDirectory
from framecast_server.session.outputs import OutputFiles
from framecast_server.session.records import FinishedSession
from framecast_server.session.session import Session, SessionState
from framecast_server.session.spares import SparePool

log = logging.getLogger(__name__)

#: A session the server remembers: live (or ended while it ran), or ended before it started.
Remembered = Union[Session, FinishedSession]


class Readiness(enum.Enum):
    """Whether this replica takes new sessions (``GET /readyz``)."""

    READY = "ready"
    FULL = "full"  # at FRAMECAST_MAX_SESSIONS
    DRAINING = "draining"  # ending: its sessions go on, new ones go elsewhere


class SessionManager:
    """All sessions of one server. Owned by the app's lifespan."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.sessions: dict[str, Remembered] = {}
        #: When draining began (monotonic), and by when the rest is finalized.
        self.drain_started: float | None = None
        self.drain_deadline: float | None = None
        self.spares = SparePool(settings.spare_encoders)
        self.admission = Admission(settings)
        self._reaper: asyncio.Task[None] | None = None
        self.output_files = OutputFiles()
        self.shared_memory = MemoryBudget(settings.shared_memory_total_bytes)
        settings.output_dir.mkdir(parents=True, exist_ok=True)
        self.output_dir = OutputDirectory(settings.output_dir)

    def active(self) -> list[Session]:
        return [s for s in self.sessions.values() if isinstance(s, Session) and not s.state.done]

    def readiness(self) -> Readiness:
        if self.drain_started is not None:
            return Readiness.DRAINING
        if len(self.active()) >= self.settings.max_sessions:
            return Readiness.FULL
        return Readiness.READY

    def start_draining(self, timeout: float | None = None) -> None:
        """Take no new sessions from now on; the live ones go on until they end or ``timeout``
        (default ``drain_timeout``) passes. A second call can only bring the deadline closer."""
        now = time.monotonic()
        deadline = now + (self.settings.drain_timeout if timeout is None else timeout)
        if self.drain_started is None:
            self.drain_started = now
            log.info(
                "draining: %d live sessions go on (for at most %.0f s); no new sessions",
                len(self.active()),
                deadline - now,
            )
        self.drain_deadline = deadline if self.drain_deadline is None else min(self.drain_deadline, deadline)

    @property
    def drained(self) -> bool:
        """Whether a drain is over: no live session left, or its deadline passed."""
        if self.drain_started is None or self.drain_deadline is None:
            return False
        return not self.active() or time.monotonic() >= self.drain_deadline

    def new_id(self) -> str:
        """A fresh session id: ``<replica>.<hex>`` in a fleet, else ``<hex>``."""
        token = secrets.token_hex(8)
        return f"{self.settings.replica_id}.{token}" if self.settings.replica_id else token

    def _remember(self, session: Session) -> None:
        """A session ended: keep its record, so that a restarted server still has it (``records.py``)."""
        try:
            records.write(
                self.settings,
                session.id,
                session.owner,
                session.config,
                session.plan,
                session.info(),
                session.ended_at or time.time(),
            )
        except Exception as exc:  # a full disk must not take the session's end down with it
            session.log.warning("could not keep the record of this session for after a restart: %s", exc)

    def restore(self) -> None:
        """Remember the finished sessions of the server's earlier runs (their records)."""
        for finished in records.load(self.settings):
            self.sessions.setdefault(finished.id, finished)
        if self.sessions:
            log.info("remembering %d finished sessions from before this start", len(self.sessions))

    def gauges(self) -> Gauges:
        """What /metrics shows of the sessions (``metrics.GaugeSource``)."""
        by_state = {state.value: 0 for state in SessionState}
        for session in self.sessions.values():
            by_state[session.state.value] += 1
        return Gauges(
            by_state,
            [_open_session(s) for s in self.active()],
            self.output_dir.size(),
            self.output_dir.free(),
        )

    def _check_disk(self, plan: SessionPlan) -> None:
        """A session with server files needs FRAMECAST_MIN_FREE_DISK free on the output directory's disk."""
        least = self.settings.min_free_disk
        if not plan.files or not least:
            return
        free = free_bytes(self.settings.output_dir)
        if free < least:
            raise DiskFull(
                f"only {size_text(free)} left on the output directory's disk, less than FRAMECAST_MIN_FREE_DISK "
                f"({size_text(least)}); free some space or write elsewhere"
            )

    def _forget_old(self) -> None:
        """Keep the newest ``keep_finished_sessions`` finished sessions; drop older ones."""
        finished = sorted((s for s in self.sessions.values() if s.state.done), key=lambda s: s.ended_at or 0)
        for session in finished[: max(0, len(finished) - self.settings.keep_finished_sessions)]:
            del self.sessions[session.id]
            records.forget(self.settings, session.id)

    async def create(self, config: SessionConfig, owner: str | None = None, same_host: bool = False) -> Session:
        """Plan, check and open a session for the API key with fingerprint ``owner``.

        ``same_host``: the request came from this machine, so shared memory can be offered.
        """
        self._forget_old()
        if self.drain_started is not None:
            raise Draining("this replica is draining: it takes no new sessions (its live ones go on)")
        if len(self.active()) >= self.settings.max_sessions:
            raise TooManySessions(f"this server runs at most {self.settings.max_sessions} sessions at once")
        if owner is not None and sum(s.owner == owner for s in self.active()) >= self.settings.max_sessions_per_key:
            raise TooManySessions(
                f"this API key already has {self.settings.max_sessions_per_key} open sessions, the most allowed"
            )
        plan = make_plan(config, self.settings)
        self._check_disk(plan)
        key_account = self.admission.admit(plan, owner, self.sessions.values())  # memory, key quotas
        claimed: list[OutputPlan] = []
        try:
            for output in plan.files:
                self.output_files.claim(output, owner, self.sessions.values())
                claimed.append(output)
        except BaseException:
            for output in claimed:
                self.output_files.abandon(output)
            raise
        memory = None
        if config.shared_memory and same_host and self.settings.shared_memory:
            try:
                memory = ClientMemory(segment_size(plan, self.settings.shared_memory_bytes), self.shared_memory)
            except Unavailable as exc:
                log.warning("no shared memory for a new session, its chunks come over the websocket: %s", exc)
        session = Session(self.new_id(), config, plan, self.settings, self.metrics, memory)
        session.owner = owner
        session.on_ended = self._remember
        session.key_account = key_account
        try:
            await session.start(self.spares.take())
        except BaseException:
            if memory is not None:
                memory.dispose()
            for output in claimed:
                self.output_files.abandon(output)
            raise
        finally:
            self.spares.refill()  # once this session's output is open: starting one costs CPU too
        self.sessions[session.id] = session
        for output in claimed:
            self.output_files.opened(output)
        for output in plan.outputs:
            session.log.info("created: %s -> %s", output.muxer, output.describe_destination())
        return session

    def get(self, session_id: str, caller: Caller) -> Remembered:
        """The session ``session_id`` if ``caller`` may see it.

        Raises:
            SessionNotFound: no such session, or another tenant's: the two are indistinguishable.
        """
        session = self.sessions.get(session_id)
        if session is None or not caller.sees(session.owner):
            raise SessionNotFound(session_id)
        return session

    def live(self, session_id: str) -> Session:
        """The session ``session_id`` as a stream connects to it (any tenant's: its token decides).

        Raises:
            SessionNotFound: no such session, or one that ended before this server started.
        """
        session = self.sessions.get(session_id)
        if not isinstance(session, Session):
            raise SessionNotFound(session_id)
        return session

    def visible(self, caller: Caller) -> list[Remembered]:
        """Every session ``caller`` may see, open or finished: its own, or all for an operator."""
        return [s for s in self.sessions.values() if caller.sees(s.owner)]

    async def close(self, session_id: str, caller: Caller) -> Remembered:
        session = self.get(session_id, caller)
        await session.finish()
        return session

    async def shutdown(self) -> None:
        """Finalize every session that is still open (server shutdown)."""
        if self._reaper is not None:
            self._reaper.cancel()
        await asyncio.gather(self.spares.close(), *(s.finish() for s in self.active()), return_exceptions=True)

    async def drain(self) -> None:
        """Finalize every open session and let connected clients receive what is left."""
        await asyncio.gather(*(s.finish() for s in self.active()), return_exceptions=True)
        deadline = time.monotonic() + self.settings.finish_timeout
        while any(s.connected and len(s.outbox) for s in self.active_or_ending()) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    def active_or_ending(self) -> list[Session]:
        """Every session of this run (open or ended), not those remembered from earlier runs."""
        return [s for s in self.sessions.values() if isinstance(s, Session)]

    def start(self) -> None:
        """Start the idle reaper and the first spare encoder (on the running loop); remove shared
        memory dead servers left; remember the finished sessions of earlier runs."""
        self.restore()
        self._reaper = asyncio.create_task(self._reap_idle())
        self.spares.refill()
        if self.settings.shared_memory:
            sweep()

    async def _reap_idle(self) -> None:
        """Finalize sessions that have had no client and no data for idle_timeout seconds, and
        sessions whose client never connected within connect_grace (what they hold, an encoder
        process and maybe shared memory, is not left to someone who only creates sessions)."""
        while True:
            await asyncio.sleep(min(1.0, self.settings.idle_timeout / 4, self.settings.connect_grace / 4))
            now = time.monotonic()
            for session in self.active():
                if session.connected or not session.state.taking_chunks:
                    continue
                if session.never_connected and now - session.last_activity > self.settings.connect_grace:
                    session.idle(self.settings.connect_grace)
                elif now - session.last_activity > self.settings.idle_timeout:
                    session.idle()


def _open_session(session: Session) -> OpenSession:
    """What the gauges show of one open session (``metrics.py``)."""
    outputs = [
        OpenOutput(o.plan.index, o.state.value, o.counters.bytes, o.counters.dropped, o.counters.reconnects)
        for o in session.outputs
    ]
    return OpenSession(session.id, session.in_flight, session.outbox.waiting_bytes, session.encode_rates, outputs)
