"""Latents from seeds, truncation, interpolation and parsing of client input (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from models.latent import (
    MAX_SEED,
    as_latent,
    class_code,
    code_classes,
    interpolate,
    labels_for_seeds,
    latent_from_seed,
    latents_from_seeds,
    lerp,
    parse_seeds,
    slerp,
    truncate,
)

NZ = 100


# --- seeds -> latents -----------------------------------------------------------------


def test_a_seed_is_pcg64_standard_normal():
    """The golden contract with clients: any numpy reproduces a seed's latent."""
    for seed in (0, 1, 42, MAX_SEED):
        expected = np.random.Generator(np.random.PCG64(seed)).standard_normal(NZ)
        got = latent_from_seed(seed, NZ)
        assert got.dtype == np.float32 and got.shape == (NZ,)
        np.testing.assert_array_equal(got, expected.astype(np.float32))


def test_golden_values_of_seed_0():
    # frozen numbers: a change of generator or of dtype handling shows up here
    np.testing.assert_allclose(
        latent_from_seed(0, 3), [0.12573022, -0.13210486, 0.64042265], rtol=1e-6)


def test_same_seed_same_latent_whatever_the_batch():
    alone = latents_from_seeds([7], NZ)
    batch = latents_from_seeds([3, 7, 11, 7], NZ)
    assert batch.shape == (4, NZ) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[1], alone[0])
    np.testing.assert_array_equal(batch[3], alone[0])
    assert not np.array_equal(batch[0], batch[2])
    assert latents_from_seeds([], NZ).shape == (0, NZ)


def test_seed_range_is_checked():
    with pytest.raises(ValueError, match="seed must be an integer from 0 to"):
        latent_from_seed(-1, NZ)
    with pytest.raises(ValueError, match="seed must be an integer from 0 to"):
        latent_from_seed(MAX_SEED + 1, NZ)


# --- truncation -------------------------------------------------------------------------


def test_truncation_redraws_every_entry_inside_the_bound_reproducibly():
    plain = latents_from_seeds(range(50), NZ)
    assert np.abs(plain).max() > 2.0  # without truncation some entries are larger
    truncated = latents_from_seeds(range(50), NZ, truncation=0.5)
    assert np.abs(truncated).max() <= 0.5
    np.testing.assert_array_equal(truncated, latents_from_seeds(range(50), NZ, truncation=0.5))
    # entries already inside are kept: redrawing touches only the outliers
    inside = np.abs(plain) <= 0.5
    np.testing.assert_array_equal(truncated[inside], plain[inside])
    # redrawn, not clipped: values do not pile up on the bound
    assert np.mean(np.abs(truncated) > 0.499) < 0.01
    with pytest.raises(ValueError, match="truncation must be above 0"):
        latent_from_seed(0, NZ, truncation=0.0)


def test_truncate_clips_client_latents():
    values = np.array([-3.0, -0.5, 0.0, 0.75, 9.0])
    np.testing.assert_array_equal(truncate(values, 1.0), [-1.0, -0.5, 0.0, 0.75, 1.0])
    assert truncate(values, 1.0).dtype == np.float32
    with pytest.raises(ValueError, match="truncation must be above 0"):
        truncate(values, -1.0)


# --- interpolation ----------------------------------------------------------------------


def test_slerp_end_points_are_exact_and_the_path_stays_on_the_shell():
    start, end = latent_from_seed(1, 512), latent_from_seed(2, 512)
    for method in ("slerp", "lerp"):
        path = interpolate(start, end, 9, method)
        assert path.shape == (9, 512) and path.dtype == np.float32
        np.testing.assert_array_equal(path[0], start)
        np.testing.assert_array_equal(path[-1], end)
    shell = np.sqrt(512)
    spherical = np.linalg.norm(interpolate(start, end, 9, "slerp"), axis=1)
    linear = np.linalg.norm(interpolate(start, end, 9, "lerp"), axis=1)
    # independent Gaussian latents are near-orthogonal: lerp's midpoint falls to ~1/sqrt(2)
    assert np.all(np.abs(spherical / shell - 1) < 0.1)
    assert linear[4] / shell < 0.8
    assert spherical[4] > linear[4] * 1.3


def test_lerp_is_linear():
    start, end = np.array([0.0, 2.0]), np.array([4.0, -2.0])
    np.testing.assert_allclose(lerp(start, end, np.array([0.0, 0.25, 1.0])),
                               [[0, 2], [1, 1], [4, -2]])


def test_slerp_of_orthogonal_unit_vectors_follows_the_circle():
    start, end = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    path = slerp(start, end, np.array([0.0, 1 / 3, 0.5, 1.0]))
    angles = np.pi / 2 * np.array([0.0, 1 / 3, 0.5, 1.0])
    np.testing.assert_allclose(path, np.stack([np.cos(angles), np.sin(angles)], 1), atol=1e-6)


