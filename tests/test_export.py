"""ONNX export: a valid graph with a dynamic batch, parity with PyTorch, the model card in
the file's metadata, float16, and registration in the BentoML model store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import training.export as export
from models import build_models
from models.card import CARD_KEY, CardError, ModelCard
from training.checkpoint import load_torch_generator
from training.export import ExportError, export_onnx, read_card, register_model, to_onnx_model

REPO = Path(__file__).resolve().parents[1]


def lively(generator: torch.nn.Module, card: ModelCard) -> torch.nn.Module:
    """Make a briefly trained generator's output span [-1, 1], so that a parity of 1e-4
    means something: batch-norm statistics measured at once, and a 10x last layer."""
    torch.manual_seed(0)
    with torch.no_grad():
        for module in generator.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None  # a plain average over the batches below
            if isinstance(module, torch.nn.Embedding):
                module.weight.normal_()
        generator.train()
        for _ in range(4):
            generator(*export.example_inputs(card, batch=64, seed=_))
        generator.main[-2].weight.mul_(10.0)
    return generator.eval()


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def torch_images(generator, latents: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    with torch.no_grad():
        y = torch.from_numpy(labels) if labels is not None else None
        return generator(torch.from_numpy(latents), y).numpy()


@pytest.fixture(scope="module")
def unconditional(tiny_run):
    generator, card = load_torch_generator(tiny_run)
    return lively(generator, card), card


@pytest.fixture(scope="module")
def conditional(conditional_run):
    generator, card = load_torch_generator(conditional_run)
    return lively(generator, card), card


@pytest.mark.parametrize("which", ["unconditional", "conditional"])
def test_export_is_valid_has_a_dynamic_batch_and_matches_torch(which, request, tmp_path):
    generator, card = request.getfixturevalue(which)
    path = export_onnx(generator, card, tmp_path / "generator.onnx")

    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    inputs = [i.name for i in model.graph.input]
    assert inputs == (["latents", "labels"] if card.num_classes else ["latents"])
    for value in [*model.graph.input, model.graph.output[0]]:
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [o.name for o in model.graph.output] == ["images"]

    runtime = session(path)
    rng = np.random.default_rng(0)
    for batch in (1, 5):
        latents = rng.standard_normal((batch, card.nz)).astype(np.float32)
        labels = rng.integers(0, 10, batch) if card.num_classes else None
        feed = {"latents": latents} | ({"labels": labels} if labels is not None else {})
        (images,) = runtime.run(["images"], feed)
        expected = torch_images(generator, latents, labels)
        assert images.shape == (batch, 1, 16, 16) and images.dtype == np.float32
        assert np.abs(images - expected).max() <= 1e-4
    assert expected.std() > 0.2  # not a near-constant output that any graph would match

    written = read_card(path)
    assert written.model == card.model and written.step == card.step == 12
    assert 0 <= written.quality["onnx_max_abs_error"] <= 1e-4
    props = {p.key: p.value for p in model.metadata_props}
    assert props["dcgan.precision"] == "float32" and props["dcgan.nz"] == "16"
    assert model.producer_name == "dcgan-service"


def test_conditional_onnx_follows_its_labels(conditional, tmp_path):
    generator, card = conditional
    runtime = session(export_onnx(generator, card, tmp_path / "conditional.onnx"))
    latents = np.repeat(np.random.default_rng(1).standard_normal((1, card.nz)), 4, 0)
    (images,) = runtime.run(["images"], {"latents": latents.astype(np.float32),
                                         "labels": np.array([2, 2, 5, 9])})
    assert np.array_equal(images[0], images[1])
    assert np.abs(images[0] - images[2]).max() > 0.05 and np.abs(images[2] - images[3]).max() > 0.05


def test_float16_export_runs_within_its_tolerance(unconditional, tmp_path):
    generator, card = unconditional
    path = export_onnx(generator, card, tmp_path / "fp16.onnx", fp16=True)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    weights = [init for init in model.graph.initializer if init.dims]
    assert weights and all(init.data_type == onnx.TensorProto.FLOAT16 for init in weights)
    # the interface stays float32
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert read_card(path).to_metadata()  # card readable
    assert {p.key: p.value for p in model.metadata_props}["dcgan.precision"] == "float16"
    # The card says what the parity figure covers: without a CUDA provider, ONNX Runtime
    # runs this graph in float32, so only the weights' rounding was checked.
    import onnxruntime as ort
    import torch

    parity = read_card(path).quality["onnx_parity"]
    cuda = "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available()
    assert parity["provider"] == ("CUDAExecutionProvider" if cuda else "CPUExecutionProvider")
    assert parity["arithmetic"] == ("float16" if cuda else "float32")
    assert parity["checked"].startswith("float16 weights")

    latents = np.random.default_rng(2).standard_normal((3, card.nz)).astype(np.float32)
    (images,) = session(path).run(["images"], {"latents": latents})
    error = np.abs(images - torch_images(generator, latents)).max()
    assert images.dtype == np.float32 and error <= 2e-2
    assert error > 0  # it did compute in half precision
    assert path.stat().st_size < 0.6 * len(to_onnx_model(generator, card).SerializeToString())


def test_mlp_toy_generator_exports_points(tmp_path):
    torch.manual_seed(0)
    model = {"nz": 2, "hidden": 16, "layers": 2, "out_shape": [2], "output": "linear", "pack": 1}
    generator, _ = build_models("mlp", model)
    card = ModelCard(name="ring", arch="mlp", model=model)
    path = export_onnx(generator, card, tmp_path / "ring.onnx")
    latents = np.random.default_rng(0).standard_normal((7, 2)).astype(np.float32)
    (points,) = session(path).run(["images"], {"latents": latents})
    assert points.shape == (7, 2)
    assert np.abs(points - torch_images(generator, latents)).max() <= 1e-5
    assert read_card(path).output_shape == (2,)


def test_a_parity_failure_writes_nothing(unconditional, tmp_path, monkeypatch):
    generator, card = unconditional
    where = {"provider": "CPUExecutionProvider", "arithmetic": "float32",
             "checked": "float32 weights and arithmetic"}
    monkeypatch.setattr(export, "parity_error", lambda *args, **kwargs: (0.5, where))
    with pytest.raises(ExportError, match=r"differs from PyTorch by 5.00e-01 \(> 1e-04, float32"):
        export_onnx(generator, card, tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


def test_read_card_of_an_onnx_file_without_card(unconditional, tmp_path):
    generator, card = unconditional
    model = to_onnx_model(generator, card)
    assert any(p.key == CARD_KEY for p in model.metadata_props)
    del model.metadata_props[:]
    path = tmp_path / "bare.onnx"
    onnx.save(model, str(path))
    with pytest.raises(CardError, match="bare.onnx has no model card .*dcgan export"):
        read_card(path)


def test_register_model_into_a_bentoml_store(unconditional, tmp_path):
    """In a subprocess: BentoML reads its home from the environment when first imported."""
    generator, card = unconditional
    card.name = "tiny"
    path = export_onnx(generator, card, tmp_path / "generator.onnx")
    script = textwrap.dedent(f"""
        import json, bentoml
        from training.export import read_card, register_model
        tag = register_model({str(path)!r}, read_card({str(path)!r}))
        model = bentoml.models.get("dcgan-tiny:latest")
        print(json.dumps({{"tag": tag, "file": model.path_of("generator.onnx"),
                          "labels": model.info.labels, "card": model.info.metadata["card"]}}))
    """)
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "PYTHONPATH": str(REPO),
           "BENTOML_DO_NOT_TRACK": "True"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["tag"].startswith("dcgan-tiny:")
    stored = Path(result["file"])
    assert stored.is_file() and stored.is_relative_to(tmp_path / "bentoml")
    assert stored.read_bytes() == path.read_bytes()
    assert result["labels"] == {"arch": "dcgan", "dataset": "mnist5k", "step": "12"}
    assert ModelCard.from_dict(json.loads(result["card"])).model == card.model  # JSON text
    assert callable(register_model)
