"""The one-shot GPU check (bench/gpu_check.py) runs end to end as a dry run on the CPU,
so that the GPU time it is written for is not spent finding its bugs.
Slow (a minute or two): `python -m pytest -m slow tests/test_gpu_check.py`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = {"env", "train", "resume", "compile", "compile_r1", "penalties", "ddp",
            "fp16_export", "onnxruntime", "service"}


@pytest.mark.slow
def test_the_gpu_check_runs_end_to_end_on_the_cpu(tmp_path):
    out = tmp_path / "gpu-check.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu",
                             "--quick", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    report = json.loads(out.read_text())["sections"]
    failed = {name: r.get("error") for name, r in report.items() if not r["ok"]}
    assert result.returncode == 0 and not failed, failed
    assert set(report) == SECTIONS
    assert report["resume"]["max_abs_generator_diff"] == 0  # exact on the CPU
    assert report["compile_r1"]["d_eager"] is True
    assert report["ddp"]["gloo_ranks_identical"] is True
    assert report["fp16_export"]["provider"] == "CPUExecutionProvider"
    assert report["fp16_export"]["arithmetic"] == "float32"
    assert report["onnxruntime"]["fp32"]["uint8_pixels_differing_vs_cpu"] == 0
    assert report["train"]["images_per_s"] > 0
