"""Datasets as a training run sees them: item shapes, ranges, labels, splits and errors.

Everything is offline: torchvision datasets are read from tiny files written here in
the formats torchvision reads.
"""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from training.data import DATASETS, dataset_info, load_dataset, toy_modes

SIZES = (16, 32, 64)


def first_items(dataset, count=64):
    """(samples (count, ...), labels (count,)) of the first `count` items."""
    items = [dataset[i] for i in range(min(count, len(dataset)))]
    return torch.stack([sample for sample, _ in items]), [label for _, label in items]


def assert_images(samples, channels, size):
    assert samples.dtype == torch.float32
    assert samples.shape[1:] == (channels, size, size)
    assert samples.min() >= -1.0 and samples.max() <= 1.0


# --- the catalogue -------------------------------------------------------------------


def test_every_dataset_has_info_matching_its_kind():
    for name in DATASETS:
        info = dataset_info(name)
        assert info.name == name and info.description
        assert (info.kind, info.nc == 0) in (("image", False), ("points", True))
        assert info.labelled == (info.num_classes > 0)
    assert dataset_info("mnist5k").native_size == 28
    assert dataset_info("digits").native_size == 8


def test_unknown_dataset_names_the_choices():
    with pytest.raises(ValueError, match="unknown dataset 'mnist6k'; choose one of: mnist5k, "):
        dataset_info("mnist6k")
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        load_dataset("nope")


@pytest.mark.parametrize(
    ("options", "field"),
    [({"split": "valid"}, "split must be one of train, test, all, got 'valid'"),
     ({"channels": 2}, "channels must be 1 or 3"),
     ({"image_size": 0}, "image_size must be a positive"),
     ({"num_samples": 0}, "num_samples must be at least 1")],
)
def test_bad_options_name_the_field_and_allowed_values(options, field):
    with pytest.raises(ValueError, match=field):
        load_dataset("fake", **options)


# --- offline image datasets ---------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", ["mnist5k", "digits"])
def test_offline_digits_are_scaled_grey_images_with_digit_labels(name, size):
    samples, labels = first_items(load_dataset(name, image_size=size, split="test"), 400)
    assert_images(samples, 1, size)
    # Both ends of [-1, 1] are used: background is -1, strokes reach (almost) +1.
    assert samples.min() == -1.0 and samples.max() > 0.9
    assert all(isinstance(label, int) for label in labels)
    assert set(labels) <= set(range(10)) and len(set(labels)) > 1


def test_mnist5k_splits_hold_out_a_balanced_test_set():
    train, test, everything = (load_dataset("mnist5k", split=s, image_size=16)
                               for s in ("train", "test", "all"))
    assert (len(train), len(test), len(everything)) == (4000, 1000, 5000)
    assert np.bincount(train.labels.numpy()).tolist() == [400] * 10
    assert np.bincount(test.labels.numpy()).tolist() == [100] * 10
    train_images = {bytes(image.numpy()) for image in train.images}
    assert not any(bytes(image.numpy()) in train_images for image in test.images)
    assert train.num_classes == 10


def test_digits_splits_cover_every_image_once():
    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    assert len(train) + len(test) == len(load_dataset("digits", split="all")) == 1797
    assert 0.75 < len(train) / 1797 < 0.85
    assert set(test.labels.tolist()) == set(range(10))


def test_repeated_loads_give_the_same_images():
    first, _ = load_dataset("mnist5k", image_size=32)[123]
    again, _ = load_dataset("mnist5k", image_size=32)[123]
    assert torch.equal(first, again)


def test_grey_to_rgb_repeats_the_grey_channel():
    grey, label = load_dataset("mnist5k", image_size=32)[7]
    rgb, rgb_label = load_dataset("mnist5k", image_size=32, channels=3)[7]
    assert rgb.shape == (3, 32, 32) and rgb_label == label
    for channel in rgb:
        assert torch.equal(channel, grey[0])


def test_num_samples_keeps_a_seeded_subset_across_classes():
    subset = load_dataset("mnist5k", num_samples=100, seed=3)
    _, labels = first_items(subset, 100)
    assert len(subset) == 100 and len(set(labels)) > 5  # the file is sorted by class
    _, again = first_items(load_dataset("mnist5k", num_samples=100, seed=3), 100)
    _, other = first_items(load_dataset("mnist5k", num_samples=100, seed=4), 100)
    assert labels == again and labels != other


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels", [1, 3])
def test_fake_images_have_any_shape_and_ten_classes(size, channels):
    dataset = load_dataset("fake", image_size=size, channels=channels, num_samples=50)
    samples, labels = first_items(dataset)
    assert len(dataset) == 50 and dataset.num_classes == 10
    assert_images(samples, channels, size)
    assert samples.min() < -0.9 and samples.max() > 0.9
    assert set(labels) <= set(range(10)) and len(set(labels)) > 3


