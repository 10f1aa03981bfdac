"""Quality metrics: real data scores at its floor, broken generators far from it, and
every user error is one clear line. Uses scikit-learn's digits at 16x16 (offline, a
classifier trains in seconds) and small sample counts."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from models import build_models
from models.card import ModelCard
from training.cli import app
from training.data import load_dataset, toy_modes
from training.evaluate import (
    SELECTION_SEEDS,
    EvaluationError,
    Evaluator,
    PeriodicEvaluator,
    Source,
    evaluate,
    selection_score,
)
from training.evaluate.cli import evaluate_command
from training.evaluate.metrics import prdc
from training.evaluate.toys import discriminator_view, toy_figures

SIZE, COUNT = 16, 120
DCGAN = {"nz": 8, "ngf": 8, "ndf": 8, "nc": 1, "image_size": SIZE, "num_classes": 0}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One classifier cache for the module: the digits classifier trains once, for 4
    epochs rather than 10 (enough to tell digits apart; the suite runs on shared CPUs)."""
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("cache")
        patch.setenv("DCGAN_CACHE", str(path))
        patch.setattr("training.evaluate.features.CLASSIFIER_EPOCHS", 4)
        yield path


@pytest.fixture(scope="module")
def digits(cache):
    return Evaluator("digits", image_size=SIZE, nc=1, num_samples=COUNT)


@pytest.fixture(scope="module")
def train_images():
    data = load_dataset("digits", image_size=SIZE, split="train")
    images = torch.stack([data[i][0] for i in range(len(data))])
    labels = np.array([data[i][1] for i in range(len(data))])
    return images, labels


def stand_in(card: ModelCard, generate) -> Source:
    """Any object with a card and `generate(latents, labels)` is a Source."""
    return SimpleNamespace(card=card, generate=generate)


def pool_source(pool: torch.Tensor, num_classes: int = 0, by_label=None) -> Source:
    """A stand-in generator that returns images from `pool` in turn (or, when
    conditional, an image of the asked label from `by_label`)."""
    card = ModelCard(name="stand-in", model={"nz": 4, "num_classes": num_classes})
    drawn = {"next": 0}

    def run(latents, labels):
        if labels is not None:
            return np.stack([by_label[label][i % len(by_label[label])].numpy()
                             for i, label in enumerate(labels)])
        rows = (drawn["next"] + np.arange(len(latents))) % len(pool)
        drawn["next"] += len(latents)
        return pool[rows].numpy()

    return stand_in(card, run)


def test_real_images_score_near_the_floor_and_noise_far_above(digits, train_images):
    images, _ = train_images
    shuffled = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(3))]
    real = digits(pool_source(shuffled))
    noise = digits(pool_source(torch.rand(COUNT, 1, SIZE, SIZE) * 2 - 1))
    assert real["fd_floor"] > 0 and real["fd_ratio"] < 2.5
    assert noise["fd_ratio"] > 10
    assert noise["kid"] > 10 * max(real["kid"], real["kid_floor"], 1e-3)
    assert real["classes_covered"] == 10
    # Copies of training images are at distance 0 from the training set: memorised.
    assert real["nn_distance"] == 0 and real["nn_ratio"] == 0
    assert noise["nn_ratio"] > 1.5
    assert 0.8 < real["classifier_accuracy"] <= 1.0
    assert "held-out" in real["reference"] and "test split" in real["reference"]


def test_a_generator_of_one_class_covers_one_class(digits, train_images):
    images, labels = train_images
    ones = digits(pool_source(images[labels == 1]))
    assert ones["classes_covered"] == 1
    assert ones["class_histogram"][1] >= 0.9 * COUNT
    assert ones["class_kl"] > 0.8 * math.log(10)  # log 10 for a perfect one-class generator
    assert ones["classes_covered_floor"] == 10 and ones["class_kl_floor"] < 0.3
    assert ones["fd_ratio"] > 5


def test_conditional_generators_are_checked_against_their_labels(digits, train_images):
    images, labels = train_images
    by_label = {k: images[labels == k] for k in range(10)}
    right = digits(pool_source(images, num_classes=10, by_label=by_label))
    shifted = {k: by_label[(k + 1) % 10] for k in range(10)}
    wrong = digits(pool_source(images, num_classes=10, by_label=shifted))
    assert right["label_accuracy"] > 0.85
    assert wrong["label_accuracy"] < 0.2
    assert right["classes_covered"] == 10


