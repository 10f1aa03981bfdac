"""The latent-space commands against the service on the same file: `dcgan project` finds
the latents POST /project finds, `dcgan edit` and `dcgan combine` write the bytes of
POST /edit and /combine; `--refine` lowers the distance through the torch generator;
and the sidecars' life: trained, computed, carried by export and the model store,
refused when they belong to another generator."""

from __future__ import annotations

import base64
import json
import shutil

import pytest
from latent_fixtures import digit_png, export_latent_model
from test_service_runtime import export_tiny, serving_app

from models import generation as gen


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    path = export_latent_model(tmp_path_factory.mktemp("latent-cli") / "tiny.onnx")
    with pytest.MonkeyPatch.context() as monkeypatch:
        with serving_app(monkeypatch, path, DCGAN_DEVICE="cpu",
                         DCGAN_ORT_THREADS=str(gen.cpu_threads())) as client:
            assert client.get("/model").json()["encoder"]
            yield path, client


def dcgan(*args) -> str:
    from typer.testing import CliRunner

    from training.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


@pytest.mark.parametrize("search", [0, 3])
def test_dcgan_project_finds_the_latents_of_post_project(served, tmp_path, search):
    path, client = served
    files = []
    for k, picture in enumerate([digit_png(0), digit_png(1, invert=True, size=100)]):
        files.append(tmp_path / f"{k}.png")
        files[-1].write_bytes(picture)
    dcgan("project", *files, "--model", path, "--search", search, "--json", tmp_path / "p.json",
          "--out", tmp_path / "made")
    mine = json.loads((tmp_path / "p.json").read_text())
    theirs = client.post("/project", json={"images": [base64.b64encode(f.read_bytes()).decode()
                                                      for f in files], "search": search}).json()
    assert mine["latents"] == theirs["latents"]
    assert mine["distances"] == pytest.approx(theirs["distances"], abs=1e-6)
    made = (tmp_path / "made" / "1.reconstruction.png").read_bytes()
    assert made == base64.b64decode(theirs["reconstructions"][1])


def test_refine_lowers_the_distance_through_the_torch_generator(served, tmp_path):
    path, _ = served
    image = tmp_path / "digit.png"
    image.write_bytes(digit_png(7))
    dcgan("project", image, "--model", path, "--refine", 20, "--feature-weight", 0,
          "--json", tmp_path / "r.json")
    body = json.loads((tmp_path / "r.json").read_text())
    assert body["distances"][0] < body["search"]["distances_before"][0]


EDITS = [  # (CLI options, the same request to POST /edit)
    (["--start", "4", "--direction", "sefa2", "--strengths", "-2,-1,0,1,2"],
     {"start": 4, "direction": "sefa2", "strengths": [-2, -1, 0, 1, 2]}),
    (["--start", "9", "--from-class", "2", "--to-class", "5", "--strengths", "0,0.5,1",
      "--truncation", "1.5"],
     {"start": 9, "from_class": 2, "to_class": 5, "strengths": [0, 0.5, 1], "truncation": 1.5}),
]


@pytest.mark.parametrize("picture", ["png", "gif"])
@pytest.mark.parametrize("options, body", EDITS, ids=["sefa", "class"])
def test_dcgan_edit_writes_the_bytes_of_post_edit(served, tmp_path, options, body, picture):
    path, client = served
    out = tmp_path / f"edit.{picture}"
    dcgan("edit", "--model", path, *options, "--out", out)
    response = client.post("/edit", json={**body, "format": picture})
    assert response.status_code == 200, response.text
    assert out.read_bytes() == response.content