def test_fake_is_deterministic_and_lazy():
    huge = load_dataset("fake", image_size=256, num_samples=10**9, seed=1)
    assert len(huge) == 10**9 and huge[10**9 - 1][0].shape == (3, 256, 256)
    sample, label = huge[5]
    same, same_label = load_dataset("fake", image_size=256, num_samples=10**9, seed=1)[5]
    assert torch.equal(sample, same) and label == same_label
    assert not torch.equal(sample, huge[6][0])
    assert not torch.equal(sample, load_dataset("fake", image_size=256, seed=2)[5][0])
    assert len(load_dataset("fake")) == 10_000


# --- image folders ------------------------------------------------------------------


def write_image(path, colour, size=(40, 30)):
    Image.new("RGB", size, colour).save(path)


@pytest.mark.parametrize("size", SIZES)
def test_flat_folder_is_unlabelled_and_centre_cropped(tmp_path, size):
    for i in range(3):
        write_image(tmp_path / f"{i}.png", (255, 0, 0))  # 40x30: not square
    (tmp_path / "notes.txt").write_text("not an image")
    dataset = load_dataset("folder", root=str(tmp_path), image_size=size, split="all")
    samples, labels = first_items(dataset)
    assert len(dataset) == 3 and labels == [-1, -1, -1] and dataset.num_classes == 0
    assert_images(samples, 3, size)
    assert torch.allclose(samples[:, 0], torch.ones(())) and torch.allclose(samples[:, 1], -torch.ones(()))


def test_class_subfolders_give_labels(tmp_path):
    for label, colour in enumerate([(0, 0, 0), (255, 255, 255)]):
        (tmp_path / f"class{label}").mkdir()
        write_image(tmp_path / f"class{label}" / "a.jpg", colour)
    dataset = load_dataset("folder", root=str(tmp_path), image_size=16, split="all")
    samples, labels = first_items(dataset)
    assert labels == [0, 1] and dataset.num_classes == 2
    assert samples[0].max() < -0.9 and samples[1].min() > 0.9


def test_rgb_to_grey_uses_luma(tmp_path):
    write_image(tmp_path / "red.png", (255, 0, 0))
    write_image(tmp_path / "red2.png", (255, 0, 0))
    grey, _ = load_dataset("folder", root=str(tmp_path), image_size=16, channels=1)[0]
    assert grey.shape == (1, 16, 16)
    assert torch.allclose(grey, torch.full_like(grey, round(0.299 * 255) / 127.5 - 1), atol=0.01)


def test_missing_or_empty_folder_names_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=f"image folder {missing} does not exist"):
        load_dataset("folder", root=str(missing))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=f"no images in {tmp_path / 'empty'}"):
        load_dataset("folder", root=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="--data-root"):
        load_dataset("folder")


# --- torchvision datasets from fabricated local files --------------------------------