def test_slerp_falls_back_to_lerp_for_parallel_and_zero_vectors():
    start = np.array([1.0, 2.0, 3.0])
    t = np.linspace(0, 1, 5)
    for end in (3 * start, np.zeros(3)):
        path = slerp(start, end, t)
        assert np.all(np.isfinite(path))
        np.testing.assert_allclose(path, lerp(start, end, t), rtol=1e-6)


def test_interpolate_checks_its_arguments():
    a, b = np.zeros(4), np.ones(4)
    with pytest.raises(ValueError, match="method must be one of slerp, lerp"):
        interpolate(a, b, 4, "cubic")
    with pytest.raises(ValueError, match="steps must be at least 2"):
        interpolate(a, b, 1)
    with pytest.raises(ValueError, match="start and end must be vectors of one length"):
        interpolate(a, np.ones(5), 4)


# --- parsing client input ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text, seeds",
    [
        ("0-3", [0, 1, 2, 3]),
        ("3,7,9", [3, 7, 9]),
        ("0-2,10", [0, 1, 2, 10]),
        (" 5 , 6 ", [5, 6]),
        ("4-4", [4]),
        ("1,,2,", [1, 2]),
    ],
)
def test_parse_seeds_forms(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize(
    "text, message",
    [
        ("a", "seeds must look like '0-15' or '1,5,9'"),
        ("5-3", "seeds must look like"),
        ("1-2-3", "seeds must look like"),
        ("-1-5", "seeds must look like"),
        ("1.5", "seeds must look like"),
        ("-1", "seed must be an integer from 0"),
        ("", "no seed"),
        (",", "no seed"),
    ],
)
def test_parse_seeds_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse_seeds(text)


def test_parse_seeds_limits_the_count_before_expanding_ranges():
    assert len(parse_seeds("0-15", max_count=16)) == 16
    with pytest.raises(ValueError, match="at most 16 seeds"):
        parse_seeds("0-16", max_count=16)
    with pytest.raises(ValueError, match="at most 4 seeds"):
        parse_seeds("1,2,3,4,5", max_count=4)
    # a huge range must be refused at once, not listed first
    with pytest.raises(ValueError, match="at most 1024 seeds"):
        parse_seeds(f"0-{MAX_SEED}", max_count=1024)


def test_as_latent_checks_length_and_finiteness():
    latent = as_latent([0.5, -1, 2], 3)
    assert latent.dtype == np.float32
    np.testing.assert_array_equal(latent, [0.5, -1.0, 2.0])
    with pytest.raises(ValueError, match="start must be a list of exactly 3 numbers"):
        as_latent([1.0, 2.0], 3, field="start")
    with pytest.raises(ValueError, match="exactly 3 numbers"):
        as_latent([[1.0, 2.0, 3.0]], 3)
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="latent must hold finite numbers only"):
            as_latent([0.0, bad, 1.0], 3)


def test_default_labels_cycle_through_the_classes():
    labels = labels_for_seeds([0, 1, 9, 10, 23], 10)
    assert labels.dtype == np.int64
    assert labels.tolist() == [0, 1, 9, 0, 3]


# --- the class code of latent-classes training ------------------------------------------


def test_class_code_rows_are_orthonormal_and_the_same_in_every_run():
    code = class_code(NZ, 10)
    assert code.shape == (10, NZ) and code.dtype == np.float32
    np.testing.assert_allclose(code @ code.T, np.eye(10), atol=1e-6)
    np.testing.assert_array_equal(code, class_code(NZ, 10))
    assert not np.allclose(class_code(NZ, 10)[:3], class_code(NZ, 3))  # a code per size
    with pytest.raises(ValueError, match="nz >= classes, got nz 4 and 10 classes"):
        class_code(4, 10)


def test_code_classes_are_cones_of_equal_mass_whose_mean_lies_along_their_row():
    """What makes class arithmetic work on such a generator: each class holds a tenth of
    the Gaussian, and its mean latent points along its row of the code."""
    code = class_code(NZ, 10)
    latents = latents_from_seeds(range(20_000), NZ)
    classes = code_classes(latents, code)
    shares = np.bincount(classes, minlength=10) / len(latents)
    assert shares.min() > 0.085 and shares.max() < 0.115, shares
    for k in range(10):
        mean = latents[classes == k].mean(axis=0)
        # in the code's span (up to sampling noise), nearest its own row
        assert np.linalg.norm(code @ mean) / np.linalg.norm(mean) > 0.98
        assert mean @ code[k] / np.linalg.norm(mean) > 0.9 and code_classes(mean[None], code)[0] == k
    moved = latents[classes == 3][:200] + (code[7] - code[3]) * 3
    assert (code_classes(moved, code) == 7).mean() > 0.9
