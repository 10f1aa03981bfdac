"""ONNX export of generators, a parity check against PyTorch, and model-store registration.

The exported graph takes `latents` (N, nz) float32, plus `labels` (N,) int64 for
class-conditional generators, and returns `images` (N, nc, H, W) in [-1, 1] (or
points for the toys), with a dynamic batch axis. The model card travels in the
file's `metadata_props`, so the service never guesses a shape. Registered generators
are named as the generation layer's store naming says (models.generation.store).
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from models.card import ModelCard
from models.generation import STORE_FILE, atomic_write, sidecar_path, store_name

OPSET = 18
PARITY_TOLERANCE = {"float32": 1e-4, "float16": 2e-2}


class ExportError(RuntimeError):
    """The export failed a check; the message is one line."""


def _input_names(card: ModelCard) -> list[str]:
    return ["latents", "labels"] if card.num_classes else ["latents"]


def example_inputs(card: ModelCard, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, card.nz, generator=generator)
    if card.num_classes:
        return latents, torch.randint(0, card.num_classes, (batch,), generator=generator)
    return (latents,)


def to_onnx_model(generator: torch.nn.Module, card: ModelCard, fp16: bool = False) -> onnx.ModelProto:
    """Trace `generator` (eval mode, CPU) into an ONNX model carrying `card`."""
    generator = generator.eval().to("cpu")
    names = _input_names(card)
    dynamic = {name: {0: "batch"} for name in names} | {"images": {0: "batch"}}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer chatter about constant folding
        torch.onnx.export(
            generator, example_inputs(card), buffer, input_names=names, output_names=["images"],
            dynamic_axes=dynamic, opset_version=OPSET, dynamo=False,
        )
    model = onnx.load_from_string(buffer.getvalue())
    if fp16:
        model = _to_float16(model)
    del model.metadata_props[:]
    props = card.to_metadata()
    props["dcgan.precision"] = "float16" if fp16 else "float32"
    onnx.helper.set_model_props(model, props)
    model.producer_name = "dcgan-service"
    onnx.checker.check_model(model, full_check=True)
    return model


def _to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Weights and arithmetic in float16 (for GPUs); inputs and outputs stay float32."""
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    graph = model.graph
    for node in graph.node:  # constants folded into attributes
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == onnx.TensorProto.FLOAT:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16)))
    latents_in = graph.input[0].name
    cast_in = onnx.helper.make_node("Cast", [latents_in], ["latents_fp16"], to=onnx.TensorProto.FLOAT16)
    for node in graph.node:
        node.input[:] = ["latents_fp16" if name == latents_in else name for name in node.input]
    out = graph.output[0].name
    for node in graph.node:
        node.output[:] = ["images_fp16" if name == out else name for name in node.output]
    cast_out = onnx.helper.make_node("Cast", ["images_fp16"], [out], to=onnx.TensorProto.FLOAT)
    nodes = [cast_in, *graph.node, cast_out]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model)


def parity_error(model: onnx.ModelProto, generator: torch.nn.Module, card: ModelCard,
                 batch: int = 8, seed: int = 1, fp16: bool = False) -> tuple[float, dict]:
    """Max abs difference between ONNX Runtime and PyTorch (float32, CPU) on random
    latents, and where it was measured.

    A float16 graph is checked on ONNX Runtime's CUDA provider when there is one: the
    CPU provider computes float16 graphs in float32, so there the figure covers the
    rounding of the weights only, not float16 arithmetic (the card says which)."""
    import onnxruntime as ort

    providers: list = ["CPUExecutionProvider"]
    if fp16 and "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available():
        from models.generation.onnx_generator import CUDA_OPTIONS

        providers.insert(0, ("CUDAExecutionProvider", CUDA_OPTIONS))
    session = ort.InferenceSession(model.SerializeToString(), providers=providers)
    inputs = example_inputs(card, batch=batch, seed=seed)
    with torch.no_grad():
        expected = generator.eval().cpu()(*inputs).numpy()
    feed = {name: tensor.numpy() for name, tensor in zip(_input_names(card), inputs)}
    (got,) = session.run(["images"], feed)
    provider = session.get_providers()[0]
    on_gpu = provider == "CUDAExecutionProvider"
    arithmetic = "float16" if fp16 and on_gpu else "float32"
    where = {"provider": provider, "arithmetic": arithmetic,
             "checked": ("float16 weights and arithmetic" if arithmetic == "float16" else
                         "float16 weights in float32 arithmetic (no CUDA provider here)" if fp16
                         else "float32 weights and arithmetic")}
    return float(np.max(np.abs(got.astype(np.float32) - expected))), where


def export_onnx(generator: torch.nn.Module, card: ModelCard, path: str | Path,
                fp16: bool = False) -> Path:
    """Export, check the graph, check parity with PyTorch, write atomically.

    Returns the path; the parity error is stored in the card's `quality` as
    `onnx_max_abs_error`, with `onnx_parity` saying what it covers, and in the file."""
    model = to_onnx_model(generator, card, fp16=fp16)
    error, where = parity_error(model, generator, card, fp16=fp16)
    tolerance = PARITY_TOLERANCE["float16" if fp16 else "float32"]
    if not error <= tolerance:
        raise ExportError(f"ONNX Runtime output differs from PyTorch by {error:.2e} (> {tolerance:.0e}"
                          f", {where['checked']} on {where['provider']})")
    card.quality = {**card.quality, "onnx_max_abs_error": error, "onnx_parity": where}
    model = to_onnx_model(generator, card, fp16=fp16)  # again, now with the parity figure in its card
    return atomic_write(path, lambda handle: handle.write(model.SerializeToString()))


