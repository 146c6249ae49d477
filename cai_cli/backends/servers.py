"""Requests spread over one or more HTTP servers: bounded concurrency, retries, in-order results.

`ServerPool.run(calls)` takes a lazy stream of calls, each a function that makes its request(s)
through the `post` function it is handed, and yields their results in the order of the stream,
each as soon as it and every call before it are done. Worker threads (`--concurrency` per server)
take the calls; a call goes to the least busy server that has a free slot and is not backing off,
so no server ever has more than `--concurrency` requests in flight.

Faults are normal at scale. A timeout, a refused or dropped connection, HTTP 429 and HTTP 5xx
mark the server as failing for a while (exponential backoff from 1 s to 30 s, or the server's
own Retry-After) and the call is tried again, on another server when one is up, up to
`--retries` more times. Only then does it fail, as `RequestFailed`, raised in its place in the
order: everything before it has been yielded (and written), so `-o FILE --resume` loses nothing
done and redoes nothing. A failure that is not the network's (a bad request, a wrong API key, an
answer that is not what the API says) fails at once, without retries.

Example:

    pool = ServerPool(["http://127.0.0.1:8000/v1"], concurrency=8, timeout=60, retries=3)
    bodies = ({"model": "m", "prompt": p, "max_tokens": 8} for p in prompts)
    for answer in pool.run(partial(lambda body, post: post("/completions", body), b) for b in bodies):
        print(answer["choices"][0]["text"])
"""

from __future__ import annotations

import os
import queue
import random
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from cai_cli.backends import RequestFailed
from cai_cli.errors import CaiError, console

T = TypeVar("T")
Post = Callable[[str, dict[str, Any]], dict[str, Any]]

# Backoff after a server fails: 1, 2, 4, ... seconds, at most 30, each +-20% so that many clients
# of one server do not come back in step. With the default 8 retries a request waits about two
# minutes for a server that went away: long enough for a restart of a small server.
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
# A server's Retry-After is followed up to this many seconds.
RETRY_AFTER_MAX = 120.0
# Opening a connection takes milliseconds when the server is there; this long means it is not.
CONNECT_TIMEOUT = 10.0
# Calls read ahead per worker: enough to keep every worker busy while the oldest call finishes.
READ_AHEAD = 4
# Statuses worth another try: the server is overloaded, restarting or briefly broken.
RETRY_STATUSES = frozenset({408, 409, 425, 429})


class Retryable(Exception):
    """A failure of the network or of an overloaded server: worth another attempt."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def api_key_from_environment() -> str | None:
    """The API key: CAI_API_KEY, else OPENAI_API_KEY (servers that need none ignore it)."""
    return os.environ.get("CAI_API_KEY") or os.environ.get("OPENAI_API_KEY") or None


def parse_base_urls(values: Iterable[str]) -> list[str]:
    """The server URLs from `--base-url` values (repeated, or comma- or space-separated), each
    normalised to end in the API's version path (`http://host:8000` -> `http://host:8000/v1`)."""
    urls: list[str] = []
    for value in values:
        for part in value.replace(",", " ").split():
            url = normalise_base_url(part)
            if url not in urls:
                urls.append(url)
    if not urls:
        raise CaiError("--backend openai needs a server: --base-url URL (or CAI_BASE_URL)")
    return urls


def normalise_base_url(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise CaiError(f"--base-url {display_url(url)} is not an http(s) URL such as http://127.0.0.1:8000/v1")
    try:
        parsed.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise CaiError(f"--base-url {display_url(url)} has a bad port") from None
    path = parsed.path.rstrip("/") or "/v1"
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path, parsed.query, ""))


def display_url(url: str) -> str:
    """A URL as it may be shown: without any user:password and query (where credentials hide)."""
    try:
        parsed = urllib.parse.urlsplit(url)
        host = parsed.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parsed.port}" if parsed.port else ""
        return urllib.parse.urlunsplit((parsed.scheme, host + port, parsed.path, "", "")) or "?"
    except ValueError:
        return "(an unreadable URL)"


