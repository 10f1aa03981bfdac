"""The generation layer (models.generation): the label rule and the request checks that
name their field, pictures that decode to the pixels they were made from, opening an
exported generator, store naming; and the promise it exists for: the same model and
request give byte-identical PNG and GIF files from `dcgan sample`/`dcgan interpolate`
and from POST /sample and POST /interpolate."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence
from test_service_runtime import export_tiny, serving_app

from models import generation as gen
from models.card import ModelCard
from models.generation import GenerationError, ModelLoadError
from models.latent import MAX_SEED, latent_from_seed, latents_from_seeds

ROOT = Path(__file__).resolve().parents[1]
SIDE, PAD = 16, gen.GRID_PADDING


def card(num_classes: int = 10, **model) -> ModelCard:
    return ModelCard(name="tiny", model={"nz": 8, "nc": 1, "image_size": SIDE,
                                         "num_classes": num_classes, **model})


def toy_card() -> ModelCard:
    return ModelCard(name="ring", arch="mlp", model={"nz": 2, "out_shape": [2]})


def refused(field: str, says: str, call, *args, **kwargs) -> None:
    with pytest.raises(GenerationError) as caught:
        call(*args, **kwargs)
    assert caught.value.field == field and says in str(caught.value), str(caught.value)


# --- latents and labels: the label rule ------------------------------------------------------

def test_a_sample_draws_each_seeds_class_or_the_given_label():
    latents, labels, seeds = gen.plan_sample(card(), seed=8, n=4)
    assert seeds == [8, 9, 10, 11] and labels.tolist() == [8, 9, 0, 1]
    np.testing.assert_array_equal(latents, latents_from_seeds(seeds, 8))
    assert gen.plan_sample(card(), seeds=[3, 30], label=7).labels.tolist() == [7, 7]
    assert gen.plan_sample(card(num_classes=0), seed=1, n=2).labels is None


def test_a_sample_without_seed_draws_a_random_one_that_replays():
    drawn = gen.plan_sample(card(), n=3)
    assert 0 <= drawn.seeds[0] <= MAX_SEED - 2
    again = gen.plan_sample(card(), seed=drawn.seeds[0], n=3)
    np.testing.assert_array_equal(again.latents, drawn.latents)


def test_truncation_redraws_seed_latents_and_clips_given_vectors():
    truncated = gen.plan_sample(card(), seed=0, n=16, truncation=0.5).latents
    assert np.abs(truncated).max() <= 0.5
    vector = [3.0, -3.0, 0.1, 0, 0, 0, 0, 0]
    path = gen.plan_interpolation(card(), vector, 1, steps=3, truncation=0.5, label=0).latents
    np.testing.assert_array_equal(path[0], np.float32([0.5, -0.5, 0.1, 0, 0, 0, 0, 0]))
    np.testing.assert_array_equal(path[-1], latent_from_seed(1, 8, 0.5))


def test_a_walk_keeps_each_end_points_class_switching_halfway():
    path, labels, _ = gen.plan_interpolation(card(), 3, 15, steps=6)
    assert labels.tolist() == [3, 3, 3, 5, 5, 5]
    assert gen.plan_interpolation(card(), 3, 15, steps=5).labels.tolist() == [3, 3, 5, 5, 5]
    np.testing.assert_array_equal(path[0], latent_from_seed(3, 8))
    np.testing.assert_array_equal(path[-1], latent_from_seed(15, 8))
    assert gen.plan_interpolation(card(), 3, 15, steps=4, label=2).labels.tolist() == [2] * 4
    assert gen.plan_interpolation(card(num_classes=0), [0.5] * 8, 3, steps=4).labels is None
    slerp = gen.plan_interpolation(card(), 3, 15, steps=5).latents
    lerp = gen.plan_interpolation(card(), 3, 15, steps=5, method="lerp").latents
    assert np.linalg.norm(lerp[2]) < np.linalg.norm(slerp[2]), "a straight line cuts the shell"


@pytest.mark.parametrize("call, field, says", [
    (lambda: gen.plan_sample(card(), seed=0, label=10), "label", "from 0 to 9, got 10"),
    (lambda: gen.plan_sample(card(), seed=0, label=-1), "label", "from 0 to 9"),
    (lambda: gen.plan_sample(card(num_classes=0), seed=0, label=1), "label", "not class-conditional"),
    (lambda: gen.plan_sample(card(), seed=MAX_SEED, n=2), "seed", "must not exceed"),
    (lambda: gen.plan_sample(card(), seeds=[-1]), "seed", f"from 0 to {MAX_SEED}"),
    (lambda: gen.plan_sample(card(), seed=0, truncation=0), "truncation", "above 0"),
    (lambda: gen.plan_sample(toy_card(), seed=0, format="png"), "format", "needs an image model"),
    (lambda: gen.plan_interpolation(card(), [0.1] * 8, 2), "label", "label is required"),
    (lambda: gen.plan_interpolation(card(), [0.1, 0.2], 2, label=1), "start", "exactly 8 numbers"),
    (lambda: gen.plan_interpolation(card(), 1, [float("nan")] * 8, label=1), "end", "finite"),
    (lambda: gen.plan_interpolation(card(), 1, "x", label=1), "end", "a seed or a list of 8"),
    (lambda: gen.plan_interpolation(card(), -1, 2), "start", f"from 0 to {MAX_SEED}"),
    (lambda: gen.plan_interpolation(card(), 1, 2, method="cubic"), "method", "slerp, lerp"),
    (lambda: gen.plan_interpolation(card(), 1, 2, steps=1), "steps", "at least 2"),
    (lambda: gen.plan_interpolation(card(), 1, 2, format="gif", label=12), "label", "0 to 9"),
    (lambda: gen.plan_interpolation(toy_card(), 1, 2, format="gif"), "format", "use format array"),
])
def test_requests_the_model_cannot_honour_name_their_field(call, field, says):
    refused(field, says, call)


def test_a_model_of_points_plans_arrays():
    latents, labels, _ = gen.plan_sample(toy_card(), seed=0, n=3, format="array")
    assert latents.shape == (3, 2) and labels is None


# --- pictures ----------------------------------------------------------------------------------

def random_images(n: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    images = np.random.default_rng(seed).uniform(-1.1, 1.1, (n, channels, SIDE, SIDE))
    return images.astype(np.float32)


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return np.asarray(image)


def test_pixels_are_tanh_outputs_scaled_rounded_and_clipped():
    pixels = gen.to_uint8(np.array([-2.0, -1.0, 0.0, 0.999, 1.0, 3.0], np.float32).reshape(1, 1, 1, 6))
    assert pixels.shape == (1, 1, 6, 1) and pixels.ravel().tolist() == [0, 0, 128, 255, 255, 255]


@pytest.mark.parametrize("channels", [1, 3])
def test_a_png_decodes_to_its_pixels(channels):
    images = random_images(3, channels)
    pixels = gen.to_uint8(images)
    for data, expected in zip(gen.png_images(images), pixels):
        got = decoded(data)
        np.testing.assert_array_equal(got, expected[..., 0] if channels == 1 else expected)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        gen.encode_png(np.zeros((4, 4, 2), np.uint8))


@pytest.mark.parametrize("n, columns, rows, cols", [
    (1, None, 1, 1), (4, None, 2, 2), (5, None, 2, 3), (16, None, 4, 4), (17, None, 4, 5),
    (6, 3, 2, 3), (6, 4, 2, 4), (3, 10, 1, 3),
])
def test_a_grid_is_as_square_as_possible_unless_columns_are_given(n, columns, rows, cols):
    images = random_images(n)
    grid = decoded(gen.grid_png(images, columns))
    assert grid.shape == (rows * (SIDE + PAD) + PAD, cols * (SIDE + PAD) + PAD)
    pixels = gen.to_uint8(images)[..., 0]
    last = n - 1
    top, left = PAD + (last // cols) * (SIDE + PAD), PAD + (last % cols) * (SIDE + PAD)
    np.testing.assert_array_equal(grid[top:top + SIDE, left:left + SIDE], pixels[last])
    assert not grid[:PAD].any() and not grid[:, :PAD].any(), "black padding"


def test_a_strip_is_one_row():
    strip = decoded(gen.strip_png(random_images(7)))
    assert strip.shape == (SIDE + 2 * PAD, 7 * (SIDE + PAD) + PAD)


@pytest.mark.parametrize("channels", [1, 3])
def test_an_animated_gif_has_a_frame_per_image_and_loops(channels):
    images = random_images(5, channels)
    data = gen.animated_gif(images, frame_ms=40)
    assert data == gen.animated_gif(images, frame_ms=40), "deterministic bytes"
    with Image.open(io.BytesIO(data)) as animation:
        assert animation.format == "GIF" and animation.n_frames == 5
        assert animation.size == (SIDE, SIDE) and animation.info["loop"] == 0
        assert animation.info["duration"] == 40
        frames = [np.asarray(f.convert("L" if channels == 1 else "RGB")) for f in
                  ImageSequence.Iterator(animation)]
    if channels == 1:  # grey frames need no palette: exact
        np.testing.assert_array_equal(frames[2], gen.to_uint8(images)[2, ..., 0])


def test_atomic_write_writes_bytes_or_through_a_function(tmp_path):
    path = gen.atomic_write(tmp_path / "sub" / "a.png", b"first")
    assert path.read_bytes() == b"first"
    gen.atomic_write(path, lambda handle: handle.write(b"second"))
    assert path.read_bytes() == b"second" and sorted(p.name for p in path.parent.iterdir()) == ["a.png"]


# --- opening an exported generator, store naming ---------------------------------------------

def test_an_onnx_generator_reads_its_card_and_generates(tiny_onnx):
    generator = gen.OnnxGenerator(tiny_onnx, device="cpu", threads=1)
    assert generator.card.name == "tiny" and generator.card.num_classes == 10
    assert generator.providers == ["CPUExecutionProvider"] and generator.version == "file"
    assert generator.session.get_session_options().intra_op_num_threads == 1
    generator.warm_up([1, 3])
    latents, labels, _ = gen.plan_sample(generator.card, seed=0, n=3)
    images = generator.generate(latents, labels)
    assert images.shape == (3, 1, SIDE, SIDE) and images.dtype == np.float32


def test_threads_are_detected_not_read_from_the_environment(tiny_onnx, monkeypatch):
    monkeypatch.setenv("DCGAN_ORT_THREADS", "7")
    generator = gen.OnnxGenerator(tiny_onnx, device="cpu")
    assert generator.session.get_session_options().intra_op_num_threads == gen.cpu_threads()


def test_opening_refuses_bad_devices_and_files(tiny_onnx, tmp_path):
    with pytest.raises(ModelLoadError, match="device must be one of auto, cpu, cuda, got 'gpu'"):
        gen.OnnxGenerator(tiny_onnx, device="gpu")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"junk")
    with pytest.raises(ModelLoadError, match="junk.onnx: ONNX Runtime cannot open it"):
        gen.OnnxGenerator(junk, device="cpu")


def test_store_naming_and_model_resolution(tiny_onnx, tmp_path):
    assert gen.store_name("mnist") == "dcgan-mnist" and gen.DEFAULT_TAG == "dcgan-mnist:latest"
    assert gen.STORE_FILE == "generator.onnx" and gen.BUNDLED.name == "dcgan-mnist.onnx"
    assert gen.resolve_model(str(tiny_onnx)) == (tiny_onnx, "file")
    with pytest.raises(ModelLoadError, match="--model=.*nowhere.onnx: no such file"):
        gen.resolve_model(str(tmp_path / "nowhere.onnx"), setting="--model")


# --- the same request, the same bytes: CLI and HTTP ---------------------------------------------

@pytest.fixture(scope="module", params=[10, 0], ids=["conditional", "unconditional"])
def served(request, tmp_path_factory):
    """A tiny exported generator, and the service serving that very file on the CPU with
    the thread count the CLI uses."""
    path = export_tiny(tmp_path_factory.mktemp("same-bytes") / "tiny.onnx",
                       num_classes=request.param)
    with pytest.MonkeyPatch.context() as monkeypatch:
        with serving_app(monkeypatch, path, DCGAN_DEVICE="cpu",
                         DCGAN_ORT_THREADS=str(gen.cpu_threads())) as client:
            assert client.get("/model").json()["ready"]
            yield path, client, request.param


def dcgan(*args) -> None:
    from typer.testing import CliRunner

    from training.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)


SAMPLES = [  # (CLI options, the same request to POST /sample)
    (["--seeds", "3-8"], {"n": 6, "seed": 3}),
    (["--seeds", "0-4", "--truncation", "0.7", "--nrow", "2"],
     {"n": 5, "seed": 0, "truncation": 0.7, "columns": 2}),
    (["--seeds", "10-25", "--label", "4"], {"n": 16, "seed": 10, "label": 4}),
]
WALKS = [  # (CLI options, the same request to POST /interpolate)
    (["--start", "3", "--end", "8", "--steps", "5"], {"start": 3, "end": 8, "steps": 5}),
    (["--start", "1", "--end", "2", "--steps", "6", "--method", "lerp", "--truncation", "1.2"],
     {"start": 1, "end": 2, "steps": 6, "method": "lerp", "truncation": 1.2}),
    (["--start", "0", "--end", "9", "--steps", "4", "--label", "6"],
     {"start": 0, "end": 9, "steps": 4, "label": 6}),
]


def _drop_label(options: list[str], body: dict) -> tuple[list[str], dict]:
    if "--label" in options:  # an unconditional model refuses labels: ask without
        at = options.index("--label")
        options = options[:at] + options[at + 2:]
    return options, {k: v for k, v in body.items() if k != "label"}


@pytest.mark.parametrize("options, body", SAMPLES, ids=["seeds", "truncation-columns", "label"])
def test_dcgan_sample_writes_the_bytes_of_post_sample(served, tmp_path, options, body):
    path, client, num_classes = served
    if not num_classes:
        options, body = _drop_label(options, body)
    out = tmp_path / "grid.png"
    dcgan("sample", path, *options, "--out", out)
    response = client.post("/sample", json={**body, "format": "png"})
    assert response.status_code == 200, response.text
    assert out.read_bytes() == response.content


@pytest.mark.parametrize("picture", ["png", "gif"])
@pytest.mark.parametrize("options, body", WALKS, ids=["seeds", "lerp-truncation", "label"])
def test_dcgan_interpolate_writes_the_bytes_of_post_interpolate(served, tmp_path, options, body,
                                                                picture):
    path, client, num_classes = served
    if not num_classes:
        options, body = _drop_label(options, body)
    out = tmp_path / f"walk.{picture}"
    dcgan("interpolate", path, *options, "--out", out)
    response = client.post("/interpolate", json={**body, "format": picture})
    assert response.status_code == 200, response.text
    assert out.read_bytes() == response.content
    if num_classes and "label" not in body:  # the frames are the samples of the end points
        frames = client.post("/interpolate", json={**body, "format": "frames"}).json()
        first = client.post("/sample", json={"n": 1, "seed": body["start"],
                                             **({"truncation": body["truncation"]}
                                                if "truncation" in body else {})}).json()
        assert frames["labels"][0] == body["start"] % 10
        assert frames["labels"][-1] == body["end"] % 10
        assert frames["frames"][0] == first["images"][0]
