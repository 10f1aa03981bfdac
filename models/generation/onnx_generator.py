"""An exported generator opened with ONNX Runtime: `OnnxGenerator(path).generate(latents)`.

Opening reads the model card from the file's metadata and checks the graph against it
(inputs `latents` [+ `labels`], output `images` of the card's shape), so a file whose
card lies is refused at once rather than answering with wrong shapes later.

Execution provider: `device="cuda"` demands CUDA: when ONNX Runtime cannot use it the
generator is refused with the reason (a service asked for a GPU must not turn ready on
the CPU); `"cpu"` never uses it; `"auto"` uses it when ONNX Runtime has it and a GPU is
present, else the CPU, and says why in one log line. The CUDA provider runs with cuDNN's
heuristic algorithm choice (no exhaustive search on the first call of each batch size)
and TF32 off, so that a seed gives the same pixels whatever batch it is computed in.
CUDA and cuDNN libraries installed as NVIDIA's pip wheels (the GPU Bento) are loaded
with `onnxruntime.preload_dlls()` first.

Intra-op threads are given by the caller, or detected from the CPUs this process may
run on, capped by a cgroup CPU quota; no environment variable is read here (the
service's settings pass theirs in).

Warm-up runs the batch sizes the caller will use and checks what comes out against the
card: shape, finite values, and for images the tanh range. A file whose graph has
dynamic output dimensions under a copied card fails here, not on the first request.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.card import CardError, ModelCard
from models.generation.errors import ModelLoadError

logger = logging.getLogger("dcgan.generation")

DEVICES = ("auto", "cpu", "cuda")


def cpu_threads() -> int:
    """The CPUs we may run on, capped by a cgroup CPU quota (a pod limited to 2 CPUs on
    a 64-core node gets 2)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:  # cgroup v2: "<quota> <period>" or "max <period>"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def gpu_count() -> int:
    try:
        import pynvml  # nvidia-ml-py, installed with BentoML

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no library: no GPU
        return 0


# cuDNN's heuristic choice costs nothing on a new batch size (the exhaustive search
# costs a long first call per size, and may pick different kernels for different sizes);
# TF32 would round the matrix products differently from the CPU and between batch sizes.
CUDA_OPTIONS = {"cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "0"}


def _built_cuda(ort) -> str:
    try:
        from onnxruntime.capi import build_and_package_info

        return str(build_and_package_info.cuda_version).split(".")[0]
    except (ImportError, AttributeError):
        return "the"


def _want_cuda(ort, device: str) -> tuple[bool, str]:
    """(use CUDA?, why not, when not) for `device`."""
    if device == "cpu":
        return False, "device cpu was asked for"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False, "this onnxruntime has no CUDA provider (install onnxruntime-gpu)"
    if device == "auto" and gpu_count() == 0:
        return False, "no NVIDIA GPU is visible"
    if hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()  # CUDA/cuDNN from NVIDIA's wheels, when installed
        except Exception as exc:  # a partial install: the session will say what is missing
            logger.info("preloading CUDA libraries: %s", exc)
    return True, ""


class OnnxGenerator:
    """An ONNX Runtime session of a generator, and what its card says about it.

    `version` is a label for reports (a store version, "file", "bundled"); `providers`
    are the execution providers in use, best first."""

    def __init__(self, path: str | Path, *, device: str = "auto", threads: int | None = None,
                 version: str = "file") -> None:
        import onnxruntime as ort

        if device not in DEVICES:
            raise ModelLoadError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
        self.path, self.version = Path(path), version
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads)) if threads else cpu_threads()
        options.inter_op_num_threads = 1
        # Spinning threads burn the cores that the event loop and the other requests need
        # while they wait for work; on a small CPU that costs more than the wake-up latency.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: ORT's warnings are not for operators
        use_cuda, why_not = _want_cuda(ort, device)
        providers = ([("CUDAExecutionProvider", CUDA_OPTIONS), "CPUExecutionProvider"]
                     if use_cuda else ["CPUExecutionProvider"])
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"{path}: ONNX Runtime cannot open it: {first_line}") from None
        if use_cuda and "CUDAExecutionProvider" not in self.session.get_providers():
            use_cuda, why_not = False, (
                "ONNX Runtime's CUDA provider did not load (it needs CUDA "
                f"{_built_cuda(ort)} and cuDNN 9 libraries and an NVIDIA driver 580 or newer)")
        if device == "cuda" and not use_cuda:
            raise ModelLoadError(f"device cuda was asked for, but {why_not}")
        if device == "auto" and not use_cuda:
            logger.info("running on the CPU: %s", why_not)
        try:
            self.card = ModelCard.from_metadata(
                self.session.get_modelmeta().custom_metadata_map, source=str(path))
        except CardError as exc:
            raise ModelLoadError(str(exc)) from None
        check_signature(self.session, self.card, self.path)
        self.providers: list[str] = list(self.session.get_providers())

    @property
    def provider(self) -> str:
        return self.providers[0] if self.providers else "none"

    def generate(self, latents: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """(N, nz) float32 [+ (N,) int64] -> (N, *card.output_shape) float32 in [-1, 1]."""
        feed = {"latents": np.ascontiguousarray(latents, dtype=np.float32)}
        if self.card.num_classes:
            feed["labels"] = np.ascontiguousarray(labels, dtype=np.int64)
        return self.session.run(["images"], feed)[0]

    def warm_up(self, batch_sizes: Sequence[int] = (1,)) -> None:
        """First calls allocate buffers (and build CUDA kernels): pay that before serving,
        and check each output against the card (ModelLoadError, one line, when it lies)."""
        card = self.card
        for n in batch_sizes:
            latents = np.random.default_rng(n).standard_normal((n, card.nz)).astype(np.float32)
            labels = np.arange(n, dtype=np.int64) % max(card.num_classes, 1)
            try:
                images = self.generate(latents, labels)
            except Exception as exc:
                first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise ModelLoadError(f"{self.path}: fails on a batch of {n}: {first_line}") from None
            expected = (n, *card.output_shape)
            if tuple(images.shape) != expected:
                raise ModelLoadError(f"{self.path}: a batch of {n} gives outputs of shape "
                                     f"{list(images.shape)}, but its card says {list(expected)}")
            if not np.isfinite(images).all():
                raise ModelLoadError(f"{self.path}: gives non-finite values for standard normal latents")
            if card.is_image and float(np.abs(images).max()) > 1.0 + 1e-3:
                raise ModelLoadError(f"{self.path}: gives values up to {float(np.abs(images).max()):.3g}; "
                                     "images from a tanh generator lie in [-1, 1]")


def check_signature(session, card: ModelCard, path: Path) -> None:
    """The file's inputs and outputs must be what its card promises."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    expected = {"latents"} | ({"labels"} if card.num_classes else set())
    problems = []
    if set(inputs) != expected:
        problems.append(f"inputs {sorted(inputs)} (expected {sorted(expected)})")
    elif isinstance(inputs["latents"].shape[1], int) and inputs["latents"].shape[1] != card.nz:
        problems.append(f"latents of length {inputs['latents'].shape[1]} but card nz={card.nz}")
    if "images" not in outputs:
        problems.append(f"outputs {sorted(outputs)} (expected ['images'])")
    else:
        shape = outputs["images"].shape[1:]
        if any(isinstance(a, int) and a != b for a, b in zip(shape, card.output_shape)):
            problems.append(f"images of shape {shape} but card says {card.output_shape}")
    if problems:
        raise ModelLoadError(f"{path}: does not match its model card: {'; '.join(problems)}")
