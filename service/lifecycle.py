"""A worker's life around its requests: how it stops, why it is not ready, and one line
in the log when a worker dies.

Shutdown. `bentoml serve` runs each worker as a uvicorn server under a circus
supervisor, which passes SIGTERM on to every worker. uvicorn alone closes its copy of
the listening socket and every idle kept-alive connection at once, so a request already
on its way over such a connection was reset, and new connections waited on the
supervisor's copy of the socket with no worker left to accept them. Here SIGTERM first
*drains* the worker (`Lifecycle`): /readyz answers 503 "draining" at once; every new
request gets 503 with `Connection: close` and `Retry-After` (a clean refusal, which a
client or proxy may retry elsewhere), every response closes its connection, and the
requests in flight run to their end. After `DCGAN_DRAIN_MS`, once none is in flight,
and when every worker drains (the server stops, not one worker: the readiness files
say), the shared listening socket stops listening, so that a new connection is refused
at once instead of queueing to be reset; then uvicorn's own graceful shutdown takes
over: close the (now idle) connections, run the shutdown hooks, exit. A second SIGTERM changes nothing (the
supervisor sends one after the process group's); SIGINT is left to uvicorn (Ctrl+C
twice still forces). How long a body may take is bounded too (the guard,
`DCGAN_BODY_TIMEOUT_MS`), so a client that never finishes one cannot hold the shutdown.

Readiness: /readyz answers 503 with the reason in words ("draining", "model mnist
loading", "worker 2 (pid 41) is gone": `reason()`, None when ready) instead of BentoML's
generic text; a ready worker's /readyz is BentoML's own.

A worker that dies (SIGKILL, the OOM killer, a crash): only the supervisor sees its exit
status, and it said nothing. The supervisor imports the service to read it, and then
`log_worker_deaths` adds circus hooks to the workers' watcher: one line naming the
worker, its pid, the signal or exit code, and whether it is being restarted. It also
has the supervisor look at its workers as soon as one exits (SIGCHLD), not at its next
10-second round, so the replacement starts at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable

from service.guard import error_body
from service.readiness import WorkerReadiness

logger = logging.getLogger("bentoml.dcgan")

# Paths that stay served while draining (probes and scrapes), and are not requests to wait
# for; the readiness probes among them (BentoML's, the Open Inference Protocol's) answer 503.
HEALTH = frozenset({"/livez", "/healthz", "/readyz", "/metrics", "/v2/health/live",
                    "/v2/health/ready"})
READINESS = frozenset({"/readyz", "/v2/health/ready"})


class Lifecycle:
    """ASGI middleware: drains on SIGTERM (see the module docstring) and answers /readyz's
    503 with `reason()`. The handler is installed when the server starts (the ASGI
    lifespan), over uvicorn's own, in the main thread only (tests' in-process clients
    run the app in another thread, and keep their own shutdown)."""

    def __init__(self, app, *, drain_s: float, reason: Callable[[], str | None],
                 readiness: Callable[[], WorkerReadiness | None] = lambda: None) -> None:
        self.app = app
        self.drain_s = drain_s
        self.reason = reason
        self.readiness = readiness
        self.draining = False
        self.in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous = None
        self._drainer: asyncio.Task | None = None  # held: the loop keeps only weak references

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            self._install()
            return await self.app(scope, receive, send)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "").rstrip("/") or "/"
        if path in READINESS:
            reason = ("draining: the server is shutting down" if self.draining
                      else self.reason() if path == "/readyz" else None)
            if reason is not None:
                return await _answer(send, 503, f"{reason}\n".encode(), b"text/plain; charset=utf-8",
                                     close=self.draining)
        if path in HEALTH:
            return await self.app(scope, receive, self._closing(send))
        if self.draining:
            body = json.dumps(error_body("the server is shutting down: retry, on another "
                                         "connection")).encode()
            return await _answer(send, 503, body, b"application/json", close=True)
        self.in_flight += 1
        try:
            await self.app(scope, receive, self._closing(send))
        finally:
            self.in_flight -= 1

    def _closing(self, send):
        """`send`, adding `Connection: close` to a response that starts while draining."""

        async def closing_send(message) -> None:
            if message["type"] == "http.response.start" and self.draining:
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        return closing_send

    # --- SIGTERM -------------------------------------------------------------------------
    def _install(self) -> None:
        if self._loop is not None or threading.current_thread() is not threading.main_thread():
            return
        self._loop = asyncio.get_running_loop()
        self._previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, sig: int, frame) -> None:
        # A signal handler: set the flag (so /readyz turns 503 at once) and leave the rest
        # to the event loop; a second SIGTERM while draining changes nothing.
        if self.draining:
            return
        self.draining = True
        self._loop.call_soon_threadsafe(self._start_draining, sig)

    def _start_draining(self, sig: int) -> None:
        self._drainer = self._loop.create_task(self._drain(sig))

    async def _drain(self, sig: int) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        if (readiness := self.readiness()) is not None:
            readiness.drain()
        logger.info("worker pid %d: SIGTERM, draining: /readyz 503, new requests 503 with "
                    "Connection: close, %d in flight", os.getpid(), self.in_flight)
        while loop.time() - start < self.drain_s or self.in_flight:
            await asyncio.sleep(0.02)
        logger.info("worker pid %d: drained after %.2f s, closing its connections",
                    os.getpid(), loop.time() - start)
        if readiness is not None and readiness.all_draining():
            # The whole server stops: stop listening on the socket every worker (and the
            # supervisor) shares, so that a new connection is refused at once instead of
            # waiting in its queue, unaccepted, to be reset when the supervisor exits.
            # The connections already accepted get their 503 before uvicorn closes them.
            _stop_listening()
            await asyncio.sleep(0.2)
        previous = self._previous
        if callable(previous):  # uvicorn's handler: its graceful shutdown
            previous(sig, None)
        else:
            signal.signal(sig, previous)
            signal.raise_signal(sig)


def _stop_listening() -> None:
    """shutdown(SHUT_RD) on this process's listening TCP sockets: on Linux the socket
    leaves the listening state for every process that holds it, and pending connections
    are refused; a worker started later on it listens again."""
    try:
        import psutil

        listeners = [c.fd for c in psutil.Process().net_connections("inet")
                     if c.status == psutil.CONN_LISTEN and c.fd >= 0]
    except Exception:  # no psutil, or no permission to list: leave it to uvicorn
        return
    for fd in listeners:
        try:
            with socket.socket(fileno=os.dup(fd)) as listener:
                listener.shutdown(socket.SHUT_RD)
        except OSError:
            pass


async def _answer(send, status: int, body: bytes, content_type: bytes, *, close: bool) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if status == 503:
        headers.append((b"retry-after", b"1"))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# --- worker deaths, seen from the supervisor ----------------------------------------------

def log_worker_deaths() -> None:
    """In `bentoml serve`'s supervisor: one log line when a worker dies on its own (not
    while the server stops), with its index, pid, signal or exit code, and whether circus
    restarts it. The hooks go on every watcher made from now on (BentoML makes the
    workers' watcher after importing the service); elsewhere this does nothing."""
    try:
        from circus.watcher import Watcher
    except ImportError:
        return
    if getattr(Watcher.__init__, "_logs_deaths", False):
        return
    original = Watcher.__init__

    def __init__(self, *args, **kwargs) -> None:
        original(self, *args, **kwargs)
        indices: dict[int, int] = {}

        def before_reap(watcher, process_pid, **_) -> bool:
            process = watcher.processes.get(process_pid)
            if process is not None:
                indices[process_pid] = process.wid
            return True

        def after_reap(watcher, process_pid, exit_code=None, **_) -> bool:
            index = indices.pop(process_pid, "?")
            if watcher.is_stopping() or watcher.is_stopped() or getattr(watcher.arbiter, "_stopping", False):
                return True
            logger.error("worker %s (pid %s) died %s; %s", index, process_pid, _how(exit_code),
                         "restarting it" if watcher.respawn else
                         "not restarted (BentoML in a container: its /livez fails instead)")
            return True

        self.hooks.setdefault("before_reap", before_reap)
        self.hooks.setdefault("after_reap", after_reap)
        self.hooks.setdefault("before_start", _look_when_a_child_exits)

    __init__._logs_deaths = True
    Watcher.__init__ = __init__


def _look_when_a_child_exits(watcher, arbiter, **_) -> bool:
    """A `before_start` hook (in the supervisor's event loop): BentoML's supervisor looks
    at its workers every 10 s (circus' check_delay), so a dead worker waited up to 10 s
    to be noticed, logged and replaced. On SIGCHLD, look now (unless the server is
    stopping or the supervisor is busy with a command)."""

    def manage() -> None:
        if not (arbiter._stopping or arbiter._restarting or arbiter._exclusive_running_command):
            arbiter.manage_watchers()

    try:
        asyncio.get_event_loop().add_signal_handler(signal.SIGCHLD, manage)
    except (RuntimeError, ValueError, NotImplementedError):  # not the main thread's loop
        pass
    return True


def _how(exit_code: int | None) -> str:
    if exit_code is None:
        return "(exit status unknown)"
    if exit_code < 0:
        try:
            return f"from {signal.Signals(-exit_code).name}"
        except ValueError:
            return f"from signal {-exit_code}"
    return f"with exit code {exit_code}"