def test_the_classifiers_are_cached_and_not_trained_again(digits, cache, monkeypatch):
    files = sorted((cache / "classifiers").glob("digits-16px-1ch*.pt"))
    assert [f.name for f in files] == ["digits-16px-1ch-resnet-v1.pt", "digits-16px-1ch-v1.pt"]
    stamps = [f.stat().st_mtime_ns for f in files]

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier was trained again")

    monkeypatch.setattr("training.evaluate.features.train_classifier", no_training)
    again = Evaluator("digits", image_size=SIZE, nc=1, num_samples=COUNT, metrics=["fd"])
    assert again.accuracies == digits.accuracies
    assert [f.stat().st_mtime_ns for f in files] == stamps


def test_periodic_evaluator_takes_a_module_and_restores_its_mode(cache):
    generator, _ = build_models("dcgan", DCGAN)
    generator.train()
    periodic = PeriodicEvaluator("digits", image_size=SIZE, nc=1, num_samples=100)
    figures = periodic(generator)
    assert generator.training
    assert {"fd", "fd_floor", "fd_ratio", "classes_covered", "class_kl"} <= set(figures)
    assert {"fd2", "fd2_floor", "fd2_ratio", "precision", "recall2_floor"} <= set(figures)
    assert figures["fd_ratio"] > 1 and figures["num_samples"] == 100
    # best.pt is chosen by the mean of the two FD ratios
    assert selection_score(figures) == pytest.approx((figures["fd_ratio"] + figures["fd2_ratio"]) / 2)
    assert selection_score({"fd_ratio": 3.0, "fd": 9.0}) == 3.0  # one feature space
    assert "nn_distance" not in figures  # periodic evaluation stays cheap
    json.dumps(figures)  # logged as JSON lines by the training loop
    # best.pt is picked on seeds of its own, not on those the card then reports
    assert figures["sample_seeds"] == f"{SELECTION_SEEDS}..{SELECTION_SEEDS + 99}"
    reported = Evaluator("digits", image_size=SIZE, nc=1, num_samples=100, metrics=["fd"])
    assert reported(generator, first_seed=SELECTION_SEEDS)["fd"] == pytest.approx(figures["fd"])
    assert reported(generator)["fd"] != pytest.approx(figures["fd"])


def test_toy_figures_follow_the_pacgan_definitions():
    centres, std = toy_modes("ring")
    every = toy_figures(np.repeat(centres, 10, axis=0), centres, std)
    pacgan = {key: every[key] for key in ("modes", "num_modes", "high_quality", "reverse_kl")}
    assert pacgan == {"modes": 8, "num_modes": 8, "high_quality": 100.0, "reverse_kl": 0.0}
    assert set(every) - set(pacgan) == {"grid_kl", "grid_js"}  # GAN Lab's, beside them
    one = toy_figures(np.repeat(centres[:1], 80, axis=0), centres, std)
    assert one["modes"] == 1 and one["reverse_kl"] == pytest.approx(math.log(8))
    near = toy_figures(centres[:2] + np.array([[2.9 * std, 0], [3.1 * std, 0]]), centres, std)
    assert near["modes"] == 1 and near["high_quality"] == 50.0
    lost = toy_figures(np.zeros((5, 2)), centres, std)
    assert lost["modes"] == 0 and lost["high_quality"] == 0.0 and lost["reverse_kl"] is None


def test_the_discriminators_view_reads_half_at_the_end_of_the_game():
    """Mean D(x), D(G(z)) as probabilities and the distance from 0.5 the course ends on;
    packs are judged whole (2,500 points, pack 3: the last point is left out)."""
    from models.mlp import MLPConfig, MLPDiscriminator

    real, fake = torch.randn(2500, 2), torch.randn(2500, 2) + 5
    undecided = MLPDiscriminator(MLPConfig(pack=3))
    torch.nn.init.zeros_(undecided.main[-1].weight)
    torch.nn.init.zeros_(undecided.main[-1].bias)  # logit 0: D = 0.5 everywhere
    assert discriminator_view(undecided, real, fake) == {"d_real": 0.5, "d_fake": 0.5,
                                                         "d_from_half": 0.0}

    class Sure(torch.nn.Module):  # logit +4 on the real side of x = 2.5, -4 beyond it
        def forward(self, points, labels=None):
            return torch.where(points[:, 0] < 2.5, 4.0, -4.0)

    view = discriminator_view(Sure(), real, fake)
    assert view["d_real"] > 0.95 and view["d_fake"] < 0.05 and view["d_from_half"] > 0.45
    critic = discriminator_view(Sure(), real, fake, probabilities=False)  # critic values
    assert critic["d_real"] > 3.5 and "d_from_half" not in critic