def read_card(path: str | Path) -> ModelCard:
    """The model card of an ONNX file (raises CardError when it has none)."""
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    return ModelCard.from_metadata(props, source=str(path))


def export_sidecars(generator: torch.nn.Module, card: ModelCard, source: str | Path,
                    onnx_path: str | Path, directions: bool = True,
                    classes: bool = True) -> list[str]:
    """Beside a freshly exported file: its edit directions (class means too when
    `classes`: they need the evaluation classifier), and the run's encoder when
    `dcgan train-encoder` trained one for these very weights (step and EMA/raw).
    Returns one line per file written or skipped."""
    lines = []
    if directions:
        from training.directions import compute_directions, write_directions

        path = write_directions(compute_directions(generator, card, classes=classes), onnx_path)
        lines.append(f"wrote {path}")
    run = Path(source) if Path(source).is_dir() else Path(source).parent
    if (run / "encoder.pt").is_file():
        from training.encoder import export_encoder, load_encoder

        encoder, report = load_encoder(run / "encoder.pt")
        if (report.get("step"), report.get("weights")) != (card.step, card.weights):
            lines.append(f"not carrying {run / 'encoder.pt'}: it was trained for step "
                         f"{report.get('step')} ({report.get('weights')} weights), this export is "
                         f"step {card.step} ({card.weights}); train it again")
        else:
            path, error = export_encoder(encoder, card, onnx_path, report)
            lines.append(f"wrote {path} (max |onnxruntime - torch| = {error:.1e})")
    else:
        stale = sidecar_path(onnx_path, "encoder")
        if stale.is_file():  # an encoder of the file this export replaced would be refused
            stale.unlink()
    return lines


def rewrite_card(onnx_path: str | Path, card: ModelCard) -> list[str]:
    """Write `card` into an exported file in place, its graph and weights untouched, and
    point the sidecars that belonged to the file (the encoder, the directions: they
    carry its SHA-256, which the new card changes) at the new digest. For a file whose
    card must say more than its export measured (figures added to the evaluation since)
    when the run behind it is gone. Returns one line per file written."""
    import json

    from models.generation import atomic_write
    from models.generation.latent_space import ENCODER_KEY, file_digest, sidecar_path

    onnx_path = Path(onnx_path)
    before = file_digest(onnx_path)
    model = onnx.load(str(onnx_path))
    props = {p.key: p.value for p in model.metadata_props}
    props.update(card.to_metadata())
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.checker.check_model(model, full_check=True)
    atomic_write(onnx_path, model.SerializeToString())
    after = file_digest(onnx_path)
    lines = [f"wrote the card of {onnx_path}"]
    encoder_path = sidecar_path(onnx_path, "encoder")
    if encoder_path.is_file():
        encoder = onnx.load(str(encoder_path))
        meta = {p.key: p.value for p in encoder.metadata_props}
        info = json.loads(meta.get(ENCODER_KEY, "{}"))
        if info.get("generator_sha256") == before:
            info["generator_sha256"] = after
            meta[ENCODER_KEY] = json.dumps(info, sort_keys=True)
            del encoder.metadata_props[:]
            onnx.helper.set_model_props(encoder, meta)
            atomic_write(encoder_path, encoder.SerializeToString())
            lines.append(f"wrote {encoder_path} (now pointing at the new card)")
    directions_path = sidecar_path(onnx_path, "latent")
    if directions_path.is_file():
        data = json.loads(directions_path.read_text())
        if data.get("generator_sha256") == before:
            data["generator_sha256"] = after
            atomic_write(directions_path, json.dumps(data).encode())
            lines.append(f"wrote {directions_path} (now pointing at the new card)")
    return lines


def register_model(onnx_path: str | Path, card: ModelCard, name: str | None = None) -> str:
    """Copy an exported file into the BentoML model store as `dcgan-<name>` (the name
    the service looks up), with its sidecars (encoder, directions); returns the tag."""
    import shutil

    import bentoml

    tag_name = store_name(name or card.name)
    labels = {"arch": card.arch, "dataset": str(card.dataset.get("name", "")), "step": str(card.step)}
    # as JSON text: the store's metadata takes no None, and figures that do not apply
    # (an unlabelled folder's classifier accuracy, "no truncation") are None
    metadata = {"card": json.dumps(card.to_dict())}
    with bentoml.models.create(tag_name, labels=labels, metadata=metadata) as model:
        shutil.copyfile(onnx_path, model.path_of(STORE_FILE))
        for kind in ("encoder", "latent"):
            if sidecar_path(onnx_path, kind).is_file():
                shutil.copyfile(sidecar_path(onnx_path, kind),
                                sidecar_path(model.path_of(STORE_FILE), kind))
    return str(model.tag)
