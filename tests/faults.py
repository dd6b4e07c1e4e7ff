"""Fault injection for tests: a TCP proxy that cuts websocket connections at random points, or
answers slowly."""

from __future__ import annotations

import random
import socket
import threading


class CuttingProxy:
    """Forwards 127.0.0.1:``port`` to an upstream server, cutting stream websockets now and then.

    Every connection whose request is for ``/stream`` (the chunk websocket) is cut, both ways at
    once, after a random number of client bytes between ``min_bytes`` and ``max_bytes``, until
    ``cuts`` cuts have been made; after that everything passes through. REST requests are
    never cut. With ``delay``, every connection's first bytes reach the upstream server that many
    seconds after they came: a peer slow to answer (an RTMP handshake, say). Only loopback is
    used, every socket has a timeout, and ``close()`` ends it all. ``stream_bytes`` counts what
    clients sent on stream websockets: the bytes on the link.
    """

    def __init__(
        self, upstream_port: int, cuts: int, min_bytes: int, max_bytes: int, seed: int = 0, delay: float = 0.0
    ) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self.target_cuts = cuts
        self.cuts = 0
        self.stream_bytes = 0
        self.min_bytes, self.max_bytes = min_bytes, max_bytes
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True, name="proxy-conn").start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=30)
            client.settimeout(60)
            self._sockets += [client, upstream]
            first = client.recv(65536)
        except OSError:  # the proxy was closed (or the server went) before the request came
            client.close()
            return
        budget = None
        stream = b"/stream" in first.split(b"\r\n", 1)[0]
        if stream:
            with self._lock:
                if self.cuts < self.target_cuts:
                    budget = self._random.randint(self.min_bytes, self.max_bytes)
        if self._closed.wait(self.delay):
            return
        upstream.sendall(first)
        done = threading.Event()
        threading.Thread(target=self._pump, args=(upstream, client, None, done), daemon=True).start()
        self._pump(client, upstream, budget, done, counted=stream)

    def _pump(
        self, src: socket.socket, dst: socket.socket, budget: int | None, done: threading.Event, counted: bool = False
    ) -> None:
        moved = 0
        try:
            while not done.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if budget is not None and moved + len(data) >= budget:
                    with self._lock:
                        cut = self.cuts < self.target_cuts
                        self.cuts += cut
                    if cut:
                        dst.sendall(data[: budget - moved])
                        break
                    budget = None  # enough cuts made elsewhere: pass through from now on
                dst.sendall(data)
                moved += len(data)
                if counted:
                    with self._lock:
                        self.stream_bytes += len(data)
        except OSError:
            pass
        finally:
            done.set()
            for sock in (src, dst):  # cut both directions at once, like a dead link
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for sock in self._sockets:
            try:
                sock.close()
            except OSError:
                pass

    def __enter__(self) -> CuttingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