def test_toy_evaluation_reports_modes_against_real_points(cache):
    ring = Evaluator("ring", num_samples=400, metrics=["fd", "modes"])
    centres, std = toy_modes("ring")
    card = ModelCard(arch="mlp", model={"nz": 2, "out_shape": [2]})
    rng = np.random.default_rng(0)

    def mixture(latents, labels):
        picks = rng.integers(8, size=len(latents))
        return (centres[picks] + std * rng.standard_normal((len(latents), 2))).astype(np.float32)

    good = ring(stand_in(card, mixture))
    stuck = ring(stand_in(card, lambda z, _: np.repeat(centres[:1], len(z), 0).astype(np.float32)))
    assert good["modes"] == 8 and good["high_quality"] > 95 and good["fd_ratio"] < 3
    assert stuck["modes"] == 1 and stuck["fd_ratio"] > 100
    assert good["modes_floor"] == 8 and good["high_quality_floor"] > 95


def test_user_errors_are_one_clear_line(cache, tmp_path):
    generator, _ = build_models("dcgan", DCGAN)
    card = ModelCard(model=DCGAN, dataset={"name": "digits"})
    cases = [
        ({"metrics": ["fd", "sharpness"]}, "unknown metric 'sharpness'"),
        ({"num_samples": 10}, "at least 65 samples"),
        ({"num_samples": 5000}, "use at most"),
        ({"metrics": ["modes"]}, "2-D toys"),
        ({"metrics": ["inception"]}, "--inception-weights"),
        ({"metrics": ["inception"], "inception_weights": str(tmp_path / "none.pth")},
         "no Inception weights file"),
        ({"dataset": "ring"}, "2-D points"),
        ({"dataset": "cifar10"}, "1-channel images but cifar10 has 3-channel"),
        ({"dataset": "sharks"}, "unknown dataset"),
    ]
    for options, expected in cases:
        with pytest.raises(EvaluationError, match=expected) as caught:
            evaluate((generator, card), **options)
        assert "\n" not in str(caught.value)


def test_coverage_needs_labels(cache, tmp_path):
    from PIL import Image

    for i in range(12):  # a flat folder of images: no class subfolders, no labels
        Image.fromarray(np.full((SIZE, SIZE), i * 20, np.uint8)).save(tmp_path / f"{i}.png")
    with pytest.raises(EvaluationError, match="coverage needs a labelled dataset"):
        Evaluator("folder", image_size=SIZE, nc=1, root=str(tmp_path), metrics=["coverage"])


def test_cli_evaluates_a_checkpoint_and_an_onnx_file(cache, tmp_path):
    from training.checkpoint import save_checkpoint
    from training.export import export_onnx

    torch.manual_seed(0)
    generator, _ = build_models("dcgan", DCGAN)
    card = ModelCard(name="tiny", model=DCGAN, dataset={"name": "digits"}, step=7)
    save_checkpoint(tmp_path / "tiny.pt", {"config": {}, "card": card.to_dict(),
                                           "generator": generator.state_dict(), "step": 7})
    export_onnx(generator, card, tmp_path / "tiny.onnx")
    runner = CliRunner(env={"COLUMNS": "160"})  # one table row per figure
    figures = {}
    for name in ("tiny.pt", "tiny.onnx"):
        out = tmp_path / f"{name}.json"
        result = runner.invoke(app, ["evaluate", str(tmp_path / name), "-n", "100",
                                     "--metrics", "fd,coverage", "--json", str(out)])
        assert result.exit_code == 0, result.output
        assert "FD (classifier features)" in result.output and "classes covered" in result.output
        figures[name] = json.loads(out.read_text())
        assert figures[name]["step"] == 7 and figures[name]["dataset"] == "digits"
    # The same seeds through PyTorch and ONNX Runtime give the same figures.
    assert figures["tiny.pt"]["fd"] == pytest.approx(figures["tiny.onnx"]["fd"], rel=1e-3)

    failed = runner.invoke(app, ["evaluate", str(tmp_path / "tiny.pt"), "--metrics", "bogus"])
    assert failed.exit_code == 1
    assert failed.output.strip().splitlines() == [
        "error: unknown metric 'bogus'; choose from: fd, kid, prdc, coverage, modes, nn, inception"]
    missing = runner.invoke(app, ["evaluate", str(tmp_path / "nothing.pt")])
    assert missing.exit_code == 1 and "Traceback" not in missing.output
    assert len(missing.output.strip().splitlines()) == 1


