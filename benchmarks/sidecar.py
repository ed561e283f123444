"""A stand-in for azureml-ai-monitoring's sidecar: a loopback HTTP server that takes its POSTs.

It parses each payload (a JSON list of records, as the SDK sends) and counts rows, and answers
``GET /count`` with the total. A real sidecar does more (it writes to storage), so rows/s measured
against this one is an upper bound for the SDK.
"""
from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    rows = 0
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        count = len(json.loads(body))
        with Handler.lock:
            Handler.rows += count
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        payload = json.dumps({"rows": Handler.rows}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()
