"""The entry points of an encoder process: open the output, then work through the chunks.

Why a process: PyAV holds the GIL while it opens a network output, writes the header and writes
the trailer, and a crash inside FFmpeg kills whatever process it runs in. In its own process an
encoder can hang or die without touching the event loop or any other session.

This module and the rest of ``encoder/`` (``loops``, ``pipe``, ``output``, ``live``, ``pacing``,
``preview``, ``malloc``) run only in encoder processes. The server starts them and
talks to them through ``session/encoder_process.py``; what crosses the pipe is in ``messages.py``.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
from multiprocessing import reduction
from multiprocessing.connection import Connection

import av.logging

from framecast_server import budget, masking, scheduling
from framecast_server.encoder.errors import SetupError, describe_error
from framecast_server.encoder.loops import DirectLoop, PacedLoop, Payloads, stats_of
from framecast_server.encoder.malloc import keep_frame_buffers
from framecast_server.encoder.pipe import Pipe, PipeSink
from framecast_server.encoder.writer import SessionWriter
from framecast_server.messages import Assign, Failed, FromEncoder, Ready, SetupFailed, Stopped
from framecast_server.planning.plan import SessionPlan
from framecast_server.quotas import QuotaReached
from framecast_server.ring import RingReader


def worker_main(raw: Connection, plan: SessionPlan, ring: RingReader, client: RingReader | None) -> None:
    """Entry point of an encoder process: open the output, then encode until told to finish."""
    pipe = Pipe(raw)
    # What is loaded by now lives as long as the process: the cyclic collector leaves it be, so the
    # collection at the session's end (below) takes a fraction of a millisecond, not 20-30.
    gc.freeze()
    budget.limit_address_space(plan.limits.memory_limit)  # first: a spare is handed its session's limit here
    keep_frame_buffers()
    scheduling.apply(plan.scheduling)  # before any thread starts: they inherit it
    # FFmpeg's error lines reach Python logging (and the encoder's stderr, the server's log), and
    # PyAV attaches the last one to the exception it raises, so failures carry FFmpeg's reason.
    av.logging.set_level(av.logging.ERROR)
    # FFmpeg quotes URLs with their credentials; stderr is the server's log.
    masking.hide_in_process(
        (output.given_url for output in plan.outputs),
        (output.options["authorization"] for output in plan.outputs if "authorization" in output.options),
    )
    writer = _open(pipe, plan)
    if writer is None:
        return
    pipe.send(Ready(writer.warnings))
    last: FromEncoder | None
    try:
        writer.connect()  # network outputs; chunks queue up meanwhile, and then the client waits
        loop = PacedLoop if plan.realtime else DirectLoop
        last = loop(pipe, writer, Payloads(ring, client)).run()
    except QuotaReached as exc:
        last = _stop(writer, str(exc), exc.flush)
    except Exception as exc:
        last = _fail(writer, exc)
    # The session ends only once its encoders are freed: some finish their work only then (x264
    # renames its first-pass statistics file), and the server takes the last message as the end.
    del writer
    gc.collect()  # in case anything of the session's is held in a reference cycle
    if last is not None:
        with contextlib.suppress(OSError):
            pipe.send(last)


def _open(pipe: Pipe, plan: SessionPlan) -> SessionWriter | None:
    """Open the encoders and outputs (files: header written too); None after telling the server why not."""
    memory_limit = plan.limits.memory_limit
    client = plan.client
    sink = PipeSink(pipe, client.seekable) if client is not None else None
    try:
        _enter_workdir(plan.workdir)
    except OSError as exc:
        pipe.send(SetupFailed(f"cannot enter the encoder's working directory: {exc}", None))
        return None
    try:
        writer = SessionWriter(plan, sink, pipe.send)  # type: ignore[arg-type]
        writer.start_files()  # headers now, so a muxer refusal is a 422 at create time
    except SetupError as exc:
        if budget.out_of_memory(exc.__cause__ or exc, str(exc), memory_limit):
            pipe.send(
                SetupFailed(
                    f"{budget.oom_reason(memory_limit)} while opening the output ({exc})", exc.field or "streams"
                )
            )
        else:
            pipe.send(SetupFailed(str(exc), exc.field))
        return None
    except Exception as exc:  # anything else PyAV raised while opening
        text = describe_error(exc)
        if budget.out_of_memory(exc, text, memory_limit):
            text = f"{budget.oom_reason(memory_limit)} ({text})"
        pipe.send(SetupFailed(f"cannot open output: {text}", None))
        return None
    return writer


def _enter_workdir(path: str | None) -> None:
    """Work in ``path``, inside the output directory (``plan.workdir``): whatever an encoder library
    or filter still writes to a relative path lands there, never in the server's working directory.
    A spare enters it when assigned, before any FFmpeg object exists."""
    if path:
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chdir(path)


def _stop(writer: SessionWriter, reason: str, flush: bool) -> Stopped | Failed:
    """A quota ran out: finalize the output (playable up to here); the server is told why the
    session stops."""
    try:
        writer.finish_early(reason, flush)
    except Exception as exc:
        return Failed(f"{reason}, but finalizing the output failed: {describe_error(exc)}")
    return Stopped(reason, stats_of(writer))


def _fail(writer: SessionWriter, exc: Exception) -> Failed:
    """Encoding failed: keep what the output has (no flush: a filter chain may never finish
    flushing); the server is told why."""
    reason = describe_error(exc)
    memory_limit = writer.plan.limits.memory_limit
    if budget.out_of_memory(exc, reason, memory_limit):
        reason = f"{budget.oom_reason(memory_limit)} ({reason})"
    with contextlib.suppress(Exception):
        writer.finish_early(reason)
    return Failed(reason)


def spare_main(raw: Connection) -> None:
    """Entry point of a spare encoder process (``spares.py``): started before a session needs it,
    it waits for one, then runs exactly as an encoder started for that session would.

    Its assignment comes down the pipe: an ``Assign`` record, then the descriptors of the memory
    it names (SCM_RIGHTS), in that order. The pipe closing first means the spare is no longer
    wanted: it exits.
    """
    try:
        assign: Assign = raw.recv()
        with socket.socket(fileno=os.dup(raw.fileno())) as sock:
            fds = reduction.recvfds(sock, 1 if assign.client_bytes is None else 2)
    except (EOFError, OSError):
        return
    ring = RingReader(fds[0], assign.ring_bytes)
    client = RingReader(fds[1], assign.client_bytes) if assign.client_bytes is not None else None
    worker_main(raw, assign.plan, ring, client)
