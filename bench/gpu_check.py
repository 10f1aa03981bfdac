"""One-shot check of every CUDA path of the project, in one call (about 9 minutes on one
large GPU), with a dry run on the CPU (`--device cpu --quick`, a minute or two) that the
slow tests run, so the script is known to work before GPU time is spent on it.

Sections (each timed; a failure is recorded, the next section still runs):
  env          torch, CUDA, cuDNN, bf16 support, Triton, a C compiler, ONNX Runtime
  train        the default step (bf16 autocast + channels_last on CUDA), images/s at batch 256
  resume       stop half-way and resume: the generator equals the uninterrupted run's
  compile      --compile, and how often it recompiles (TORCH_LOGS=recompiles)
  compile_r1   --compile --r1 1 (D stays eager: R1 needs a double backward)
  penalties    R1 + spectral norm, and WGAN-GP, in bf16 on CUDA
  ddp          two processes with DistributedDataParallel: per-rank checksums of G and D
               (gloo; on one GPU NCCL refuses two ranks), then an NCCL all-reduce (CUDA)
  fp16_export  `dcgan export --fp16` and what its parity figure covered
  onnxruntime  providers in use, first-call time per batch size, GPU vs CPU pixels,
               batch invariance (one image alone vs inside a batch of 64)
  service      bench/bench_service.py on the device: n=64 images/s, batching on vs off

    python bench/gpu_check.py [--device cuda] [--quick] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DDP_PROBE = """
import json, sys, torch, torch.distributed as dist
import training.loop as loop
from training.config import TrainConfig, resolve
built = {}
def build(arch, spec):
    built["g"], built["d"] = original_build(arch, spec)
    return built["g"], built["d"]
def destroy(*args, **kwargs):  # train() ends the group: compare the ranks first
    sums = torch.tensor([float(p.detach().double().sum()) for n in ("g", "d")
                         for p in built[n].parameters()], dtype=torch.float64)
    gathered = [torch.zeros_like(sums) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, sums)
    if dist.get_rank() == 0:
        print("CHECKSUMS", all(torch.equal(gathered[0], g) for g in gathered), float(gathered[0].sum()))
    original_destroy(*args, **kwargs)
