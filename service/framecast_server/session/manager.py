"""All sessions of one server: creating them (plan, admission, encoder), finding them for a
caller, reaping idle ones, finalizing them all at shutdown. Owned by the app's lifespan."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from framecast_server.auth import Caller
from framecast_server.config import Settings
from framecast_server.errors import DiskFull, SessionNotFound, TooManySessions
from framecast_server.metrics import Gauges, Metrics, OpenOutput, OpenSession
from framecast_server.models import SessionConfig
from framecast_server.planning.plan import OutputPlan, SessionPlan, make_plan
from framecast_server.quotas import free_bytes, size_text
from framecast_server.session.admission import Admission
from framecast_server.session.client_memory import ClientMemory, MemoryBudget, Unavailable, segment_size, sweep
from framecast_server.session.disk import OutputDirectory
from framecast_server.session.outputs import OutputFiles
from framecast_server.session.session import Session, SessionState
from framecast_server.session.spares import SparePool

log = logging.getLogger(__name__)


class SessionManager:
    """All sessions of one server. Owned by the app's lifespan."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.sessions: dict[str, Session] = {}
        self.spares = SparePool(settings.spare_encoders)
        self.admission = Admission(settings)
        self._reaper: asyncio.Task[None] | None = None
        self.output_files = OutputFiles()
        self.shared_memory = MemoryBudget(settings.shared_memory_total_bytes)
        settings.output_dir.mkdir(parents=True, exist_ok=True)
        self.output_dir = OutputDirectory(settings.output_dir)

    def active(self) -> list[Session]:
        return [s for s in self.sessions.values() if not s.state.done]

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

    async def create(self, config: SessionConfig, owner: str | None = None, same_host: bool = False) -> Session:
        """Plan, check and open a session for the API key with fingerprint ``owner``.

        ``same_host``: the request came from this machine, so shared memory can be offered.
        """
        self._forget_old()
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
        session = Session(secrets.token_hex(8), config, plan, self.settings, self.metrics, memory)
        session.owner = owner
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

    def get(self, session_id: str, caller: Caller) -> Session:
        """The session ``session_id`` if ``caller`` may see it.

        Raises:
            SessionNotFound: no such session, or another tenant's: the two are indistinguishable.
        """
        session = self.sessions.get(session_id)
        if session is None or not caller.sees(session.owner):
            raise SessionNotFound(session_id)
        return session

    def visible(self, caller: Caller) -> list[Session]:
        """Every session ``caller`` may see, open or finished: its own, or all for an operator."""
        return [s for s in self.sessions.values() if caller.sees(s.owner)]

    async def close(self, session_id: str, caller: Caller) -> Session:
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
        while any(s.connected and len(s.outbox) for s in self.sessions.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    def start(self) -> None:
        """Start the idle reaper and the first spare encoder (on the running loop); remove shared
        memory dead servers left."""
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
