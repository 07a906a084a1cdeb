"""A TCP proxy that makes a real server misbehave on purpose, for retry tests.

    with FlakyProxy(("127.0.0.1", s3_port), fail=3, mode="slowdown") as proxy:
        endpoint = proxy.endpoint           # point the client here
        ...                                 # the first 3 connections get `503 SlowDown`, the rest reach the server
        assert proxy.failed == 3

Modes for the failing connections: "slowdown" (503 + S3 SlowDown XML), "500" (500 + InternalError XML),
"reset" (read the request, then drop the connection without answering). Healthy connections are piped
byte-for-byte, so request signatures (which cover the Host header) stay valid. `cut_after=N` breaks the next
healthy connection after N bytes of response (a download dying midway); `proxy.cuts` counts those.
"""

from __future__ import annotations

import socket
import threading
from typing import Self

_ERRORS = {
    "slowdown": (503, "Service Unavailable", "SlowDown", "Please reduce your request rate."),
    "500": (500, "Internal Server Error", "InternalError", "We encountered an internal error."),
}


class FlakyProxy:
    def __init__(
        self, upstream: tuple[str, int], *, fail: int = 0, mode: str = "slowdown", cut_after: int | None = None
    ):
        if mode not in (*_ERRORS, "reset"):
            raise ValueError(f"mode must be one of {[*_ERRORS, 'reset']}, got {mode!r}")
        self.upstream = upstream
        self.fail = fail  # connections still to fail
        self.failed = 0  # connections failed so far
        self.mode = mode
        self.cut_after = cut_after  # consumed by the next healthy connection
        self.cuts = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"127.0.0.1:{self.port}"
        self._closed = False

    def start(self) -> Self:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                failing = self.fail > 0
                if failing:
                    self.fail -= 1
                    self.failed += 1
                    args = (conn,)
                else:
                    args = (conn, self.cut_after)
                    self.cut_after = None
            target = self._refuse if failing else self._pipe
            threading.Thread(target=target, args=args, daemon=True).start()

    def _refuse(self, conn: socket.socket) -> None:
        with conn:
            _read_request(conn)  # the whole request, so the client is listening when we answer
            if self.mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                return  # RST on close
            status, reason, code, message = _ERRORS[self.mode]
            body = (
                f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}'
                f"</Message><Resource>/</Resource><RequestId>flaky</RequestId></Error>"
            ).encode()
            conn.sendall(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )

    def _pipe(self, conn: socket.socket, cut_after: int | None = None) -> None:
        try:
            up = socket.create_connection(self.upstream)
        except OSError:
            conn.close()
            return

        def copy(src: socket.socket, dst: socket.socket, limit: int | None = None) -> None:
            sent = 0
            try:
                while data := src.recv(1 << 16):
                    if limit is not None and sent + len(data) > limit:
                        dst.sendall(data[: limit - sent])
                        with self._lock:
                            self.cuts += 1
                        return
                    dst.sendall(data)
                    sent += len(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        t = threading.Thread(target=copy, args=(up, conn, cut_after), daemon=True)
        t.start()
        copy(conn, up)
        t.join()
        conn.close()
        up.close()


def _read_request(conn: socket.socket) -> None:
    """Read one HTTP request (head + Content-Length body) from `conn`."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(1 << 16)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(1 << 16)
        if not chunk:
            return
        body += chunk
