"""The places framecast leans on another library's private API, pinned here so that an upgrade
that changes them fails with a message that says where, instead of as a hang or a lost signal.

- ``framecast.writer._Connection`` overrides ``websockets.sync.connection.Connection.process_event``
  (websockets' receiving thread hands every parsed frame to it) to apply each message on that
  thread, and uses ``protocol_mutex``, ``send_data`` and ``protocol.fail`` to fail a connection on
  invalid UTF-8 as websockets itself does.
- ``framecast.outgoing.send_data_frames`` replaces the sync and asyncio client connections'
  ``Protocol.send_frame`` (every frame the protocol sends passes through it) to append the data
  frames it serializes itself to ``writes`` (what ``data_to_send`` hands the socket).
- ``framecast_server.api.serve.GracefulServer`` overrides uvicorn's ``Server.handle_exit`` and appends to
  ``Server._captured_signals``, which uvicorn re-raises once it has shut down, so that the process
  exits with the signal's status. It also overrides ``Server.on_tick`` (called every 0.1 s from
  ``main_loop``; returns whether to exit) to end a drain, and ``Server.capture_signals`` (a context
  manager around serving) to add SIGUSR1.
- ``framecast_server.api.websocket._Receiver`` subclasses uvicorn's ``WebSocketsSansIOProtocol``: it
  parses data frames itself and uses the class's state (``conn``, ``queue``, ``read_paused``,
  ``handshake_complete``, ``initial_response``, ``close_sent``) and handlers (``handle_events``,
  ``handle_parser_exception``); the class must keep building its scope in ``handle_connect`` and
  resuming reads in ``receive``.
- ``framecast_server.api.serve`` calls ``multiprocessing.util._run_finalizers`` (what the exit
  handler of multiprocessing runs) before uvicorn re-raises the stopping signal, so that the
  forkserver's temp directory is removed although the process then dies of the signal.
"""

from __future__ import annotations

import inspect

import uvicorn
import websockets
from websockets.sync.connection import Connection

WEBSOCKETS_HINT = (
    f"websockets {websockets.version.version} changed a private API that framecast.writer._Connection "
    "relies on; adapt _Connection (client/framecast/writer.py) or cap websockets in pyproject.toml"
)
OUTGOING_HINT = (
    f"websockets {websockets.version.version} changed a private API that framecast.outgoing relies on; "
    "adapt send_data_frames (client/framecast/outgoing.py) or cap websockets in pyproject.toml"
)
UVICORN_HINT = (
    f"uvicorn {uvicorn.__version__} changed a private API that framecast_server.api.serve.GracefulServer "
    "relies on; adapt GracefulServer (service/framecast_server/api/serve.py) or cap uvicorn in pyproject.toml"
)


def test_websockets_hands_every_frame_to_process_event():
    assert list(inspect.signature(Connection.process_event).parameters) == ["self", "event"], WEBSOCKETS_HINT
    assert "self.process_event(event)" in inspect.getsource(Connection.recv_events), WEBSOCKETS_HINT
    for name in ("protocol_mutex", "send_data"):
        assert name in inspect.getsource(Connection), (name, WEBSOCKETS_HINT)
    from websockets.protocol import Protocol

    assert list(inspect.signature(Protocol.fail).parameters)[:3] == ["self", "code", "reason"], WEBSOCKETS_HINT


def test_websockets_queues_each_frame_through_send_frame():
    from websockets.protocol import Protocol

    assert list(inspect.signature(Protocol.send_frame).parameters) == ["self", "frame"], OUTGOING_HINT
    for method in (Protocol.send_binary, Protocol.send_continuation, Protocol.send_text):
        assert "self.send_frame(Frame(" in inspect.getsource(method), (method.__name__, OUTGOING_HINT)
    assert "writes, self.writes = self.writes, []" in inspect.getsource(Protocol.data_to_send), OUTGOING_HINT
    assert "self.extensions" in inspect.getsource(Protocol.send_frame), OUTGOING_HINT


def test_uvicorn_reraises_captured_signals_after_shutdown():
    source = inspect.getsource(uvicorn.Server)
    assert "self._captured_signals: list[int] = []" in source, UVICORN_HINT
    assert "for captured_signal in reversed(self._captured_signals):" in source, UVICORN_HINT
    assert list(inspect.signature(uvicorn.Server.handle_exit).parameters) == ["self", "sig", "frame"], UVICORN_HINT


def test_multiprocessing_runs_its_finalizers_as_serve_expects():
    import multiprocessing.util

    hint = (
        "Python changed multiprocessing.util._run_finalizers, which framecast_server.api.serve calls "
        "before dying of a re-raised signal; adapt _run_multiprocessing_finalizers"
    )
    assert list(inspect.signature(multiprocessing.util._run_finalizers).parameters) == ["minpriority"], hint  # type: ignore[attr-defined]
    assert "_run_finalizers(" in inspect.getsource(multiprocessing.util._exit_function), hint  # type: ignore[attr-defined]
    assert "_remove_temp_dir" in inspect.getsource(multiprocessing.util.get_temp_dir), hint


def test_uvicorn_ticks_and_captures_signals_as_graceful_server_expects():
    source = inspect.getsource(uvicorn.Server.main_loop)
    assert "should_exit = await self.on_tick(counter)" in source, UVICORN_HINT
    assert list(inspect.signature(uvicorn.Server.on_tick).parameters) == ["self", "counter"], UVICORN_HINT
    assert "with self.capture_signals():" in inspect.getsource(uvicorn.Server.serve), UVICORN_HINT


def test_the_overrides_still_override_something():
    """Both overrides name methods that exist on the classes they subclass."""
    from framecast.writer import _Connection
    from framecast_server.api.serve import GracefulServer

    assert _Connection.process_event is not Connection.process_event
    assert GracefulServer.handle_exit is not uvicorn.Server.handle_exit
    assert issubclass(_Connection, Connection) and issubclass(GracefulServer, uvicorn.Server)


RECEIVER_HINT = (
    f"uvicorn {uvicorn.__version__} changed the websocket protocol framecast_server.api.websocket._Receiver "
    "subclasses; adapt _Receiver (service/framecast_server/api/websocket.py) or cap uvicorn in pyproject.toml"
)


def test_uvicorn_websocket_protocol_has_what_the_receiver_uses():
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol as Base

    init = inspect.getsource(Base.__init__)
    for name in ("self.conn =", "self.queue", "self.read_paused", "self.handshake_complete", "self.initial_response"):
        assert name in init, (name, RECEIVER_HINT)
    assert "self.close_sent" in init, RECEIVER_HINT
    for method in ("handle_events", "handle_parser_exception", "receive", "send", "data_received"):
        assert callable(getattr(Base, method, None)), (method, RECEIVER_HINT)
    assert "resume_reading" in inspect.getsource(Base.receive), RECEIVER_HINT
    assert list(inspect.signature(Base.__init__).parameters) == [
        "self",
        "config",
        "server_state",
        "app_state",
        "_loop",
    ], RECEIVER_HINT
