"""The Bento: `bentoml build` of bentofile.yaml (and its GPU variant) into a throwaway
BentoML home holding a tiny registered generator, then what ops will ship from it:
serving-only pinned requirements, a generated Dockerfile that runs as a non-root user,
the model packed inside, and only the code the service imports."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CPU_BENTOFILE = ROOT / "bentofile.yaml"
GPU_BENTOFILE = ROOT / "deploy" / "bento" / "bentofile.gpu.yaml"
TRAINING_ONLY = {"torch", "torchvision", "torchmetrics", "onnx", "onnxscript", "tensorboard",
                 "typer", "scikit-learn", "scipy", "mlxtend"}

REGISTER_TINY_GENERATOR = """
import hashlib, sys
from dataclasses import asdict
from models import build_models
from models.card import ModelCard
from training.export import export_onnx, register_model
generator, _ = build_models("dcgan", {"nz": 8, "ngf": 8, "ndf": 8, "nc": 1,
                                      "image_size": 16, "num_classes": 10})
card = ModelCard(name="mnist", model=asdict(generator.config))
path = export_onnx(generator, card, sys.argv[1])
print(register_model(path, card))
print(hashlib.sha256(open(path, "rb").read()).hexdigest())
"""


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;@]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 180) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args[:4])} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _checkout_copy(dest: Path) -> Path:
    """The files a fresh clone would have (tracked, plus new files git does not ignore):
    the build context ops use, without a virtual environment for the build to walk."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, timeout=60)
    if listed.returncode != 0:
        return ROOT  # not a git checkout: build in place
    for name in listed.stdout.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Register a tiny dcgan-mnist, build both Bentos and export the CPU one."""
    home = tmp_path_factory.mktemp("bentoml-home")
    context = _checkout_copy(tmp_path_factory.mktemp("build-context"))
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    env.pop("DCGAN_MODEL", None)
    model_tag, model_sha = _run(
        [sys.executable, "-c", REGISTER_TINY_GENERATOR, str(home / "generator.onnx")], context, env
    ).split()[-2:]
    bentoml = [sys.executable, "-m", "bentoml"]
    cpu_tag = _run([*bentoml, "build", "-o", "tag", "."], context, env).split()[-1]
    gpu_tag = _run([*bentoml, "build", "-o", "tag", "-f",
                    str(context / GPU_BENTOFILE.relative_to(ROOT)), "."], context, env).split()[-1]
    archive = home / "dcgan-service.bento"
    _run([*bentoml, "export", cpu_tag.removeprefix("__tag__:"), str(archive)], context, env)

    def bento_dir(tag: str) -> Path:
        name, version = tag.removeprefix("__tag__:").split(":")
        return home / "bentos" / name / version

    return {"cpu": bento_dir(cpu_tag), "gpu": bento_dir(gpu_tag), "archive": archive,
            "model_tag": model_tag, "model_sha": model_sha}


def _locked(extra: str) -> list[str]:
    """An extra and everything it pulls in, as uv.lock pins them."""
    uv = Path(sys.executable).with_name("uv")
    result = subprocess.run([str(uv if uv.exists() else "uv"), "export", "--frozen", "--quiet",
                             "--no-emit-project", "--no-hashes", "--no-header", "--no-annotate",
                             "--extra", extra],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return _requirement_lines(result.stdout)


def _requirement_lines(text: str) -> list[str]:
    """Requirement lines, normalised (BentoML rewrites the markers' quotes)."""
    from packaging.requirements import Requirement

    return sorted(str(Requirement(line.strip())) for line in text.splitlines()
                  if line.strip() and not line.lstrip().startswith("#"))


@pytest.mark.parametrize("variant, extra, path", [
    ("cpu", "serving", "deploy/bento/requirements.txt"),
    ("gpu", "serving-gpu", "deploy/bento/requirements-gpu.txt"),
])
def test_bento_requirements_are_the_locked_serving_extra_without_torch(built, variant, extra, path):
    locked = _locked(extra)
    names = {_name(r) for r in locked}
    serving = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["serving"]
    assert {_name(r) for r in serving} <= names
    assert not names & TRAINING_ONLY, "the serving extra pulls in a training-only package"
    assert all("==" in r for r in locked), "every locked requirement is pinned with =="
    hint = f"the {variant} Bento's requirements differ from uv.lock: run 'make lock' and commit"
    assert _requirement_lines((ROOT / path).read_text()) == locked, hint
    shipped = _requirement_lines((built[variant] / "env/python/requirements.txt").read_text())
    # `bentoml build` appends its own pin; it must be the locked version.
    bentoml_pin = next(r.split(";")[0] for r in locked if _name(r) == "bentoml")
    extra_lines = [r for r in shipped if r not in locked]
    assert extra_lines in ([], [bentoml_pin]), f"{extra_lines}: {hint}"
    assert [r for r in shipped if r in locked] == locked, hint


def test_the_gpu_bento_carries_the_cuda_major_onnxruntime_was_built_for():
    """onnxruntime-gpu's CUDA provider needs the CUDA runtime and cuDNN it was built
    against; a base image or wheels of another CUDA major leave it unable to load."""
    from onnxruntime.capi import build_and_package_info

    locked = {_name(r): r.split(";")[0].partition("==")[2] for r in _locked("serving-gpu")}
    assert locked["onnxruntime-gpu"] == build_and_package_info.__version__, (
        "read the build info from the locked onnxruntime-gpu")
    cuda_major = build_and_package_info.cuda_version.split(".")[0]
    assert locked["nvidia-cuda-runtime"].split(".")[0] == cuda_major
    assert f"nvidia-cudnn-cu{cuda_major}" in locked
    assert "nvidia-cublas" in locked
    gpu = yaml.safe_load(GPU_BENTOFILE.read_text())
    assert "cuda_version" not in gpu["docker"], "BentoML's CUDA bases are not CUDA " + cuda_major


def _instructions(dockerfile: Path, keyword: str) -> list[str]:
    return [line.split(None, 1)[1].strip() for line in dockerfile.read_text().splitlines()
            if line.upper().startswith(keyword + " ")]


def test_generated_dockerfiles_use_the_debian_python_base_and_a_non_root_user(built):
    for variant, base in (("cpu", r"python:3\.11-slim"), ("gpu", r"python:3\.11-slim")):
        dockerfile = built[variant] / "env/docker/Dockerfile"
        assert dockerfile.is_file(), f"{variant}: no generated Dockerfile"
        assert re.match(base, _instructions(dockerfile, "FROM")[0]), _instructions(dockerfile, "FROM")
        users = _instructions(dockerfile, "USER")
        assert users and users[-1] not in ("root", "0"), f"{variant}: runs as {users}"
        # deploy/base/deployment.yaml sets runAsUser to this uid: the image's USER is a
        # name, which the kubelet cannot check against runAsNonRoot.
        assert "ARG BENTO_USER_UID=1034" in dockerfile.read_text()


def test_the_images_cap_glibc_malloc_arenas(built):
    # Uncapped, glibc keeps up to 8 arenas per core, one per allocating thread.
    for variant in ("cpu", "gpu"):
        bento = yaml.safe_load((built[variant] / "bento.yaml").read_text())
        envs = {env["name"]: env.get("value") for env in bento["envs"]}
        assert envs["MALLOC_ARENA_MAX"] == "2", variant
        dockerfile = (built[variant] / "env/docker/Dockerfile").read_text()
        assert "ARG MALLOC_ARENA_MAX=2" in dockerfile, variant
        assert "ENV MALLOC_ARENA_MAX=$MALLOC_ARENA_MAX" in dockerfile, variant


def test_the_generator_is_packed_in_the_exported_bento(built):
    name, version = built["model_tag"].split(":")
    bento = yaml.safe_load((built["cpu"] / "bento.yaml").read_text())
    assert [m["tag"] for m in bento["models"]] == [built["model_tag"]]
    with tarfile.open(built["archive"]) as archive:
        member = archive.extractfile(f"./models/{name}/{version}/generator.onnx")
        assert member is not None
        assert hashlib.sha256(member.read()).hexdigest() == built["model_sha"]


def test_the_bento_carries_only_the_code_the_service_imports(built):
    src = built["cpu"] / "src"
    files = {p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()}
    # All of the service package (code and the page's static files), and the torch-free
    # part of models: latent, card and the generation layer (all of its modules).
    service_files = {p.relative_to(ROOT).as_posix() for p in (ROOT / "service").rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts}
    assert "service/service.py" in service_files
    generation = {p.relative_to(ROOT).as_posix() for p in (ROOT / "models/generation").rglob("*.py")}
    assert "models/generation/__init__.py" in generation
    missing = (service_files | generation) - files
    assert not missing, f"bentofile.yaml's include list leaves out {sorted(missing)}"
    for needed in ("models/__init__.py", "models/latent.py", "models/card.py"):
        assert needed in files
    unwanted = [f for f in files
                if f.startswith(("training/", "tests/", "deploy/", "bench/", ".venv/"))
                or f in ("models/dcgan.py", "models/mlp.py") or f.endswith((".onnx", ".pt"))]
    assert not unwanted
    bento = yaml.safe_load((built["cpu"] / "bento.yaml").read_text())
    assert bento["service"] == "service.service:DCGAN"


def test_gpu_bentofile_differs_from_the_cpu_one_only_in_name_and_requirements():
    cpu = yaml.safe_load(CPU_BENTOFILE.read_text())
    gpu = yaml.safe_load(GPU_BENTOFILE.read_text())
    assert cpu["python"].pop("requirements_txt") == "deploy/bento/requirements.txt"
    assert gpu["python"].pop("requirements_txt") == "deploy/bento/requirements-gpu.txt"
    for key in ("name", "description", "labels"):
        cpu.pop(key), gpu.pop(key)
    assert gpu == cpu
