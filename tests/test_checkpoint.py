"""Checkpoints: atomic writes, safe loads with one-line errors, and picking G's weights."""

from __future__ import annotations

import zipfile

import pytest
import torch
from torch import nn

from models import build_models
from models.card import ModelCard
from training.checkpoint import (
    CheckpointError,
    atomic_write,
    find_checkpoint,
    load_checkpoint,
    load_torch_generator,
    save_checkpoint,
)
from training.config import TrainConfig

MODEL = {"nz": 4, "ngf": 2, "ndf": 2, "nc": 1, "image_size": 16}


def make_state(ema: bool = True, step: int = 7) -> dict:
    """A checkpoint's content with distinct raw and EMA generator weights."""
    torch.manual_seed(0)
    generator, discriminator = build_models("dcgan", MODEL)
    average, _ = build_models("dcgan", MODEL)
    card = ModelCard(name="tiny", model=dict(MODEL), step=step)
    return {
        "config": TrainConfig(dataset="fake").to_dict(), "card": card.to_dict(), "step": step,
        "generator": generator.state_dict(), "discriminator": discriminator.state_dict(),
        "ema": average.state_dict() if ema else None,
    }


def same_weights(module: nn.Module, state: dict) -> bool:
    return all(torch.equal(value, state[name]) for name, value in module.state_dict().items())


# --- atomic writes ----------------------------------------------------------------------


def test_atomic_write_replaces_the_file(tmp_path):
    path = atomic_write(tmp_path / "sub" / "file.bin", lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new"
    atomic_write(path, lambda f: f.write(b"newer"))
    assert path.read_bytes() == b"newer"
    assert [p.name for p in path.parent.iterdir()] == ["file.bin"]


def test_a_failing_writer_leaves_the_old_file_and_no_debris(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"old")

    def half_then_crash(handle):
        handle.write(b"half of the new fi")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_crash)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    with pytest.raises(KeyboardInterrupt):  # an interrupt mid-write too
        atomic_write(path, lambda handle: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert path.read_bytes() == b"old"
    assert len(list(tmp_path.iterdir())) == 1


# --- loading ----------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path):
    state = make_state()
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    loaded = load_checkpoint(tmp_path)  # a run directory finds its checkpoint.pt
    assert loaded["format"] == "dcgan-service-checkpoint" and loaded["version"] == 1
    assert loaded["step"] == 7 and loaded["card"] == state["card"]
    assert all(torch.equal(loaded["generator"][k], v) for k, v in state["generator"].items())


def test_corrupt_files_are_refused_in_one_line(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match=r"garbage.pt is corrupt or not a checkpoint \(not a torch archive\)$"):
        load_checkpoint(garbage)

    good = save_checkpoint(tmp_path / "good.pt", make_state())
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt is corrupt or not a checkpoint"):
        load_checkpoint(truncated)

    # a zip whose pickle record is damaged but whose directory is intact
    damaged = tmp_path / "damaged.pt"
    with zipfile.ZipFile(good) as archive:
        record = next(info for info in archive.infolist() if info.filename.endswith("data.pkl"))
    start = record.header_offset + 30 + len(record.filename) + len(record.extra)
    middle = bytearray(data)
    middle[start:start + 64] = bytes(64)
    damaged.write_bytes(bytes(middle))
    with pytest.raises(CheckpointError, match=r"damaged.pt is corrupt or not a checkpoint \(damaged data\)$"):
        load_checkpoint(damaged)


def test_foreign_torch_file_is_refused(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"x": 1}, path)
    with pytest.raises(CheckpointError, match="foreign.pt is not a dcgan-service checkpoint"):
        load_checkpoint(path)


def test_pickled_module_is_refused_without_running_code(tmp_path):
    path = tmp_path / "module.pt"
    torch.save(nn.Linear(2, 2), path)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert "module.pt was refused: it would import torch.nn.modules.linear.Linear" in message
    assert "without running code" in message and "\n" not in message


def test_missing_file_directory_future_version_and_incomplete_state(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at .*nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="is a directory without checkpoint.pt"):
        load_checkpoint(tmp_path)
    future = tmp_path / "future.pt"
    torch.save({"format": "dcgan-service-checkpoint", "version": 2}, future)
    with pytest.raises(CheckpointError, match="checkpoint version 2; this program reads up to 1"):
        load_checkpoint(future)
    state = make_state()
    del state["card"]
    incomplete = save_checkpoint(tmp_path / "incomplete.pt", state)
    with pytest.raises(CheckpointError, match="incomplete: it has no 'card'"):
        load_checkpoint(incomplete)


def test_run_directory_prefers_best_for_generators(tmp_path):
    save_checkpoint(tmp_path / "checkpoint.pt", make_state(step=20))
    assert find_checkpoint(tmp_path).name == "checkpoint.pt"
    assert load_torch_generator(tmp_path)[1].step == 20
    save_checkpoint(tmp_path / "best.pt", make_state(step=10))
    assert find_checkpoint(tmp_path, prefer_best=True).name == "best.pt"
    assert load_torch_generator(tmp_path)[1].step == 10
    assert load_checkpoint(tmp_path)["step"] == 20  # resuming continues from the latest


# --- the generator of a checkpoint ------------------------------------------------------


def test_load_generator_takes_ema_or_raw_weights(tmp_path):
    state = make_state()
    assert not same_weights(_module(state["ema"]), state["generator"])  # they differ
    path = save_checkpoint(tmp_path / "checkpoint.pt", state)

    generator, card = load_torch_generator(path)  # ema by default
    assert same_weights(generator, state["ema"]) and card.weights == "ema"
    assert not generator.training and card.step == 7 and card.name == "tiny"

    generator, card = load_torch_generator(path, weights="raw")
    assert same_weights(generator, state["generator"]) and card.weights == "raw"

    no_ema = save_checkpoint(tmp_path / "no_ema.pt", make_state(ema=False))
    generator, card = load_torch_generator(no_ema, weights="ema")  # falls back, and says so
    assert same_weights(generator, state["generator"]) and card.weights == "raw"

    with pytest.raises(CheckpointError, match="weights must be ema or raw, got 'best'"):
        load_torch_generator(path, weights="best")


def _module(state: dict) -> nn.Module:
    generator, _ = build_models("dcgan", MODEL)
    generator.load_state_dict(state)
    return generator


def test_unusable_card_or_mismatched_weights(tmp_path):
    state = make_state()
    state["card"]["arch"] = "transformer"
    path = save_checkpoint(tmp_path / "arch.pt", state)
    with pytest.raises(CheckpointError, match="arch.pt has an unusable model card: arch must be one of"):
        load_torch_generator(path)

    state = make_state()
    state["card"]["model"]["ngf"] = 4  # the weights are for ngf=2
    path = save_checkpoint(tmp_path / "shape.pt", state)
    with pytest.raises(CheckpointError, match="shape.pt: weights do not match the card's architecture"):
        load_torch_generator(path)
