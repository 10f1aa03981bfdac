"""Readiness across the workers of one server: which models are loaded in every worker.

`bentoml serve` runs `workers` processes behind one port and answers /readyz from
whichever worker accepts the connection, with that worker's own `__is_ready__`. A pod of
two workers would turn ready when the first one has loaded, and half of its requests
would then get 503. So each worker publishes the models it has ready in a small file,
and a worker reads as ready only when every worker's file lists every model.

The files live in a directory of their own per server: the temporary directory, under
the pid and start time of the server's supervisor (the workers' parent process), so two
servers on one machine, or a container restarted in the same pod with the same pid,
never read each other's files. A worker that dies leaves a file naming a dead pid,
which counts as nothing ready (a zombie not yet reaped included), until its
replacement (same worker index) writes its own; reading that dead pid tells the
replacement that it replaces one (`replacing`), so it listens only once loaded. Workers
also say when they drain (SIGTERM), so that a worker knows when the whole server stops
(service/lifecycle.py). Outside `bentoml serve` (one process, no worker index) nothing
is written.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from models.generation import atomic_write


def worker_count(service) -> int:
    """How many workers `bentoml serve` runs for `service` (its `workers` setting,
    BENTOML_CONFIG_OPTIONS included), as BentoML's own scheduler counts them."""
    try:
        from _bentoml_impl.server.allocator import ResourceAllocator

        return max(1, int(ResourceAllocator().get_worker_env(service)[0]))
    except Exception:  # not under a BentoML server, or another BentoML: one worker
        return 1


def server_directory() -> Path:
    """This server's directory of worker files (see the module docstring)."""
    parent = os.getppid()
    try:
        import psutil

        started = int(psutil.Process(parent).create_time() * 1000)
    except Exception:
        started = 0
    return Path(tempfile.gettempdir()) / "dcgan-ready" / f"{parent}-{started}"


class WorkerReadiness:
    """This worker's ready models, published for its siblings, and what they published.

    `index` is BentoML's worker index (1..workers), None outside `bentoml serve`.
    `replacing`: this worker replaces one of its index that died (its file names a dead
    process), so the server has served before and waits for it."""

    def __init__(self, workers: int, index: int | None, directory: Path | None = None) -> None:
        self.shared = index is not None and workers > 1
        self.workers, self.index = workers, index
        # One worker alone writes its file too: its replacement reads it.
        self.directory = directory or (server_directory() if index is not None else None)
        self._mine: frozenset[str] = frozenset()
        self.draining = False
        # Models load in threads of their own: one update and one write at a time, or a
        # thread could write a list that misses what another has just added.
        self._lock = threading.Lock()
        self.replacing = index is not None and self._worker(index)[1] is None
        self.publish(())  # a stale file of this index (a worker that died) is overwritten

    def publish(self, ready: Iterable[str]) -> None:
        """This worker has exactly `ready` ready."""
        with self._lock:
            self._write(frozenset(ready))

    def add(self, name: str) -> None:
        """One more model is ready in this worker."""
        with self._lock:
            self._write(self._mine | {name})

    def _write(self, ready: frozenset[str]) -> None:
        self._mine = ready
        if self.index is not None:
            body = {"pid": os.getpid(), "ready": sorted(ready), "draining": self.draining}
            atomic_write(self._file(self.index), json.dumps(body).encode())

    def drain(self) -> None:
        """This worker is shutting down (SIGTERM): it stays ready for its siblings, who
        read that it drains (`all_draining`)."""
        with self._lock:
            self.draining = True
            self._write(self._mine)

    def all_draining(self) -> bool:
        """Every other worker drains too, or is gone: the whole server is stopping."""
        for k in range(1, self.workers + 1):
            if self.shared and k != self.index:
                try:
                    data = json.loads(self._file(k).read_text())
                except (OSError, ValueError):
                    continue  # withdrawn (stopped) or never written
                pid = data.get("pid") if isinstance(data, dict) else None
                if isinstance(pid, int) and pid > 0 and not data.get("draining") and _alive(pid):
                    return False
        return True

    def ready_everywhere(self) -> frozenset[str]:
        """The models ready in every worker."""
        ready = self._mine
        if not self.shared:
            return ready
        for k in range(1, self.workers + 1):
            if k != self.index:
                ready = ready & self._read(k)
        return ready

    def _file(self, k: int) -> Path:
        return self.directory / f"worker-{k}.json"

    def _read(self, k: int) -> frozenset[str]:
        return self._worker(k)[1] or frozenset()

    def _worker(self, k: int) -> tuple[int | None, frozenset[str] | None]:
        """Worker k's pid and ready models: (None, {}) before it has written its file,
        (pid, None) when that process is gone."""
        try:
            data = json.loads(self._file(k).read_text())
            pid, ready = int(data["pid"]), frozenset(data["ready"])
        except (OSError, ValueError, KeyError, TypeError):
            return None, frozenset()
        return (pid, ready) if _alive(pid) else (pid, None)

    def lagging(self, models: Iterable[str]) -> list[str]:
        """What the other workers lack of `models`, one phrase per worker, e.g.
        "worker 2 is loading mnist" or "worker 2 (pid 41) is gone"."""
        if not self.shared:
            return []
        phrases = []
        for k in range(1, self.workers + 1):
            if k == self.index:
                continue
            pid, ready = self._worker(k)
            if ready is None:
                phrases.append(f"worker {k} (pid {pid}) is gone")
            elif pid is None:
                phrases.append(f"worker {k} is starting")
            elif lacking := sorted(set(models) - ready):
                phrases.append(f"worker {k} is loading {', '.join(lacking)}")
        return phrases

    def gone(self) -> list[int]:
        """The other workers whose process is gone (and not yet replaced)."""
        if not self.shared:
            return []
        return [k for k in range(1, self.workers + 1) if k != self.index and self._worker(k)[1] is None]

    def withdraw(self) -> None:
        """At shutdown: this worker serves nothing any more."""
        if self.index is not None:
            self._file(self.index).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Whether `pid` runs. A worker killed a moment ago stays a zombie until the
    supervisor reaps it (up to 10 s with BentoML's circus settings): that counts as gone."""
    try:
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except ImportError:
        pass
    except psutil.AccessDenied:  # alive, another user's process: trust the file
        return True
    except psutil.Error:  # NoSuchProcess: that worker is gone
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except OSError:
        return False
    return True