def backoff_delay(failures: int, jitter: float = 1.0) -> float:
    """Seconds a server is left alone after its `failures`-th failure in a row."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (max(failures, 1) - 1)) * jitter


@dataclass(eq=False)
class Server:
    """One server and what the pool knows about it."""

    url: str  # the API root, ending in /v1 or whatever path the user gave
    label: str  # the URL as shown in messages
    in_flight: int = 0
    attempts: int = 0  # requests sent, for spreading calls evenly
    failures: int = 0  # failures in a row
    down_until: float = 0.0  # time.monotonic() before which it gets no requests


class ServerPool:
    """HTTP servers of one model and the rules for sending them requests (see the module
    docstring). `api_key` is sent as a bearer token and never shown: `redact` removes it from any
    text a server sends back."""

    def __init__(self, urls: list[str], concurrency: int = 8, timeout: float = 600.0, retries: int = 8,
                 api_key: str | None = None):
        import httpx

        if concurrency < 1 or retries < 0 or timeout <= 0:
            raise CaiError("--concurrency must be at least 1, --retries at least 0 and --timeout positive")
        self.servers = [Server(url, display_url(url)) for url in urls]
        self.concurrency, self.timeout, self.retries = concurrency, timeout, retries
        self._secret = api_key
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        connections = len(urls) * (concurrency + 1)
        self.client = httpx.Client(
            headers=headers, timeout=httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT, timeout)),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections))
        self._state = threading.Condition()
        self._retrying = 0  # calls waiting to be tried again: they go first
        self.failed_attempts = 0  # over the pool's life: attempts that were retried or gave up

    # Requests ----------------------------------------------------------------------------------

    def redact(self, text: str) -> str:
        return text.replace(self._secret, "[API key]") if self._secret else text

    def post(self, server: Server, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST `body` as JSON to `server` and return the JSON answer. Raises `Retryable` for
        faults worth another attempt and `RequestFailed` for the rest."""
        return self._request(server, "POST", path, body)

    def get(self, server: Server, path: str, timeout: float | None = None) -> dict[str, Any]:
        return self._request(server, "GET", path, None, timeout)

    def _request(self, server: Server, method: str, path: str, body: dict[str, Any] | None,
                 timeout: float | None = None) -> dict[str, Any]:
        import httpx

        where = f"{server.label}{path}"
        try:
            extra = {"timeout": httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT, timeout))} if timeout else {}
            response = self.client.request(method, server.url + path, json=body, **extra)
        except httpx.TimeoutException:
            raise Retryable(f"no answer from {where} within {timeout or self.timeout:g} s") from None
        except httpx.TransportError as exc:
            raise Retryable(f"{where}: {self.redact(transport_reason(exc))}") from None
        if response.status_code == 200:
            try:
                answer = response.json()
            except ValueError:
                raise RequestFailed(f"{where} answered with something that is not JSON "
                                    f"({self.redact(response.text[:80])!r}); is it an OpenAI-compatible API?") from None
            if not isinstance(answer, dict):
                raise RequestFailed(f"{where} answered with JSON that is not an object; "
                                    "is it an OpenAI-compatible API?")
            return answer
        status = response.status_code
        message = self.redact(server_message(response))
        if status in RETRY_STATUSES or status >= 500:
            raise Retryable(f"{where}: HTTP {status} {message}".rstrip(), retry_after(response))
        hint = {401: " (set the key in CAI_API_KEY or OPENAI_API_KEY)", 403: " (does the API key allow this?)",
                404: " (is the URL the API's root, such as http://host:8000/v1?)"}.get(status, "")
        raise RequestFailed(f"{where}: HTTP {status} {message}".rstrip() + hint)

    # Running calls -----------------------------------------------------------------------------

    def run(self, calls: Iterable[Callable[[Post], T]]) -> Iterator[T]:
        """Run each call (with a `post(path, body)` bound to the server chosen for it), spread
        over the servers, and yield the results in order. A call that fails for good raises its
        `RequestFailed` in its place; the calls after it are dropped."""
        calls = iter(calls)
        workers_count = len(self.servers) * self.concurrency
        jobs: queue.SimpleQueue = queue.SimpleQueue()
        workers = [threading.Thread(target=self._work, args=(jobs,), daemon=True, name=f"cai-http-{i}")
                   for i in range(workers_count)]
        for worker in workers:
            worker.start()
        window: deque[Future] = deque()
        failed_before = self.failed_attempts
        try:
            while True:
                while len(window) < workers_count * READ_AHEAD:
                    call = next(calls, None)  # runs the caller's code: reading and planning records
                    if call is None:
                        break
                    future: Future = Future()
                    window.append(future)
                    jobs.put((call, future))
                if not window:
                    return
                yield window.popleft().result()
        finally:
            for future in window:
                future.cancel()
            for _ in workers:
                jobs.put(None)
            retried = self.failed_attempts - failed_before
            if retried:
                console.print(f"openai: {retried} failed request attempt(s) were retried or given up on",
                              markup=False, soft_wrap=True)

    def _work(self, jobs: queue.SimpleQueue) -> None:
        while (job := jobs.get()) is not None:
            call, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self.call_with_retries(call))
            except BaseException as exc:  # handed to the consumer, in order
                future.set_exception(exc)

    def call_with_retries(self, call: Callable[[Post], T]) -> T:
        """One call, tried up to 1 + `retries` times on the servers as they are free and up."""
        last = ""
        avoid: Server | None = None
        for _ in range(self.retries + 1):
            server = self._acquire(avoid)
            try:
                result = call(lambda path, body, server=server: self.post(server, path, body))
            except Retryable as exc:
                self._failed(server, exc)
                last, avoid = str(exc), server
                continue
            finally:
                self._release(server)
            self._succeeded(server)
            return result
        servers = f"{len(self.servers)} servers" if len(self.servers) > 1 else "the server"
        raise RequestFailed(f"gave up after {self.retries + 1} attempts on {servers} (--retries {self.retries}); "
                            f"last: {last}")

    def _acquire(self, avoid: Server | None) -> Server:
        """The least busy server with a free slot that is not backing off (preferring one other
        than `avoid`, where the last attempt failed), waiting until there is one. A call being
        retried goes before new calls, so a fault delays it as little as possible."""
        retrying = avoid is not None
        with self._state:
            self._retrying += retrying
            try:
                while True:
                    now = time.monotonic()
                    free = [s for s in self.servers if s.in_flight < self.concurrency and s.down_until <= now]
                    if free and (retrying or not self._retrying):
                        server = min([s for s in free if s is not avoid] or free,
                                     key=lambda s: (s.in_flight, s.attempts))
                        server.in_flight += 1
                        server.attempts += 1
                        return server
                    waits = [s.down_until - now for s in self.servers
                             if s.down_until > now and s.in_flight < self.concurrency]
                    self._state.wait(timeout=min(waits) if waits else None)
            finally:
                self._retrying -= retrying
                if retrying:
                    self._state.notify_all()

    def _release(self, server: Server) -> None:
        with self._state:
            server.in_flight -= 1
            self._state.notify_all()

    def _failed(self, server: Server, exc: Retryable) -> None:
        with self._state:
            self.failed_attempts += 1
            now = time.monotonic()
            if server.down_until > now:
                return  # one of a burst of requests that failed together: counted once
            server.failures += 1
            delay = backoff_delay(server.failures, random.uniform(0.8, 1.2))
            if exc.retry_after is not None:
                delay = max(delay, min(exc.retry_after, RETRY_AFTER_MAX))
            server.down_until = now + delay
        if server.failures == 1 or server.failures % 5 == 0:
            say(f"openai: {exc}; trying again in {delay:.1f} s")

    def _succeeded(self, server: Server) -> None:
        with self._state:
            recovered = server.failures > 0
            server.failures, server.down_until = 0, 0.0
        if recovered:
            say(f"openai: {server.label} answers again")

    def mark_down(self, server: Server, reason: str) -> None:
        """Leave a server that did not answer at start alone for a while; it gets requests again
        once its backoff is over (and keeps them if it answers)."""
        with self._state:
            server.failures = max(server.failures, 1)
            server.down_until = time.monotonic() + backoff_delay(server.failures)
        say(f"openai: {reason}; sending requests to the other servers, and to it again later")

    def close(self) -> None:
        self.client.close()


