"""``framecast serve``: run the server with uvicorn, with a shutdown that finalizes first."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing.util
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from framecast_server import logs
from framecast_server.api import connections
from framecast_server.api.websocket import InPlaceWebSocketProtocol
from framecast_server.config import Settings

log = logging.getLogger(__name__)


class GracefulServer(uvicorn.Server):
    """uvicorn, except that SIGTERM/SIGINT first finalize every session.

    Plain uvicorn closes websockets (code 1012) before the app's shutdown runs, which would cut
    clients off from the last bytes of their client-side outputs and from the final summary.
    Here the first signal finishes every open session (flush, trailer, close), lets connected
    clients receive what is left (bounded by the finish timeout), and only then shuts down. A
    second signal exits at once.

    SIGUSR1 drains instead (as ``POST /v1/admin/drain`` does): no new sessions, the live ones go
    on, and once none is left (or ``drain_timeout`` passes) the server finalizes the rest and
    exits with status 0.
    """

    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        super().__init__(config)
        self.settings = settings
        self._finalizing: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's SIGINT/SIGTERM handling, plus SIGUSR1 to drain.

        uvicorn re-raises the signal that stopped it once it has shut down, so that the exit status
        says which; the process then dies of it without running its exit handlers. So this process's
        multiprocessing finalizers run first: they remove the forkserver's directory in the temp dir
        (``pymp-*``, with its listening socket), which would otherwise be left behind at every stop.
        """
        if threading.current_thread() is not threading.main_thread():
            with super().capture_signals():
                yield
            return
        previous = signal.signal(signal.SIGUSR1, self._drain_on_signal)
        try:
            with super().capture_signals():
                try:
                    yield
                finally:
                    if self._captured_signals:
                        _run_multiprocessing_finalizers()
        finally:
            signal.signal(signal.SIGUSR1, previous)

    def _drain_on_signal(self, sig: int, frame: FrameType | None) -> None:
        manager = self._manager()
        if manager is not None:
            asyncio.get_event_loop().call_soon_threadsafe(manager.start_draining)

    def _manager(self) -> Any:
        return getattr(getattr(self.config.app, "state", None), "manager", None)

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's tick (every 0.1 s); a drain that is over starts the shutdown."""
        should_exit = await super().on_tick(counter)
        manager = self._manager()
        if not should_exit and self._finalizing is None and manager is not None and manager.drained:
            log.info("drained (%d sessions left at the deadline): shutting down", len(manager.active()))
            self._finalizing = asyncio.get_running_loop().create_task(self._finalize_then_exit())
        return should_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._finalizing is not None or self.should_exit:
            super().handle_exit(sig, frame)  # second signal: uvicorn's own (forced) shutdown
            self.force_exit = True
            return
        # uvicorn's private list of signals to re-raise after shutdown (so the exit status says
        # which); pinned by tests/test_private_apis.py.
        self._captured_signals.append(sig)
        loop = asyncio.get_event_loop()
        self._finalizing = loop.create_task(self._finalize_then_exit())

    async def _finalize_then_exit(self) -> None:
        manager = self._manager()
        try:
            if manager is not None:
                log.info("shutting down: finalizing %d open sessions", len(manager.active()))
                await asyncio.wait_for(manager.drain(), self.settings.finish_timeout + 5)
        except Exception:  # never let a stuck session keep the server from exiting
            log.exception("finalizing sessions at shutdown failed")
        finally:
            self.should_exit = True


def _run_multiprocessing_finalizers() -> None:
    """Run what multiprocessing's exit handler would (its finalizers; private API, pinned in
    tests/test_private_apis.py), for a process about to die of a re-raised signal."""
    try:
        multiprocessing.util._run_finalizers()  # type: ignore[attr-defined]
    except Exception:  # never let cleaning up keep the process from exiting as it should
        log.exception("cleaning up multiprocessing's files at exit failed")


def serve(
    host: str | None = None, port: int | None = None, output_dir: Path | None = None, insecure: bool = False
) -> None:
    """Start the server; flags given here override the FRAMECAST_* environment."""
    from pydantic import ValidationError

    from framecast_server.api.app import create_app

    overrides: dict[str, Any] = {
        k: v for k, v in {"host": host, "port": port, "output_dir": output_dir}.items() if v is not None
    }
    if insecure:
        overrides["insecure"] = True
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise SystemExit(f"framecast serve: {_settings_errors(exc)}") from None
    logs.configure(settings.log_level, settings.log_format, settings.replica_id)
    soft, _ = connections.raise_fd_limit()
    if soft < settings.max_connections + 256:
        log.warning(
            "open file limit %d leaves little room over FRAMECAST_MAX_CONNECTIONS=%d (sessions, encoders "
            "and files need descriptors too): raise it (ulimit -n) or lower the setting",
            soft,
            settings.max_connections,
        )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ws=InPlaceWebSocketProtocol,  # type: ignore[arg-type]  # a BufferedProtocol: websocket.py says why
        ws_max_size=settings.max_message_bytes + 4096,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's loggers go through logs.configure's handler
        timeout_graceful_shutdown=int(settings.finish_timeout),
        # Slow and idle clients (connections.py): a header deadline and a cap on connections; past
        # limit_concurrency uvicorn answers 503.
        http=connections.limited_protocol(settings.header_timeout, settings.max_connections),
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=settings.keep_alive_timeout,  # type: ignore[arg-type]
        h11_max_incomplete_event_size=connections.MAX_HEAD_BYTES,
    )
    GracefulServer(config, settings).run()


def _settings_errors(exc: Any) -> str:
    """A pydantic ValidationError of Settings in the operator's terms: the variable, what it must
    be, and what it was (``FRAMECAST_PORT: Input should be ... (got 'x')``)."""
    reasons = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"]:  # a field; model-level checks name their fields in the message
            name = "FRAMECAST_" + "_".join(str(part) for part in error["loc"]).upper()
            message = f"{name}: {message} (got {error['input']!r})"
        reasons.append(message)
    return "; ".join(reasons)
