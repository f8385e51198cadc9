"""A small TCP proxy for tests: it forwards to a database server and cuts the first connection
after a number of bytes from the server, so a read breaks in the middle of a stream."""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import Any


class CuttingProxy:
    """A TCP proxy that drops the first connection after `limit` bytes from the server.

    Later connections pass untouched. `cut` is set once the first connection was cut;
    `connections` counts the client connections accepted. Use it as a context manager, or call
    `close()`: it stops the listener, shuts every socket down and joins its threads.
    """

    def __init__(self, upstream: tuple[str, int], limit: int) -> None:
        self.upstream, self.limit = upstream, limit
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.cut = threading.Event()
        self.sockets: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self._start(self._accept)

    def __enter__(self) -> CuttingProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _start(self, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(t)
        t.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            self.sockets += [client, server]
            self.connections += 1
            limit = self.limit if self.connections == 1 else None
            self._start(self._pump, client, server, None)
            self._start(self._pump, server, client, limit)

    def _pump(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if limit is not None and sent + len(data) >= limit:
                    dst.sendall(data[: limit - sent])
                    self.cut.set()
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        _shut(src, dst)

    def close(self) -> None:
        for s in [self.listener, *self.sockets]:  # shutdown wakes threads blocked on them
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self.threads:
            t.join(timeout=5)
        for s in [self.listener, *self.sockets]:
            s.close()


class StallingProxy(CuttingProxy):
    """A TCP proxy that can stop forwarding while keeping every socket open (a proxy or a
    network that stopped answering: the peer's kernel ACKs, nothing comes back): `stall()`
    holds what it read, `resume()` sends it on. New connections stall too while stalled.
    `holding` is set once a stall holds data back (a peer waits on the proxy);
    `from_server` counts the bytes the server sent that were passed on."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.flowing = threading.Event()
        self.flowing.set()
        self.holding = threading.Event()
        self.from_server = 0
        super().__init__(upstream, limit=1 << 62)

    def stall(self) -> None:
        self.holding.clear()
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def _pump(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        try:
            from_server = src.getpeername()[1] == self.upstream[1]
            while data := src.recv(65536):
                while not self.flowing.wait(0.1):
                    self.holding.set()
                    if self.listener.fileno() < 0:
                        return
                dst.sendall(data)
                if from_server:
                    self.from_server += len(data)
        except OSError:
            pass
        _shut(src, dst)

    def close(self) -> None:
        self.flowing.set()
        super().close()


def _shut(*sockets: socket.socket) -> None:
    """Shut both ends down: the pump on the other direction wakes and ends too."""
    for s in sockets:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
