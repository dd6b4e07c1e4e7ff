"""Encoder processes started before the sessions that will use them.

Every session runs in its own encoder process (``encoder/main.py``). Starting one costs about 15 ms on
the path of ``POST /v1/sessions`` (the forkserver forks, the child unpickles its arguments), and
the server's first about half a second more, because the forkserver itself starts then and imports
PyAV. A session that finds a spare waiting skips both: it hands the spare its plan and memory and
waits only for the output to open. The pool starts a replacement in the background once the
session is open, so back-to-back sessions each find one, and starts the first at server startup.

A spare that died while waiting (killed by an operator, say) is noticed when it is taken, or when
it refuses its assignment, and the session starts its own process as it would without the pool.
``FRAMECAST_SPARE_ENCODERS=0`` turns the pool off.
"""

from __future__ import annotations

import asyncio
import logging

from framecast_server.session.encoder_process import Spare

log = logging.getLogger(__name__)


class SparePool:
    """Up to ``size`` idle encoder processes. Used on the event loop only.

    Args:
        size: spares to keep (0: none, every session starts its own process).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._spares: list[Spare] = []
        self._filling: asyncio.Task[None] | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._spares)

    def take(self) -> Spare | None:
        """A spare that is still alive, or None (then the caller starts a process itself)."""
        while self._spares:
            spare = self._spares.pop(0)
            if spare.alive:
                return spare
            log.warning("a spare encoder process exited while waiting (exit code %s)", spare.process.exitcode)
            spare.discard()
        return None

    def refill(self) -> None:
        """Start spares up to ``size`` in the background (no-op if that is running already)."""
        if self._closed or len(self._spares) >= self.size or (self._filling is not None and not self._filling.done()):
            return
        self._filling = asyncio.get_running_loop().create_task(self._fill())

    async def filled(self) -> None:
        """Wait for the spares being started (if any) to be ready."""
        if self._filling is not None:
            await asyncio.gather(self._filling, return_exceptions=True)

    async def _fill(self) -> None:
        while not self._closed and len(self._spares) < self.size:
            try:
                spare = await asyncio.to_thread(Spare.start)
            except Exception:  # sessions still start their own processes; say why spares do not
                log.exception("cannot start a spare encoder process")
                return
            if self._closed:
                spare.discard()
                return
            self._spares.append(spare)

    async def close(self, timeout: float = 5.0) -> None:
        """End every spare (their pipes close; they exit) and wait for them, at most ``timeout`` s."""
        self._closed = True
        await self.filled()
        spares, self._spares = self._spares, []
        for spare in spares:
            spare.discard()
        await asyncio.to_thread(_join_all, spares, timeout)


def _join_all(spares: list[Spare], timeout: float) -> None:
    for spare in spares:
        spare.process.join(timeout)
        if spare.process.is_alive():
            spare.process.kill()
            spare.process.join(1)
