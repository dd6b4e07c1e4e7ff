"""The encoder process's end of its pipe to the server (the vocabulary is ``messages.py``).

The encoder reads its pipe directly: descriptors are small, and the ring bounds how many are in
flight, so the pipe never fills however long the encoder is busy between reads. It reads as much as
is there at a time and cuts it into messages (``messages.PipeFrames``): one system call for a
message, or for several that came together, where ``multiprocessing.Connection`` makes two each.
"""

from __future__ import annotations

import collections
import os
import select
import threading
from multiprocessing.connection import Connection

from framecast_server.messages import (
    FromEncoder,
    OutputBytes,
    PipeFrames,
    ToEncoder,
    decode_to_encoder,
    encode_from_encoder,
    pipe_frame,
)

#: Bytes read from the pipe at a time: many descriptors.
READ_BYTES = 64 * 1024


class NothingYet(Exception):
    """No message within the timeout (not an OSError: those mean the pipe is gone)."""


class Pipe:
    """The encoder's end of the pipe. Sends are locked, so that the prepare thread (``Free``), the
    muxer writing client output and the encoding thread (``Ack``) never interleave bytes of two
    messages; receiving is done by one thread at a time."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn  # kept: it owns the descriptor, and closes it
        self._fd = conn.fileno()
        self._lock = threading.Lock()
        self._frames = PipeFrames()
        self._received: collections.deque[bytes] = collections.deque()
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)
        self._gone = False

    def send(self, message: FromEncoder) -> None:
        data = encode_from_encoder(message)
        framed = memoryview(pipe_frame(data) + data)
        with self._lock:
            while framed:
                framed = framed[os.write(self._fd, framed) :]

    def receive(self, timeout: float | None = None) -> ToEncoder | None:
        """The next message from the server; None once it went away.

        Raises:
            NothingYet: ``timeout`` given, and nothing came within it.
        """
        received = self._received
        while not received:
            if self._gone:
                return None
            if timeout is not None and not self._poll.poll(max(0.0, timeout) * 1000):
                raise NothingYet
            try:
                data = os.read(self._fd, READ_BYTES)
            except OSError:
                data = b""
            if not data:
                self._gone = True
                return None
            received.extend(self._frames.feed(data))
        return decode_to_encoder(received.popleft())


class PipeSink:
    """A file object whose writes (and seeks) become ``OutputBytes`` messages.

    The muxer sees a seekable file exactly when the client's destination is seekable, so the
    bytes written (headers patched by seeking back included) are the ones a local StreamWriter
    would have produced.
    """

    def __init__(self, pipe: Pipe, seekable: bool) -> None:
        self._pipe = pipe
        self._seekable = seekable
        self._pos = 0
        self._size = 0

    def write(self, data: bytes | memoryview) -> int:
        data = bytes(data)
        self._pipe.send(OutputBytes(self._pos, data))
        self._pos += len(data)
        self._size = max(self._size, self._pos)
        return len(data)

    def seekable(self) -> bool:
        return self._seekable

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if not self._seekable:
            raise OSError("destination is not seekable")
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos
