"""A loopback TCP proxy in front of the test PostgreSQL, for a fault the server cannot make
by itself: a connection that breaks after the server committed a statement and before the
client heard so.

Every byte is forwarded unchanged both ways, except that with :attr:`PgProxy.cut_after`
set to a command tag (``b"INSERT 0 "``), the first answer from the server holding it is
not forwarded: both sides of that connection are closed instead (the statement ran and, in
autocommit, is committed; the client sees only a lost connection), and the tag is cleared.
The test server speaks plain TCP on 127.0.0.1 (no TLS), so the tag can be seen.  Nothing
listens beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class PgProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.cut_after: bytes | None = None
        self.cuts = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://irctl@127.0.0.1:{self.port}/{database}"

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, from_server: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if from_server and self._cut(data):
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()

    def _cut(self, data: bytes) -> bool:
        with self._lock:
            if self.cut_after is None or self.cut_after not in data:
                return False
            self.cut_after = None
            self.cuts += 1
            return True
