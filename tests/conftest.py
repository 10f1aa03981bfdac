"""Shared fixtures: tiny seeded training runs on CPU, made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


def tiny_config(run_dir: Path | str, **overrides):
    """A resolved TrainConfig that trains in about a second on one CPU core: 16x16
    images, 8 feature maps, batch 8. Defaults otherwise, so resumes are exact."""
    from training.config import TrainConfig, resolve

    options = dict(dataset="mnist5k", image_size=16, nz=16, ngf=8, ndf=8, batch_size=8,
                   steps=12, log_every=4, run_dir=str(run_dir), device="cpu", threads=1)
    return resolve(TrainConfig(**{**options, **overrides}))


@pytest.fixture(scope="session", autouse=True)
def classifier_cache(tmp_path_factory):
    """Feature classifiers trained by tests go to a temporary cache, not the user's."""
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("classifiers")
        patch.setenv("DCGAN_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def make_tiny_config():
    """The `tiny_config(run_dir, **overrides)` factory, for tests that train."""
    return tiny_config


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run directory of an unconditional MNIST-5k generator trained for 12 steps."""
    from training.loop import train

    return train(tiny_config(tmp_path_factory.mktemp("tiny") / "run"), progress=False)


@pytest.fixture(scope="session")
def conditional_run(tmp_path_factory) -> Path:
    """A run directory of a class-conditional MNIST-5k generator (10 classes)."""
    from training.loop import train

    config = tiny_config(tmp_path_factory.mktemp("conditional") / "run", conditional=True)
    return train(config, progress=False)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    """A tiny class-conditional generator exported to ONNX (random weights, seeded)."""
    from test_service_runtime import export_tiny

    return export_tiny(tmp_path_factory.mktemp("models") / "tiny.onnx")


@pytest.fixture(scope="module")
def client(tiny_onnx):
    """The service, in-process, serving `tiny_onnx` with the default settings."""
    from test_service_runtime import serving_app

    with pytest.MonkeyPatch.context() as monkeypatch:
        with serving_app(monkeypatch, tiny_onnx) as client:
            yield client
