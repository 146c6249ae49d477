"""A real HTTP server in front of a real OpenAI-compatible server, misbehaving on purpose.

It forwards every request to the server behind it and passes the answer back, except that it
can answer the first completion requests with given error statuses (500, 429, ...), strip the
log-probabilities from completions (as a server without them does), or demand an API key and
echo a wrong one back in its error (as a careless server does). It counts what it saw.

    with FaultProxy(server.url, failures=[500] * 3 + [429] * 2) as proxy:
        run_cai("sample", "--base-url", proxy.url, ...)
        assert proxy.failed == 5
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


class FaultProxy:
    def __init__(self, upstream: str, failures: list[int] | None = None, retry_after: str | None = None,
                 drop_logprobs: bool = False, require_key: str | None = None):
        self.upstream = upstream.rstrip("/")
        if self.upstream.endswith("/v1"):
            self.upstream = self.upstream[: -len("/v1")]
        self.failures = list(failures or [])
        self.retry_after = retry_after
        self.drop_logprobs = drop_logprobs
        self.require_key = require_key
        self.lock = threading.Lock()
        self.completions = 0  # completion requests seen
        self.failed = 0  # answered with an error status on purpose
        self.forwarded = 0
        self.client = httpx.Client(timeout=600)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler_class())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def handler_class(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the client expects of a real server

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                self.relay(b"")

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.relay(body)

            def relay(self, body: bytes):
                if proxy.require_key is not None:
                    given = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                    if given != proxy.require_key:
                        return self.answer(401, {"error": {"message": f"Incorrect API key provided: {given}"}})
                if self.path.endswith("completions"):
                    with proxy.lock:
                        proxy.completions += 1
                        status = proxy.failures.pop(0) if proxy.failures else None
                        proxy.failed += status is not None
                    if status is not None:
                        headers = {"Retry-After": proxy.retry_after} if status == 429 and proxy.retry_after else {}
                        return self.answer(status, {"error": {"message": f"injected fault {status}"}}, headers)
                try:
                    response = proxy.client.request(self.command, proxy.upstream + self.path, content=body,
                                                    headers={"Content-Type": "application/json"})
                except httpx.TransportError:
                    return self.answer(502, {"error": {"message": "upstream unreachable"}})
                with proxy.lock:
                    proxy.forwarded += 1
                content = response.content
                if proxy.drop_logprobs and self.path.endswith("completions") and response.status_code == 200:
                    data = json.loads(content)
                    for choice in data.get("choices", []):
                        choice["logprobs"] = None
                    content = json.dumps(data).encode()
                self.answer_bytes(response.status_code, content)

            def answer(self, status: int, data: dict, headers: dict | None = None):
                self.answer_bytes(status, json.dumps(data).encode(), headers)

            def answer_bytes(self, status: int, content: bytes, headers: dict | None = None):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(content)

        return Handler

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.client.close()
