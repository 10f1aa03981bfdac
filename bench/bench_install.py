"""The README's two commands on a clean clone: install time, time to a ready service,
time of the test run, and the size of what they install.

Clones the committed HEAD into a temporary folder (what a new user gets), then times
`make install-serving`, `make serve` until /readyz answers 200 (on a free loopback port),
and, with --test, `make test` end to end. --cold empties pip's and uv's caches for the
run (a fresh machine); without it the machine's caches are used (warm).

    python bench/bench_install.py [--cold] [--test] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _timed(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return seconds


def _du(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True,
                              check=True).stdout.split()[0])


def _serve_until_ready(clone: Path, env: dict[str, str], timeout: float = 300) -> float:
    port = _free_port()
    start = time.perf_counter()
    server = subprocess.Popen(["make", "serve", f"PORT={port}"], cwd=clone, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        while time.perf_counter() - start < timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - start
            except OSError:
                pass
            if server.poll() is not None:
                sys.exit("make serve exited before the service was ready")
            time.sleep(0.25)
        sys.exit(f"the service was not ready after {timeout:.0f} s")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="empty pip and uv caches")
    parser.add_argument("--test", action="store_true", help="also time `make test`")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()

    figures: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                     "python": platform.python_version(), "cold": args.cold}
    with tempfile.TemporaryDirectory(prefix="dcgan-clone-") as tmp:
        clone = Path(tmp) / "dcgan-service"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = {**os.environ, "BENTOML_HOME": str(Path(tmp) / "bentoml"),
               "BENTOML_DO_NOT_TRACK": "true"}
        if args.cold:
            env["PIP_CACHE_DIR"] = str(Path(tmp) / "pip-cache")
            env["UV_CACHE_DIR"] = str(Path(tmp) / "uv-cache")
        figures["install_serving_s"] = round(_timed(["make", "install-serving"], clone, env), 1)
        figures["serving_env_mb"] = round(_du(clone / ".venv") / 1e6)
        figures["serve_until_ready_s"] = round(_serve_until_ready(clone, env), 1)
        if args.test:
            figures["make_test_s"] = round(_timed(["make", "test"], clone, env), 1)
            figures["full_env_mb"] = round(_du(clone / ".venv") / 1e6)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
