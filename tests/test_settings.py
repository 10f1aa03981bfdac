"""The service's settings: the README's table says what `Settings` holds (neither can
drift), `from_env` turns each bad value into one line naming the variable and what it
accepts, and a real server given bad settings stays up, not ready, and says why in one
line per bad value, without a traceback."""

from __future__ import annotations

import time
from dataclasses import fields
from pathlib import Path

import httpx
import pytest
from test_service_server import BentoServer

from service.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[1]
HEADER = "| variable | default | accepts | meaning |"


def readme_settings() -> list[dict[str, str]]:
    """The README's settings table, one dict per row."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index(HEADER) + 2  # the header, then |---|
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        variable, default, accepts, meaning = (cell.strip() for cell in line.strip("|").split(" | "))
        rows.append({"variable": variable.strip("`"), "default": default,
                     "accepts": accepts, "meaning": meaning})
    return rows


def shown_default(value) -> str:
    """How the README writes a default: unset, or the value as one would set it."""
    if value is None:
        return "unset"
    return f"`{int(value) if isinstance(value, bool) else value}`"


def test_the_readme_table_lists_every_setting_with_its_default_and_values():
    documented = readme_settings()
    actual = [{"variable": f.metadata["env"], "default": shown_default(f.default),
               "accepts": f.metadata["accepts"], "meaning": f.metadata["meaning"]}
              for f in fields(Settings)]
    assert [row["variable"] for row in documented] == [row["variable"] for row in actual]
    for row, expected in zip(documented, actual):
        assert row == expected, row["variable"]


def test_an_empty_environment_gives_the_defaults():
    settings = Settings.from_env({"PATH": "/bin", "DCGAN_CACHE": "/tmp/x"})
    assert settings == Settings()
    assert settings.max_batch_size == 64 and settings.batching and settings.device == "auto"
    assert settings.api_token is None and settings.ort_threads is None
    assert settings.limits.max_n == 128 and settings.limits.max_body_bytes == 65536


def test_empty_values_count_as_unset_and_good_values_are_typed():
    settings = Settings.from_env({
        "DCGAN_MODEL": "", "DCGAN_ORT_THREADS": "", "DCGAN_BATCHING": "Off",
        "DCGAN_MAX_BATCH_SIZE": "2", "DCGAN_INLINE_IMAGES": "0", "DCGAN_DEVICE": "cuda",
        "DCGAN_BATCH_WAIT": "adaptive", "DCGAN_MAX_N": "16", "DCGAN_API_TOKEN": "s3cret-t0ken",
        "DCGAN_LATENCY_TARGET_MS": "0",
    })
    assert settings.model is None and settings.ort_threads is None
    assert settings.batching is False and settings.max_batch_size == 2
    assert settings.inline_images == 0 and settings.device == "cuda"
    assert settings.batch_wait == "adaptive" and settings.api_token == "s3cret-t0ken"
    assert settings.limits.max_n == 16 and settings.latency_target_ms == 0


@pytest.mark.parametrize("variable, value, line", [
    ("DCGAN_MAX_BATCH_SIZE", "abc", "DCGAN_MAX_BATCH_SIZE=abc: must be an integer from 2 to 4096"),
    ("DCGAN_MAX_BATCH_SIZE", "1", "DCGAN_MAX_BATCH_SIZE=1: must be an integer from 2 to 4096"),
    ("DCGAN_MAX_LATENCY_MS", "0", "DCGAN_MAX_LATENCY_MS=0: must be an integer from 1 to 600000"),
    ("DCGAN_MAX_LATENCY_MS", "2.5", "DCGAN_MAX_LATENCY_MS=2.5: must be an integer from 1 to 600000"),
    ("DCGAN_LATENCY_TARGET_MS", "-1", "DCGAN_LATENCY_TARGET_MS=-1: must be an integer from 0 to 600000"),
    ("DCGAN_LATENCY_TARGET_MS", "fast", "DCGAN_LATENCY_TARGET_MS=fast: must be an integer from 0 to 600000"),
    ("DCGAN_BATCH_WAIT", "sometimes", "DCGAN_BATCH_WAIT=sometimes: must be one of queue, adaptive"),
    ("DCGAN_DEVICE", "gpu", "DCGAN_DEVICE=gpu: must be one of auto, cpu, cuda"),
    ("DCGAN_BATCHING", "maybe",
     "DCGAN_BATCHING=maybe: must be one of 1, 0, true, false, yes, no, on, off"),
    ("DCGAN_ORT_THREADS", "0", "DCGAN_ORT_THREADS=0: must be an integer from 1 to 1024"),
    ("DCGAN_INLINE_IMAGES", "-1", "DCGAN_INLINE_IMAGES=-1: must be an integer from 0 to 4096"),
    ("DCGAN_MAX_N", "abc", "DCGAN_MAX_N=abc: must be an integer from 1 to 4096"),
    ("DCGAN_MAX_STEPS", "1", "DCGAN_MAX_STEPS=1: must be an integer from 2 to 4096"),
    ("DCGAN_MAX_BODY_BYTES", "1e9",
     "DCGAN_MAX_BODY_BYTES=1e9: must be an integer from 1 to 67108864"),
])
def test_a_bad_value_is_one_line_naming_the_variable_and_what_it_accepts(variable, value, line):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    assert caught.value.problems == [line]
    assert str(caught.value) == line


def test_a_bad_token_is_reported_without_showing_it():
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"DCGAN_API_TOKEN": "s3cret\n"})  # a newline from a secret file
    assert caught.value.problems == ["DCGAN_API_TOKEN: must be printable ASCII without spaces"]


def test_every_bad_value_is_reported_at_once():
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"DCGAN_MAX_N": "abc", "DCGAN_MAX_BATCH_SIZE": "abc",
                           "DCGAN_DEVICE": "tpu", "DCGAN_MAX_STEPS": "64"})
    problems = caught.value.problems
    assert len(problems) == 3
    assert {p.split("=")[0] for p in problems} == {"DCGAN_MAX_N", "DCGAN_MAX_BATCH_SIZE",
                                                    "DCGAN_DEVICE"}
    assert str(caught.value) == "; ".join(problems)


# --- a real server with a bad setting: alive, not ready, one line, no traceback ---------

@pytest.mark.parametrize("variable", ["DCGAN_MAX_BATCH_SIZE", "DCGAN_MAX_N"])
def test_a_server_with_a_bad_setting_stays_up_not_ready_and_says_why(tmp_path, variable):
    # DCGAN_MAX_N is read when the service module is imported, DCGAN_MAX_BATCH_SIZE when
    # a worker starts: once an exit on import, once a worker restarting every ~10 s.
    server = BentoServer(tmp_path / "home", **{variable: "abc"})
    line = f"{variable}=abc: must be an integer from"
    try:
        server.wait("/livez")
        time.sleep(2)  # time for a crash or a restart to show
        assert server.proc.poll() is None, "no exit"
        assert httpx.get(server.url + "/livez", timeout=5).status_code == 200
        assert httpx.get(server.url + "/readyz", timeout=5).status_code != 200
        info = httpx.get(server.url + "/model", timeout=5).json()
        refused = httpx.post(server.url + "/sample", json={"n": 1}, timeout=5)
        log = server.log()
    finally:
        server.stop()
    assert not info["ready"] and line in info["error"]
    assert refused.status_code == 503 and line in refused.json()["error"]
    assert sum(line in text for text in log.splitlines()) == 1, log
    assert "Traceback" not in log, log


# --- DCGAN_MODELS -------------------------------------------------------------------------

def test_models_are_named_after_their_tags_and_files_or_as_told():
    settings = Settings.from_env({"DCGAN_MODELS": "dcgan-mnist:latest, runs/dcgan-mnist-cond.onnx,"
                                                  "v1=dcgan-mnist:abc123 , /m/other.onnx"})
    assert settings.model_specs == [("mnist", "dcgan-mnist:latest"),
                                    ("mnist-cond", "runs/dcgan-mnist-cond.onnx"),
                                    ("v1", "dcgan-mnist:abc123"), ("other", "/m/other.onnx")]
    assert Settings.from_env({"DCGAN_MODEL": "dcgan-mnist:v2"}).model_specs == [
        ("mnist", "dcgan-mnist:v2")], "the deprecated one-model form"
    assert Settings.from_env({}).model_specs is None, "unset: the defaults"


@pytest.mark.parametrize("value, why", [
    ("a.onnx,b/a.onnx", "two models named a: name one as other-name=..."),
    ("a.onnx,,b.onnx", "an empty entry"),
    ("x=", "no tag or path for x"),
    ("my model.onnx", "'my model' is not a usable model name"),
])
def test_bad_model_lists_say_what_is_wrong(value, why):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"DCGAN_MODELS": value})
    [line] = caught.value.problems
    assert line.startswith(f"DCGAN_MODELS={value}: must be a comma-separated list")
    assert f"({why}" in line


def test_the_two_model_settings_are_not_set_together():
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"DCGAN_MODELS": "a.onnx", "DCGAN_MODEL": "b.onnx"})
    assert caught.value.problems == ["DCGAN_MODEL: leave it unset when DCGAN_MODELS is set (it "
                                     "is the deprecated one-model form)"]
