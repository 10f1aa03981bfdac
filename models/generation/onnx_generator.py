"""An exported generator opened with ONNX Runtime: `OnnxGenerator(path).generate(latents)`.

Opening reads the model card from the file's metadata and checks the graph against it
(inputs `latents` [+ `labels`], output `images` of the card's shape), so a file whose
card lies is refused at once rather than answering with wrong shapes later.

Execution provider: `device="cuda"` asks for CUDA (ONNX Runtime falls back to the CPU
with a warning when it cannot), `"cpu"` never uses it, `"auto"` uses it when ONNX
Runtime has it and a GPU is present. Intra-op threads are given by the caller, or
detected from the CPUs this process may run on, capped by a cgroup CPU quota; no
environment variable is read here (the service's settings pass theirs in).
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
        use_cuda = device == "cuda" or (
            device == "auto"
            and "CUDAExecutionProvider" in ort.get_available_providers()
            and gpu_count() > 0
        )
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"{path}: ONNX Runtime cannot open it: {first_line}") from None
        try:
            self.card = ModelCard.from_metadata(
                self.session.get_modelmeta().custom_metadata_map, source=str(path))
        except CardError as exc:
            raise ModelLoadError(str(exc)) from None
        check_signature(self.session, self.card, self.path)
        self.providers: list[str] = list(self.session.get_providers())
        if use_cuda and "CUDAExecutionProvider" not in self.providers:
            logger.warning("a GPU was asked for but ONNX Runtime could not use it; running on CPU")

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
        """First calls allocate buffers (and build CUDA kernels): pay that before serving."""
        for n in batch_sizes:
            self.generate(np.zeros((n, self.card.nz), np.float32), np.zeros(n, np.int64))


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