def write_idx(raw_dir, prefix, images, labels):
    """MNIST's big-endian idx format: magic (type 0x08 = ubyte, number of dims), dims, data."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    with open(raw_dir / f"{prefix}-images-idx3-ubyte", "wb") as file:
        file.write(struct.pack(">iiii", 0x0803, *images.shape) + images.tobytes())
    with open(raw_dir / f"{prefix}-labels-idx1-ubyte", "wb") as file:
        file.write(struct.pack(">ii", 0x0801, len(labels)) + labels.tobytes())


def fabricate_mnist(raw_dir):
    """6 train images (even: black, odd: white) labelled 0..5, 3 test images labelled 7."""
    train = np.zeros((6, 28, 28), np.uint8)
    train[1::2] = 255
    write_idx(raw_dir, "train", train, np.arange(6, dtype=np.uint8))
    write_idx(raw_dir, "t10k", np.zeros((3, 28, 28), np.uint8), np.full(3, 7, np.uint8))


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
@pytest.mark.parametrize("size", SIZES)
def test_mnist_formats_load_from_local_idx_files(tmp_path, name, folder, size):
    fabricate_mnist(tmp_path / folder / "raw")
    samples, labels = first_items(load_dataset(name, root=str(tmp_path), image_size=size))
    assert_images(samples, 1, size)
    assert labels == [0, 1, 2, 3, 4, 5]
    assert torch.all(samples[0] == -1) and torch.all(samples[1] == 1)
    _, test_labels = first_items(load_dataset(name, root=str(tmp_path), split="test"))
    assert test_labels == [7, 7, 7]
    everything = load_dataset(name, root=str(tmp_path), split="all", channels=3)
    assert len(everything) == 9 and everything[8][0].shape == (3, 32, 32)


def test_cifar10_loads_from_local_batches(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)  # md5 of the real files
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    red = np.zeros((2, 3, 32, 32), np.uint8)
    red[:, 0] = 255
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(batches / name, "wb") as file:
            pickle.dump({"data": red.reshape(2, -1), "labels": [3, 9]}, file)
    with open(batches / "batches.meta", "wb") as file:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, file)
    dataset = load_dataset("cifar10", root=str(tmp_path), image_size=16)
    samples, labels = first_items(dataset)
    assert len(dataset) == 10 and labels[:2] == [3, 9]
    assert_images(samples, 3, 16)
    assert torch.all(samples[:, 0] == 1) and torch.all(samples[:, 1:] == -1)
    assert load_dataset("cifar10", root=str(tmp_path), channels=1)[0][0].shape == (1, 32, 32)


def test_celeba_loads_unlabelled_from_local_files(tmp_path, monkeypatch):
    import torchvision.datasets.celeba as celeba

    monkeypatch.setattr(celeba, "check_integrity", lambda *args, **kwargs: True)
    base = tmp_path / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    names = [f"00000{i}.jpg" for i in range(1, 5)]
    for name in names:
        write_image(base / "img_align_celeba" / name, (0, 0, 255), size=(178, 218))
    # torchvision cannot index a partition of one image, so each has two.
    rows = {"list_eval_partition.txt": ["0", "0", "2", "2"], "identity_CelebA.txt": ["1"] * 4}
    for file_name, values in rows.items():
        (base / file_name).write_text("".join(f"{n} {v}\n" for n, v in zip(names, values)))
    for file_name, header in [("list_attr_celeba.txt", "Smiling"),
                              ("list_bbox_celeba.txt", "x_1"),
                              ("list_landmarks_align_celeba.txt", "lefteye_x")]:
        (base / file_name).write_text(f"4\n{header}\n" + "".join(f"{n} 1\n" for n in names))
    train = load_dataset("celeba", root=str(tmp_path), image_size=64)
    samples, labels = first_items(train)
    assert len(train) == 2 and labels == [-1, -1] and train.num_classes == 0
    assert_images(samples, 3, 64)
    assert len(load_dataset("celeba", root=str(tmp_path), split="test")) == 2


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10", "celeba"])
def test_missing_local_files_say_how_to_get_them(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=f"no {name} files found under {tmp_path}; "
                                                "pass --download"):
        load_dataset(name, root=str(tmp_path))
    with pytest.raises(ValueError, match="pass --data-root"):
        load_dataset(name)


# --- 2-D toys -----------------------------------------------------------------------


def test_toy_modes_are_the_papers_mixtures():
    ring, ring_std = toy_modes("ring")
    assert ring.shape == (8, 2) and ring_std == 0.02
    assert np.allclose(np.linalg.norm(ring, axis=1), 2.0)
    assert np.allclose(np.sort(np.arctan2(ring[:, 1], ring[:, 0]) % (2 * np.pi)),
                       np.arange(8) * np.pi / 4)
    grid, grid_std = toy_modes("grid")
    assert grid.shape == (25, 2) and grid_std == 0.05
    assert {tuple(point) for point in grid} == {(x, y) for x in range(-4, 5, 2)
                                                for y in range(-4, 5, 2)}
    with pytest.raises(ValueError, match="ring and grid"):
        toy_modes("mnist5k")


@pytest.mark.parametrize("name", ["ring", "grid"])
def test_toy_samples_lie_near_their_labelled_mode(name):
    centres, std = toy_modes(name)
    dataset = load_dataset(name, num_samples=5000, seed=0)
    points, labels = dataset.points.numpy(), dataset.labels.numpy()
    assert points.dtype == np.float32 and points.shape == (5000, 2) and len(dataset) == 5000
    distances = np.linalg.norm(points - centres[labels], axis=1)
    assert distances.max() < 6 * std and 0.5 * std < distances.mean() < 2 * std
    assert set(labels.tolist()) == set(range(len(centres)))
    point, label = dataset[0]
    assert point.shape == (2,) and isinstance(label, int)
    assert len(load_dataset(name)) == 50_000


def test_toys_are_seeded_and_test_is_a_fresh_draw():
    first = load_dataset("ring", num_samples=100, seed=1).points
    assert torch.equal(first, load_dataset("ring", num_samples=100, seed=1).points)
    assert not torch.equal(first, load_dataset("ring", num_samples=100, seed=2).points)
    assert not torch.equal(first, load_dataset("ring", num_samples=100, seed=1, split="test").points)