def test_dcgan_edit_starts_from_a_projected_latent(served, tmp_path):
    path, client = served
    (tmp_path / "d.png").write_bytes(digit_png(3))
    dcgan("project", tmp_path / "d.png", "--model", path, "--json", tmp_path / "p.json")
    dcgan("edit", "--model", path, "--start-latent", tmp_path / "p.json", "--direction", "sefa0",
          "--strengths", "0,1", "--out", tmp_path / "e.png")
    latent = json.loads((tmp_path / "p.json").read_text())["latents"][0]
    response = client.post("/edit", json={"start": latent, "direction": "sefa0", "strengths": [0, 1],
                                          "format": "png"})
    assert (tmp_path / "e.png").read_bytes() == response.content


def test_dcgan_combine_writes_the_bytes_of_post_combine(served, tmp_path):
    path, client = served
    (tmp_path / "z.json").write_text(json.dumps([0.25] * 8))
    dcgan("combine", "1:1", "2:-1", "3", f"{tmp_path / 'z.json'}:0.5", "--model", path,
          "--out", tmp_path / "sum.png")
    response = client.post("/combine", json={"terms": [
        {"seed": 1, "weight": 1}, {"seed": 2, "weight": -1}, {"seed": 3},
        {"latent": [0.25] * 8, "weight": 0.5}], "format": "png"})
    assert (tmp_path / "sum.png").read_bytes() == response.content


def test_user_errors_are_one_line(served, tmp_path):
    from typer.testing import CliRunner

    from training.cli import app

    path, _ = served
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    for args, says in [
        (["project", tmp_path / "bad.png", "--model", path], "not a PNG or JPEG image"),
        (["edit", "--model", path, "--start", "1", "--direction", "up"], "direction must be one of"),
        (["edit", "--model", path, "--direction", "sefa0"], "give either --start SEED"),
        (["combine", "x:y", "--model", path], "SEED:WEIGHT"),
    ]:
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exit_code == 1 and says in result.output, result.output
        assert "Traceback" not in result.output


# --- sidecars: made, carried, refused -------------------------------------------------------

def test_sidecars_of_another_generator_are_refused_with_the_reason(served, tmp_path):
    path, _ = served
    other = export_tiny(tmp_path / "other.onnx", num_classes=0, nz=8)
    for kind in ("encoder", "latent"):
        shutil.copyfile(gen.sidecar_path(path, kind), gen.sidecar_path(other, kind))
    space = gen.open_latent_space(other, gen.OnnxGenerator(other, device="cpu").card)
    assert space.encoder is None and space.directions is None
    assert len(space.problems) == 2 and all("another generator" in p for p in space.problems)


def test_train_encoder_and_directions_make_sidecars_the_service_takes(tmp_path, tiny_run):
    """From a run: the encoder waits in the run, and export carries it beside the file,
    with the directions."""
    tiny_run = shutil.copytree(tiny_run, tmp_path / "run")
    dcgan("train-encoder", tiny_run, "--steps", 2, "--batch-size", 4, "--feature-weight", 0,
          "--no-progress")
    assert (tiny_run / "encoder.pt").is_file()
    out = tmp_path / "tiny.onnx"
    dcgan("export", tiny_run, "--out", out, "--no-evaluate")
    for kind in ("encoder", "latent"):
        assert gen.sidecar_path(out, kind).is_file()
    space = gen.open_latent_space(out, gen.OnnxGenerator(out, device="cpu").card)
    assert space.problems == [] and space.encoder is not None
    assert space.directions.class_means is None, "--no-evaluate: no classifier, no class means"
    dcgan("directions", out, "--samples", 200)
    space = gen.open_latent_space(out, gen.OnnxGenerator(out, device="cpu").card)
    assert space.directions.class_means.shape == (10, 16) and sum(space.directions.class_counts) > 0
    # an ONNX file directly: the encoder is written beside it
    (tiny_run / "encoder.pt").unlink()
    dcgan("train-encoder", out, "--steps", 2, "--batch-size", 4, "--feature-weight", 0,
          "--no-progress")
    assert gen.open_latent_space(out, gen.OnnxGenerator(out, device="cpu").card).encoder is not None
