"""The lock: uv.lock pins every extra, `make` installs from it only and refuses a lock that
no longer matches pyproject.toml, and the Bento's requirements are generated from it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HINT = "uv.lock is out of date with pyproject.toml: run 'make lock'"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _make(target: str, cwd: Path, **variables: str) -> subprocess.CompletedProcess:
    args = ["make", "--no-print-directory", "-s", target, f"BIN={BIN}",
            *(f"{k}={v}" for k, v in variables.items())]
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def _project_copy(tmp_path: Path) -> Path:
    for name in ("Makefile", "pyproject.toml", "uv.lock"):
        shutil.copy2(ROOT / name, tmp_path / name)
    return tmp_path


def test_the_committed_lock_matches_pyproject():
    result = _make("check-lock", ROOT)
    assert result.returncode == 0, result.stderr


def test_a_dependency_changed_without_make_lock_stops_make_with_the_hint(tmp_path):
    project = _project_copy(tmp_path)
    assert _make("check-lock", project).returncode == 0  # the copy alone is fine
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    changed = text.replace('"pillow>=10",', '"pillow>=10,<13",', 1)
    assert changed != text
    pyproject.write_text(changed)
    result = _make("check-lock", project)
    assert result.returncode != 0
    assert HINT in result.stderr
    ours = [line for line in result.stderr.splitlines() if not line.startswith("make")]
    assert ours == [ours[0]] and HINT in ours[0], "the refusal is one line (beside make's own)"
    # The install targets go through the same check: no silent re-resolve.
    result = _make("install-dev", project)
    assert result.returncode != 0 and HINT in result.stderr
    assert (project / "uv.lock").read_bytes() == (ROOT / "uv.lock").read_bytes()


def test_an_interpreter_older_than_requires_python_stops_make_in_one_line(tmp_path):
    project = _project_copy(tmp_path)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(re.sub(r'requires-python = "[^"]+"', 'requires-python = ">=3.99"',
                                pyproject.read_text()))
    result = _make("check-python", project, PY=sys.executable)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if not line.startswith("make")]
    assert len(lines) == 1 and "needs Python >= 3.99" in lines[0], result.stderr
    assert not (project / ".venv").exists()
    assert _make("check-python", ROOT, PY=sys.executable).returncode == 0


def test_the_lock_covers_every_extra_and_the_supported_pythons():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    assert lock["requires-python"] == pyproject["project"]["requires-python"]
    project = next(p for p in lock["package"] if p["name"] == "dcgan-service")
    locked_extras = set(project["optional-dependencies"])
    assert locked_extras == set(pyproject["project"]["optional-dependencies"])
    versions = {p["name"]: p["version"] for p in lock["package"]}
    for name in ("torch", "torchvision", "bentoml", "onnxruntime-gpu", "pydantic", "starlette"):
        assert name in versions, f"{name} is not in the lock"
    # The Makefile bootstraps the same uv that the dev extra locks.
    make_uv = re.search(r"^UV_VERSION := (\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert make_uv and make_uv.group(1) == versions["uv"]


@pytest.mark.parametrize("extra, path, hashes", [
    ("serving", "deploy/bento/requirements.txt", False),
    ("serving-gpu", "deploy/bento/requirements-gpu.txt", False),
    ("training", "deploy/training/requirements.txt", True),
])
def test_the_generated_requirement_files_are_the_lock(extra, path, hashes):
    result = subprocess.run(
        [str(BIN / "uv"), "export", "--frozen", "--quiet", "--no-emit-project", "--no-header",
         "--no-annotate", *([] if hashes else ["--no-hashes"]), "--extra", extra],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr

    def lines(text: str) -> list[str]:
        return [s.strip() for s in text.splitlines() if s.strip() and not s.lstrip().startswith("#")]

    locked = lines(result.stdout)
    assert locked and all("==" in r for r in locked if not r.startswith("--hash"))
    if extra.startswith("serving"):
        assert not any(r.startswith(("torch==", "torchvision==")) for r in locked)
    assert lines((ROOT / path).read_text()) == locked, f"{path} differs from uv.lock: run 'make lock'"


def test_the_training_image_installs_the_lock_only():
    dockerfile = (ROOT / "deploy/training/Dockerfile").read_text()
    assert "--require-hashes -r deploy/training/requirements.txt" in dockerfile
    assert re.search(r"pip install [^\n]*--no-deps[^\n]* \.", dockerfile)