def test_the_command_raises_and_leaves_printing_to_the_clis_handler(tmp_path):
    """The error line comes from the CLI's one handler: the command on its own prints
    nothing and raises."""
    alone = typer.Typer()
    alone.command("evaluate")(evaluate_command)
    alone.command("other")(lambda: None)  # two commands, so "evaluate" is a subcommand
    result = CliRunner().invoke(alone, ["evaluate", str(tmp_path / "nothing.pt")])
    assert isinstance(result.exception, FileNotFoundError) and result.output == ""


def test_two_feature_networks_each_with_its_floor(digits, train_images):
    images, _ = train_images
    assert len(digits.networks) == 2
    assert type(digits.networks[0]) is not type(digits.networks[1])
    first, second = (features for features, _ in digits.features(images[:50]))
    assert first.shape == second.shape == (50, 64)
    assert not torch.allclose(first, second)  # two instruments, not one read twice
    shuffled = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(3))]
    real = digits(pool_source(shuffled))
    pixels = torch.rand(COUNT, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    noise = digits(pool_source(pixels * 2 - 1))
    for suffix in ("", "2"):
        assert real[f"fd{suffix}_floor"] > 0 and real[f"kid{suffix}_floor"] is not None
        assert real[f"fd{suffix}_ratio"] < 2.5 and noise[f"fd{suffix}_ratio"] > 10
    assert real["fd2"] != real["fd"] and real["fd2_floor"] != real["fd_floor"]
    assert real["fd_ratio_mean"] == pytest.approx((real["fd_ratio"] + real["fd2_ratio"]) / 2)
    assert 0.8 < real["classifier2_accuracy"] <= 1.0 and "ResNet" in real["feature_space2"]
    # precision and recall in both spaces, each beside its real-vs-real value
    assert real["prdc_k"] == 5 and real["prdc_samples"] == {"generated": COUNT, "real": COUNT}
    for suffix in ("", "2"):
        for key in ("precision", "recall", "prdc_coverage"):
            assert real[key + suffix] > 0.6 and real[f"{key}{suffix}_floor"] > 0.6
        assert 0.6 < real[f"density{suffix}"] < 1.5
        # Noise collapses to one small cluster of features: no variety at all. Precision
        # alone can miss it (the cluster may sit inside a few wide real balls); density
        # and coverage do not.
        assert noise[f"recall{suffix}"] < 0.1 and noise[f"prdc_coverage{suffix}"] < 0.3
        assert noise[f"density{suffix}"] < 0.7 * noise[f"density{suffix}_floor"]


def test_prdc_on_known_point_sets():
    rng = torch.Generator().manual_seed(0)
    points = torch.randn(400, 8, generator=rng, dtype=torch.float64)
    same = prdc(points, points, k=5)
    assert same["precision"] == same["recall"] == same["prdc_coverage"] == 1.0
    assert same["density"] == pytest.approx(6 / 5)  # each ball holds its centre and k others
    other = prdc(points, torch.randn(400, 8, generator=rng, dtype=torch.float64), k=5)
    assert 0.8 < other["density"] < 1.25 and other["precision"] > 0.6 and other["recall"] > 0.6
    far = prdc(points, points + 100.0, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "prdc_coverage": 0.0}
    # a generator stuck on one real point: all its samples are real-looking, little variety
    stuck = prdc(points, points[:1].repeat(400, 1), k=5)
    assert stuck["precision"] == 1.0 and stuck["prdc_coverage"] < 0.05
    with pytest.raises(ValueError, match="more than k"):
        prdc(points[:5], points[:5], k=5)
    # against the papers' definitions written out on a full (real, fake) distance matrix
    real, fake = points.numpy()[:300], np.random.default_rng(1).normal(0.3, 1.2, (350, 8))
    k = 3

    def radii(x):
        return np.sort(np.linalg.norm(x[:, None] - x[None], axis=-1), axis=1)[:, k]

    between = np.linalg.norm(real[:, None] - fake[None], axis=-1)  # (real, fake)
    expected = {"precision": (between <= radii(real)[:, None]).any(0).mean(),
                "recall": (between <= radii(fake)[None, :]).any(1).mean(),
                "density": (between <= radii(real)[:, None]).sum(0).mean() / k,
                "prdc_coverage": (between.min(1) <= radii(real)).mean()}
    got = prdc(torch.from_numpy(real), torch.from_numpy(fake), k=k)
    assert got == pytest.approx(expected) and 0 < got["precision"] < 1


def test_the_truncation_curve_has_a_row_per_value_and_a_suggestion(cache):
    torch.manual_seed(0)
    generator, _ = build_models("dcgan", DCGAN)
    card = ModelCard(model=DCGAN, dataset={"name": "digits"})
    result = evaluate((generator, card), num_samples=100, metrics="fd,prdc",
                      truncations="0.5, 1,none")
    curve = result["truncation"]
    assert [row["truncation"] for row in curve["rows"]] == [0.5, 1.0, None]
    for row in curve["rows"]:
        assert {"fd_ratio", "fd2_ratio", "fd_ratio_mean", "precision", "recall", "recall2"} <= set(row)
    best = min(curve["rows"], key=lambda row: row["fd_ratio_mean"])
    assert curve["suggested"] == best["truncation"] and "mean FD ratio" in curve["rule"]
    assert curve["floors"]["precision"] > 0.5 and curve["num_samples"] == 100 and curve["prdc_k"] == 5
    # no truncation in the sweep is the untruncated evaluation itself
    assert curve["rows"][-1]["fd"] == pytest.approx(result["fd"])
    for wrong, message in (("0.5,abc", "not a number"), ("0.01", "from 0.05 to 4"),
                           ("1,1", "given twice"), ("", "no truncation value")):
        with pytest.raises(EvaluationError, match=message):
            evaluate((generator, card), num_samples=100, truncations=wrong)
    with pytest.raises(EvaluationError, match="needs the metrics fd and prdc"):
        evaluate((generator, card), num_samples=100, metrics="fd", truncations="1")


def test_cli_prints_both_networks_and_prdc_beside_their_floors(cache, tmp_path):
    from training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    generator, _ = build_models("dcgan", DCGAN)
    card = ModelCard(name="tiny", model=DCGAN, dataset={"name": "digits"}, step=3)
    save_checkpoint(tmp_path / "tiny.pt", {"config": {}, "card": card.to_dict(),
                                           "generator": generator.state_dict(), "step": 3})
    runner = CliRunner(env={"COLUMNS": "200"})
    result = runner.invoke(app, ["evaluate", str(tmp_path / "tiny.pt"), "-n", "100", "--metrics",
                                 "fd,prdc", "--truncation", "0.7,none", "--curve",
                                 str(tmp_path / "curve.png"), "--json", str(tmp_path / "out.json")])
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "out.json").read_text())
    lines = result.output.splitlines()

    def line(label: str) -> str:
        return next(text for text in lines if text.strip("│ ").startswith(label))

    for label, key in (("FD (network 2)", "fd2_floor"), ("precision (network 2)", "precision2_floor"),
                       ("recall ", "recall_floor"), ("coverage (k-NN balls)", "prdc_coverage_floor")):
        assert f"{figures[key]:.3g}" in line(label)  # the floor printed beside the figure
    assert "k = 5, 100 generated vs 100 held-out real" in result.output
    assert "suggested:" in result.output and "real vs real" in result.output
    curve = json.loads((tmp_path / "curve.json").read_text())
    assert curve == figures["truncation"] and len(curve["rows"]) == 2
    pytest.importorskip("matplotlib")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def digit_folder(folder, count=700):
    """The first `count` mnist5k digits as an unlabelled folder of PNGs."""
    from PIL import Image

    from training.data import read_mnist5k

    folder.mkdir()
    images, _ = read_mnist5k()
    for index in range(count):
        Image.fromarray(images[index * 5000 // count]).save(folder / f"{index:04d}.png")
    return folder


@pytest.fixture(scope="module")
def digits_as_folder(tmp_path_factory):
    return digit_folder(tmp_path_factory.mktemp("unlabelled") / "digits", count=2000)


@pytest.fixture
def short_encoder(monkeypatch):
    """The contrastive encoder on a budget a test can afford."""
    from training.evaluate import encoder

    monkeypatch.setattr(encoder, "ENCODER_STEPS", 60)


def test_unlabelled_images_get_one_learned_feature_space_cached(cache, digits_as_folder,
                                                                short_encoder, monkeypatch):
    from training.evaluate import encoder

    folder = Evaluator("folder", image_size=SIZE, nc=1, root=str(digits_as_folder),
                       num_samples=70, metrics="fd,prdc")
    facts = folder.notes["encoder"]
    assert facts["kind"] == "contrastive" and facts["images"] == 1800  # the train split only
    assert facts["view_matching"] > 3 * facts["view_matching_chance"]  # it learned something
    rng = np.random.default_rng(0)
    card = ModelCard(name="noise", model={"nz": 4, "num_classes": 0})
    figures = folder(stand_in(card, lambda z, _: rng.uniform(-1, 1, (len(z), 1, SIZE, SIZE)).astype(np.float32)))
    assert len(folder.networks) == 1 and "trained without labels" in figures["feature_space"]
    assert "fd2" not in figures and "feature_space2" not in figures and "fd_ratio_mean" not in figures
    assert {"fd", "fd_ratio", "fd_floor", "precision", "recall_floor"} <= set(figures)
    assert selection_score(figures) == figures["fd_ratio"]  # best.pt goes by the one ratio

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although the encoder is cached")

    monkeypatch.setattr(encoder, "train_encoder", no_training)
    again = Evaluator("folder", image_size=SIZE, nc=1, root=str(digits_as_folder), num_samples=70,
                      metrics="fd")
    assert again.notes["encoder"] == facts


def test_the_learned_features_rank_noisier_digits_worse(cache, digits_as_folder, short_encoder):
    """Digits of the folder's train split, then the same digits with ever more noise:
    each step must score a higher FD ratio in the learned features."""
    folder = Evaluator("folder", image_size=SIZE, nc=1, root=str(digits_as_folder),
                       num_samples=200, metrics="fd")
    # 200 train digits of every class (the folder is sorted by class), not the floor's
    real = folder.real.train[torch.randperm(len(folder.real.train),
                                            generator=torch.Generator().manual_seed(1))[:200]]
    noise = torch.randn(real.shape, generator=torch.Generator().manual_seed(1))
    card = ModelCard(name="noisy", model={"nz": 4, "num_classes": 0})
    ratios = []
    for std in (0.0, 0.3, 0.6, 1.2):
        images = (real + std * noise).clamp(-1, 1)
        figures = folder(stand_in(card, lambda z, _, images=images: images[:len(z)].numpy()))
        ratios.append(figures["fd_ratio"])
    assert ratios == sorted(ratios) and ratios[0] < 2, ratios  # real digits: near the floor


def test_too_few_unlabelled_images_keep_the_random_network_and_say_so(cache, digits_as_folder,
                                                                       monkeypatch):
    from training.evaluate import encoder

    monkeypatch.setattr(encoder, "MIN_IMAGES", 5000)
    folder = Evaluator("folder", image_size=SIZE, nc=1, root=str(digits_as_folder),
                       num_samples=70, metrics="fd")
    assert folder.notes["encoder"]["kind"] == "random"
    description = folder.notes["feature_space"]
    assert "untrained CNN, the fallback: 1800 training images are too few" in description


def test_the_sample_seeds_start_at_0_and_first_seed_moves_the_block():
    from models.latent import latents_from_seeds
    from training.evaluate.sources import draw_samples

    card = ModelCard(name="stand-in", model={"nz": 4, "num_classes": 3})
    source = stand_in(card, lambda latents, labels: latents)  # a sample is its latent
    samples, labels = draw_samples(source, 5)
    assert np.array_equal(samples.numpy(), latents_from_seeds(range(5), 4))
    assert labels.tolist() == [0, 1, 2, 0, 1]  # seed % classes
    moved, moved_labels = draw_samples(source, 5, first_seed=5)
    assert np.array_equal(moved.numpy(), latents_from_seeds(range(5, 10), 4))
    assert moved_labels.tolist() == [2, 0, 1, 2, 0]
    assert not np.array_equal(moved.numpy(), samples.numpy())
