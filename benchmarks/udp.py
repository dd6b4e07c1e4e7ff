"""A UDP receiver on 127.0.0.1 standing in for a live viewer of a ``udp://`` output."""

from __future__ import annotations

import socket
import threading
import time


class UdpReceiver:
    """Counts datagrams and bytes arriving on a free loopback port, on a background thread."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.url = f"udp://127.0.0.1:{self.port}"
        self.datagrams = 0
        self.bytes = 0
        self.first: float | None = None
        self.last: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="udp-receiver", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buf = bytearray(65536)
        while not self._stop.is_set():
            try:
                n = self.sock.recv_into(buf)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.perf_counter()
            self.first = self.first if self.first is not None else now
            self.last = now
            self.datagrams += 1
            self.bytes += n

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def __enter__(self) -> UdpReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
