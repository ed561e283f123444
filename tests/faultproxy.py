"""An HTTP proxy on loopback between the blob sink and Azurite that injects faults on request.

Faults apply to requests matching a predicate (method, path with query):
- ``fail(n, status)``: answer ``status`` without forwarding, n times;
- ``drop_response(n)``: forward (the storage applies it), then reset the connection: an ambiguous failure;
- ``reset(n)``: reset the connection without forwarding;
- ``stall(seconds, n)``: wait before forwarding;
- ``down(seconds)``: reset every request for a while (storage unreachable).
"""
from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, List, Optional, Tuple

Match = Callable[[str, str], bool]


def is_append_block(method: str, path: str) -> bool:
    return method == "PUT" and "comp=appendblock" in path


class _Fault:
    def __init__(self, kind: str, count: int, match: Match, status: int = 503, seconds: float = 0.0,
                 error_code: str = "") -> None:
        self.kind, self.count, self.match, self.status, self.seconds = kind, count, match, status, seconds
        self.error_code = error_code


class FaultProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._faults: List[_Fault] = []
        self._lock = threading.Lock()
        self._down_until = 0.0
        self.injected: List[Tuple[str, str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._take(self.command, self.path)
                if time.monotonic() < proxy._down_until:
                    return self._reset()
                if fault is not None:
                    proxy.injected.append((fault.kind, self.command, self.path))
                    if fault.kind == "fail":
                        code = [("x-ms-error-code", fault.error_code)] if fault.error_code else []
                        return self._send(fault.status, [("content-length", "0"), *code], b"")
                    if fault.kind == "reset":
                        return self._reset()
                    if fault.kind == "stall":
                        time.sleep(fault.seconds)
                status, headers, payload = proxy._forward(self.command, self.path, self.headers, body)
                if fault is not None and fault.kind == "drop_response":
                    return self._reset()
                self._send(status, headers, payload)

            def _send(self, status: int, headers, payload: bytes) -> None:
                self.send_response_only(status)
                head = self.command == "HEAD"  # keep the upstream length: it is the blob's size
                for name, value in headers:
                    if name.lower() not in ("transfer-encoding", "connection") and (
                            head or name.lower() != "content-length"):
                        self.send_header(name, value)
                if not head:
                    self.send_header("content-length", str(len(payload)))
                self.end_headers()
                if not head:
                    self.wfile.write(payload)

            def _reset(self) -> None:
                self.close_connection = True
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "FaultProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _take(self, method: str, path: str) -> Optional[_Fault]:
        with self._lock:
            for fault in self._faults:
                if fault.count > 0 and fault.match(method, path):
                    fault.count -= 1
                    return fault
        return None

    def _forward(self, method: str, path: str, headers, body: bytes):
        connection = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        try:
            forwarded = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection")}
            connection.request(method, path, body=body, headers=forwarded)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def fail(self, count: int, status: int = 503, match: Match = is_append_block, error_code: str = "") -> None:
        """The next ``count`` matching requests answered ``status`` (with Azure's ``x-ms-error-code``, if given),
        never forwarded."""
        self._add(_Fault("fail", count, match, status=status, error_code=error_code))

    def drop_response(self, count: int, match: Match = is_append_block) -> None:
        self._add(_Fault("drop_response", count, match))

    def reset(self, count: int, match: Match = is_append_block) -> None:
        self._add(_Fault("reset", count, match))

    def stall(self, seconds: float, count: int, match: Match = is_append_block) -> None:
        self._add(_Fault("stall", count, match, seconds=seconds))

    def down(self, seconds: float) -> None:
        self._down_until = time.monotonic() + seconds

    def up(self) -> None:
        self._down_until = 0.0

    def pending_faults(self) -> int:
        with self._lock:
            return sum(f.count for f in self._faults)