def say(message: str) -> None:
    console.print(message, markup=False, soft_wrap=True, highlight=False)


def transport_reason(exc: Exception) -> str:
    """Why a connection failed, in a few words (httpx's messages wrap the OS error)."""
    text = str(exc).strip() or type(exc).__name__
    lowered = text.lower()
    if "connection refused" in lowered or "connect call failed" in lowered:
        return "connection refused (is the server running?)"
    if "name or service not known" in lowered or "nodename nor servname" in lowered or "getaddrinfo" in lowered:
        return "unknown host"
    if "server disconnected" in lowered or "connection reset" in lowered or "peer closed" in lowered:
        return "the server closed the connection"
    return text.splitlines()[0][:200]


def server_message(response) -> str:
    """The error message a server sent, from the shapes servers use: OpenAI's and vLLM's
    {"error": {"message"}}, TGI's {"error": "..."}, FastAPI's {"detail": ...}, or plain text."""
    try:
        data = response.json()
    except ValueError:
        data = None
    message: Any = None
    if isinstance(data, dict):
        error = data.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        message = message or data.get("detail") or data.get("message")
    if message is None:
        message = response.text or response.reason_phrase or ""
    return " ".join(str(message).split())[:300]


def retry_after(response) -> float | None:
    """The server's Retry-After header in seconds (the HTTP-date form is not worth parsing)."""
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
