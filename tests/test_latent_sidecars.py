"""A served model without an encoder or directions says so, and how to make them."""

from __future__ import annotations

import base64

from latent_fixtures import digit_png


def test_a_model_without_sidecars_says_so(client):
    response = client.post("/project", json={"images": [base64.b64encode(digit_png(0)).decode()]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error.startswith("images: this model has no encoder") and "dcgan train-encoder" in error
    response = client.get("/directions")
    assert response.status_code == 404 and "dcgan directions" in response.json()["error"]
    for body in ({"start": 1, "direction": "sefa0", "strengths": [1], "label": 1},
                 {"terms": [{"seed": 1}], "label": 1}):
        path = "/edit" if "start" in body else "/combine"
        response = client.post(path, json=body)
        assert response.status_code in (200, 404) or response.status_code == 400, response.text
    info = client.get("/model").json()
    assert info["encoder"] is False and info["directions"] == []


def test_the_bundled_generator_ships_with_its_encoder_and_directions():
    from models import generation as gen

    generator = gen.OnnxGenerator(gen.BUNDLED, device="cpu")
    space = gen.open_latent_space(gen.BUNDLED, generator.card)
    assert space.problems == [] and space.encoder is not None
    assert len(space.directions.sefa) == 10 and space.directions.class_means.shape == (10, 100)
    digit = gen.read_image(digit_png(0), generator.card)[None]  # a held-out 7
    made = generator.generate(space.encoder.encode(digit))
    assert gen.pixel_rms(made, digit)[0] < 0.2


def test_a_rewritten_card_keeps_the_weights_and_its_sidecars(tmp_path):
    """`dcgan recard`'s writing half: a new card goes into the file, the graph is the
    same, and the encoder and directions, which name the file's digest, follow it (they
    would otherwise be refused as another generator's)."""
    import onnx
    from latent_fixtures import export_latent_model

    from models import generation as gen
    from models.generation.latent_space import file_digest
    from training.export import read_card, rewrite_card

    path = export_latent_model(tmp_path / "tiny.onnx")
    before = onnx.load(str(path)).graph.SerializeToString()
    digest = file_digest(path)
    card = read_card(path)
    card.quality = {**card.quality, "fd_ratio": 1.25, "latent_space": {"arithmetic": {"pairs_at_least_70": 82}}}
    lines = rewrite_card(path, card)
    assert len(lines) == 3 and file_digest(path) != digest
    assert onnx.load(str(path)).graph.SerializeToString() == before
    generator = gen.OnnxGenerator(path, device="cpu")
    assert generator.card.quality["fd_ratio"] == 1.25
    assert generator.card.quality["latent_space"]["arithmetic"]["pairs_at_least_70"] == 82
    space = gen.open_latent_space(path, generator.card)
    assert space.problems == [] and space.encoder is not None and space.directions is not None