original_build, loop.build_models = loop.build_models, build
original_destroy, dist.destroy_process_group = dist.destroy_process_group, destroy
loop.train(resolve(TrainConfig(**json.loads(sys.argv[1]))), progress=False)
"""


class Check:
    def __init__(self, args) -> None:
        self.args = args
        self.device = args.device
        self.work = Path(tempfile.mkdtemp(prefix="dcgan-gpu-check-"))
        self.results: dict[str, dict] = {}
        quick = args.quick
        self.steps = 6 if quick else 300
        self.batch = 16 if quick else 256
        self.size = 32 if quick else 64
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
                    "TORCHINDUCTOR_CACHE_DIR": str(self.work / "inductor")}

    # --- helpers -----------------------------------------------------------------------
    def section(self, name: str, fn) -> None:
        start = time.perf_counter()
        print(f"=== {name}", file=sys.stderr, flush=True)
        try:
            figures = fn()
            self.results[name] = {"ok": True, **(figures or {})}
        except Skip as why:
            self.results[name] = {"ok": True, "skipped": str(why)}
        except Exception as exc:  # record and go on: one section must not hide the others
            self.results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000],
                                  "where": traceback.format_exc(limit=3)[-1500:]}
        self.results[name]["seconds"] = round(time.perf_counter() - start, 1)
        print(json.dumps({name: self.results[name]}), file=sys.stderr, flush=True)

    def run(self, args: list[str], timeout: float, env: dict | None = None) -> str:
        result = subprocess.run(args, cwd=ROOT, env={**self.env, **(env or {})},
                                capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, args[:6]))} ... exit {result.returncode}: "
                               f"{(result.stderr or result.stdout)[-1200:]}")
        return result.stdout + result.stderr

    def train(self, run_dir: Path, *extra, steps: int | None = None, timeout: float = 240,
              env: dict | None = None) -> str:
        steps = steps or self.steps
        return self.run([sys.executable, "-m", "training.cli", "train", "--dataset", "fake",
                         "--image-size", str(self.size), "--channels", "3",
                         "--batch-size", str(self.batch), "--steps", str(steps),
                         "--log-every", str(max(1, steps // 6)), "--sample-every", str(steps),
                         "--checkpoint-every", str(max(1, steps // 2)), "--device", self.device,
                         "--run-dir", str(run_dir), "--no-progress", *map(str, extra)],
                        timeout=timeout, env=env)

    @staticmethod
    def last_record(run_dir: Path) -> dict:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        record = json.loads(lines[-1])
        return {k: record[k] for k in ("step", "d_loss", "g_loss", "steps_per_s", "images_per_s")
                if k in record}

    # --- sections ----------------------------------------------------------------------
    def env_section(self) -> dict:
        import onnxruntime as ort
        import torch

        figures = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
                   "onnxruntime": ort.__version__, "ort_providers": ort.get_available_providers(),
                   "c_compiler": shutil.which("gcc") or shutil.which("cc")}
        try:
            from onnxruntime.capi import build_and_package_info
            figures["ort_built_for_cuda"] = build_and_package_info.cuda_version
        except (ImportError, AttributeError):
            pass
        if torch.cuda.is_available():
            figures.update(gpu=torch.cuda.get_device_name(0), torch_cuda=torch.version.cuda,
                           cudnn=torch.backends.cudnn.version(),
                           bf16=torch.cuda.is_bf16_supported(including_emulation=False),
                           capability=".".join(map(str, torch.cuda.get_device_capability(0))))
        try:
            import triton
            figures["triton"] = triton.__version__
        except ImportError:
            figures["triton"] = None
        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("--device cuda, but torch sees no CUDA device")
        return figures

    def train_section(self) -> dict:
        self.train(self.work / "whole")
        return self.last_record(self.work / "whole")

    def resume_section(self) -> dict:
        import torch

        stopped = self.work / "stopped"
        self.train(stopped, steps=self.steps // 2)
        self.train(stopped, "--resume", stopped)
        whole = torch.load(self.work / "whole" / "checkpoint.pt", map_location="cpu", weights_only=True)
        again = torch.load(stopped / "checkpoint.pt", map_location="cpu", weights_only=True)
        diff = max(float((whole["generator"][k].float() - again["generator"][k].float()).abs().max())
                   for k in whole["generator"])
        if self.device == "cpu" and diff != 0:
            raise RuntimeError(f"resume differs on the CPU by {diff}")
        return {"steps": [whole["step"], again["step"]], "max_abs_generator_diff": diff}

    def compile_section(self) -> dict:
        log = self.train(self.work / "compiled", "--compile", timeout=400,
                         env={"TORCH_LOGS": "recompiles"})
        recompiles = [line for line in log.splitlines() if "Recompiling" in line]
        return {**self.last_record(self.work / "compiled"), "recompiles": len(recompiles),
                "recompile_reasons": recompiles[:4]}

    def compile_r1_section(self) -> dict:
        log = self.train(self.work / "compiled-r1", "--compile", "--r1", "1", steps=3,
                         timeout=400)
        return {**self.last_record(self.work / "compiled-r1"),
                "d_eager": "D stays eager" in log}

    def penalties_section(self) -> dict:
        figures = {}
        for name, extra in (("r1_spectral", ["--r1", "1", "--d-norm", "spectral"]),
                            ("wgan_gp", ["--loss", "wgan-gp"])):
            run_dir = self.work / name
            self.train(run_dir, *extra, steps=max(3, self.steps // 2))
            figures[name] = self.last_record(run_dir)
        return figures

    def ddp_section(self) -> dict:
        torchrun = Path(sys.executable).with_name("torchrun")
        config = {"dataset": "fake", "image_size": self.size, "channels": 3, "batch_size": 8,
                  "steps": 4, "log_every": 2, "sample_every": 4, "checkpoint_every": 4,
                  "device": "cpu", "run_dir": str(self.work / "ddp"), "threads": 1}
        out = self.run([str(torchrun), "--standalone", "--nproc_per_node", "2",
                        str(self._probe_file()), json.dumps(config)], timeout=300)
        match = re.search(r"CHECKSUMS (True|False) (\S+)", out)
        if not match or match.group(1) != "True":
            raise RuntimeError(f"ranks disagree or no checksums: {out[-800:]}")
        figures = {"gloo_ranks_identical": True, "checksum": float(match.group(2))}
        import torch
        if self.device == "cuda" and torch.cuda.is_available():
            code = ("import torch, torch.distributed as d; "
                    "d.init_process_group('nccl', init_method='tcp://127.0.0.1:29511', rank=0, "
                    "world_size=1, device_id=torch.device('cuda', 0)); "
                    "t = torch.ones(4, device='cuda'); d.all_reduce(t); "
                    "print('NCCL', torch.cuda.nccl.version(), t.tolist()); d.destroy_process_group()")
            figures["nccl"] = self.run([sys.executable, "-c", code], timeout=120).strip()[-200:]
        return figures

    def _probe_file(self) -> Path:
        path = self.work / "ddp_probe.py"
        path.write_text(DDP_PROBE)
        return path

    def fp16_export_section(self) -> dict:
        from training.export import read_card

        out = self.work / "fp16.onnx"
        self.run([sys.executable, "-m", "training.cli", "export", str(self.work / "whole"),
                  "--out", str(out), "--fp16", "--no-evaluate"], timeout=300)
        self.run([sys.executable, "-m", "training.cli", "export", str(self.work / "whole"),
                  "--out", str(self.work / "fp32.onnx"), "--no-evaluate"], timeout=300)
        quality = read_card(out).quality
        return {"max_abs_error": quality["onnx_max_abs_error"], **quality["onnx_parity"]}

    def onnxruntime_section(self) -> dict:
        import numpy as np

        from models.generation import OnnxGenerator, to_uint8
        from models.latent import latents_from_seeds

        figures = {}
        for name in ("fp32", "fp16"):
            path = self.work / f"{name}.onnx"
            if not path.is_file():
                continue
            device = OnnxGenerator(path, device=self.device)
            cpu = OnnxGenerator(path, device="cpu")
            latents = latents_from_seeds(list(range(64)), device.card.nz, None)
            first_ms = {}
            outputs = {}
            for n in (1, 2, 3, 5, 7, 16, 33, 64):
                start = time.perf_counter()
                outputs[n] = device.generate(latents[:n])
                first_ms[n] = round((time.perf_counter() - start) * 1e3, 2)
            reference = cpu.generate(latents)
            figures[name] = {
                "providers": device.providers, "first_call_ms": first_ms,
                "max_abs_vs_cpu": float(np.abs(outputs[64] - reference).max()),
                "uint8_pixels_differing_vs_cpu": int((to_uint8(outputs[64]) != to_uint8(reference)).sum()),
                "uint8_pixels_differing_n1_vs_n64": int((to_uint8(outputs[1]) != to_uint8(outputs[64][:1])).sum()),
            }
        if not figures:
            raise Skip("no exported files (fp16_export failed)")
        return figures

    def service_section(self) -> dict:
        try:
            import bentoml  # noqa: F401
        except ImportError:
            raise Skip("bentoml is not installed in this environment") from None
        out = self.work / "service.json"
        quick = ["--clients", "2", "--sizes", "64", "--rounds", "1", "--seconds", "1"]
        full = ["--clients", "8", "--sizes", "1,64", "--rounds", "2", "--seconds", "2"]
        self.run([sys.executable, str(ROOT / "bench" / "bench_service.py"),
                  "--model", str(self.work / "fp32.onnx"), "--env", f"DCGAN_DEVICE={self.device}",
                  *(quick if self.args.quick else full), "--json", str(out)], timeout=420)
        return {"bench_service": json.loads(out.read_text())}


class Skip(Exception):
    """A section that cannot run here; the reason is recorded."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=os.environ.get("DEVICE", "cuda"), choices=("cuda", "cpu"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a dry run on the CPU")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    parser.add_argument("--only", help="comma-separated sections to run (default: all)")
    args = parser.parse_args()
    check = Check(args)
    sections = {"env": check.env_section, "train": check.train_section,
                "resume": check.resume_section, "compile": check.compile_section,
                "compile_r1": check.compile_r1_section, "penalties": check.penalties_section,
                "ddp": check.ddp_section, "fp16_export": check.fp16_export_section,
                "onnxruntime": check.onnxruntime_section, "service": check.service_section}
    chosen = args.only.split(",") if args.only else list(sections)
    for name in chosen:
        check.section(name, sections[name])
    report = {"device": args.device, "quick": args.quick, "sections": check.results}
    text = json.dumps(report, indent=1, default=str)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    shutil.rmtree(check.work, ignore_errors=True)
    sys.exit(0 if all(r["ok"] for r in check.results.values()) else 1)


if __name__ == "__main__":
    main()
