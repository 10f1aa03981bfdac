"""The model card: the contract that checkpoints, ONNX files and the service share."""

from __future__ import annotations

import json

import pytest

from models.card import CARD_KEY, CARD_VERSION, CardError, ModelCard

DCGAN_MODEL = {"nz": 100, "ngf": 64, "ndf": 64, "nc": 3, "image_size": 64, "num_classes": 10,
               "pack": 1, "d_norm": "batch"}


def full_card() -> ModelCard:
    return ModelCard(
        name="cifar", arch="dcgan", model=dict(DCGAN_MODEL),
        dataset={"name": "cifar10", "num_classes": 10}, step=1234,
        command="dcgan train --dataset cifar10", quality={"fd": 12.5},
        weights="raw", created="2025-01-01T00:00:00+00:00", versions={"torch": "2.4"},
    )


def test_dict_round_trip_is_lossless():
    card = full_card()
    data = json.loads(json.dumps(card.to_dict()))  # what a checkpoint stores, via JSON types
    assert ModelCard.from_dict(data) == card
    assert data["card_version"] == CARD_VERSION
    assert data["latent"]["rng"] == "numpy PCG64(seed).standard_normal"


def test_non_finite_figures_are_written_as_null():
    """JSON has no NaN: a table with empty cells (the class-arithmetic diagonal) or a
    diverged run's figure is written as null, so every reader can parse the card and the
    service can send it."""
    card = ModelCard(name="m", quality={"fd_ratio": float("nan"), "kid": float("inf"),
                                        "table": [[float("nan"), 0.5]], "fd": 3.0})
    props = card.to_metadata()
    json.loads(props[CARD_KEY], parse_constant=lambda name: pytest.fail(f"{name} in the card"))
    back = ModelCard.from_metadata(props)
    assert back.quality == {"fd_ratio": None, "kid": None, "table": [[None, 0.5]], "fd": 3.0}


def test_metadata_round_trip_with_flat_copies():
    card = full_card()
    props = card.to_metadata()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in props.items())
    assert ModelCard.from_metadata(props) == card
    # flat copies for people reading the file with other tools
    assert props["dcgan.nz"] == "100" and props["dcgan.image_size"] == "64"
    assert props["dcgan.num_classes"] == "10" and props["dcgan.name"] == "cifar"
    assert json.loads(props[CARD_KEY])["step"] == 1234


def test_unknown_fields_of_a_newer_writer_are_ignored():
    data = {**full_card().to_dict(), "future_field": [1, 2]}
    assert ModelCard.from_dict(data) == full_card()


@pytest.mark.parametrize("missing", ("arch", "model"))
def test_missing_key_is_a_clear_card_error(missing):
    data = full_card().to_dict()
    del data[missing]
    with pytest.raises(CardError, match=r"malformed \(no 'arch' or 'model'\)"):
        ModelCard.from_dict(data)
    with pytest.raises(CardError, match="malformed"):
        ModelCard.from_dict(["not", "a", "dict"])


def test_future_card_version_is_rejected():
    data = {**full_card().to_dict(), "card_version": CARD_VERSION + 1}
    with pytest.raises(CardError, match=f"version {CARD_VERSION + 1}; this program reads up to {CARD_VERSION}"):
        ModelCard.from_dict(data)
    assert issubclass(CardError, ValueError)  # callers may catch ValueError


def test_metadata_without_card_or_with_broken_json():
    with pytest.raises(CardError, match="model.onnx has no model card .*dcgan export"):
        ModelCard.from_metadata({"dcgan.nz": "100"}, source="model.onnx")
    with pytest.raises(CardError, match="not valid JSON"):
        ModelCard.from_metadata({CARD_KEY: "{not json"})


def test_output_shape_and_architecture_accessors():
    card = full_card()
    assert card.output_shape == (3, 64, 64)
    assert card.is_image and card.nz == 100 and card.num_classes == 10
    grey = ModelCard(model={**DCGAN_MODEL, "nc": 1, "image_size": 16, "num_classes": 0})
    assert grey.output_shape == (1, 16, 16) and grey.num_classes == 0
    toy = ModelCard(arch="mlp", model={"nz": 2, "out_shape": [2]})
    assert toy.output_shape == (2,)
    assert not toy.is_image and toy.num_classes == 0
    flat_images = ModelCard(arch="mlp", model={"nz": 8, "out_shape": ["1", "28", "28"]})
    assert flat_images.output_shape == (1, 28, 28) and flat_images.is_image
