"""A folder of a person's own images: broken files skipped and named, every kind of image
converted, the decoded images cached on disk (and rebuilt when the folder changes), a
fixed held-out split, and one clear line when there is too little to train on."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from training import folder as folder_module
from training.data import load_dataset
from training.folder import FolderError, FolderImages, split_rows


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DCGAN_CACHE", str(tmp_path / "cache"))
    folder_module._warned.clear()


def jpeg_bytes(colour=(200, 30, 30), size=(24, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def photo_folder(path, count=12):
    path.mkdir()
    for i in range(count):
        (path / f"photo{i:02d}.jpg").write_bytes(jpeg_bytes((10 * i, 100, 200)))
    return path


def test_unreadable_files_are_skipped_counted_and_named(tmp_path, caplog):
    photos = photo_folder(tmp_path / "photos")
    whole = jpeg_bytes()
    (photos / "cut.jpg").write_bytes(whole[: len(whole) // 2])  # a truncated download
    (photos / "notes.png").write_text("not an image at all")
    (photos / "empty.jpeg").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="dcgan.data"):
        dataset = load_dataset("folder", root=str(photos), image_size=16, split="all")
    assert len(dataset) == 12  # every readable photo, none of the broken files
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    assert images.shape == (12, 3, 16, 16) and torch.isfinite(images).all()
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "skipped 3 of 15 files" in warning
    for name in ("cut.jpg", "notes.png", "empty.jpeg"):
        assert name in warning
    assert dataset.folder.skipped and len(dataset.folder.skipped) == 3


def test_training_on_a_folder_with_a_truncated_jpeg_does_not_crash(tmp_path, make_tiny_config):
    from training.loop import train

    photos = photo_folder(tmp_path / "photos", count=20)
    whole = jpeg_bytes()
    (photos / "zz-cut.jpg").write_bytes(whole[: len(whole) // 3])
    config = make_tiny_config(tmp_path / "run", dataset="folder", data_root=str(photos),
                              channels=3, steps=3, batch_size=8, log_every=3)
    run = train(config, progress=False)
    assert (run / "checkpoint.pt").is_file()


def save(image: Image.Image, path, **options):
    image.save(path, **options)
    return path


def only_image(root, channels=3, size=8) -> np.ndarray:
    """The single image of a one-file folder, as (C, S, S) floats in [-1, 1]."""
    return FolderImages(str(root), size, channels).images[0].astype(np.float64) / 127.5 - 1


def test_every_kind_of_image_is_converted(tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    # 16-bit grey: full scale must come out white, half scale mid-grey (not clipped to white)
    for name, value in (("white16", 65535), ("mid16", 32768)):
        folder = cases / name
        folder.mkdir()
        save(Image.fromarray(np.full((10, 10), value, dtype=np.uint16)), folder / "a.png")
        pixels = only_image(folder)
        expected = 1.0 if value == 65535 else 0.0
        assert pixels.shape == (3, 8, 8) and np.allclose(pixels, expected, atol=0.01), name
    # transparency is laid on white: a fully transparent black RGBA image is white
    folder = cases / "rgba"
    folder.mkdir()
    save(Image.new("RGBA", (10, 10), (0, 0, 0, 0)), folder / "a.png")
    assert np.allclose(only_image(folder), 1.0)
    # an opaque red RGBA image stays red
    folder = cases / "opaque"
    folder.mkdir()
    save(Image.new("RGBA", (10, 10), (255, 0, 0, 255)), folder / "a.png")
    assert np.allclose(only_image(folder)[:, 0, 0], [1, -1, -1])
    # a palette image with a transparent index, and grey with alpha
    folder = cases / "palette"
    folder.mkdir()
    palette = Image.new("P", (10, 10), 1)
    palette.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    save(palette, folder / "a.png", transparency=0)
    assert np.allclose(only_image(folder)[:, 0, 0], [-1, -1, 1])  # index 1 is opaque blue
    folder = cases / "la"
    folder.mkdir()
    save(Image.new("LA", (10, 10), (0, 0)), folder / "a.png")
    assert np.allclose(only_image(folder, channels=1), 1.0)
    # grey into RGB repeats the grey
    folder = cases / "grey"
    folder.mkdir()
    save(Image.new("L", (10, 10), 0), folder / "a.png")
    assert np.allclose(only_image(folder), -1.0)


def test_photos_are_turned_upright_by_their_exif_orientation(tmp_path):
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = (255, 0, 0)  # left half red, right half blue, as stored
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    (tmp_path / "p").mkdir()
    save(Image.fromarray(pixels), tmp_path / "p" / "a.jpg", exif=exif, quality=95)
    upright = only_image(tmp_path / "p", size=16)
    # displayed upright the red half is on top, the blue one below
    assert upright[0, 2, 8] > 0.8 and upright[2, 2, 8] < -0.8
    assert upright[2, 13, 8] > 0.8 and upright[0, 13, 8] < -0.8


def test_the_second_read_decodes_nothing_and_a_changed_folder_is_read_again(tmp_path, monkeypatch):
    photos = photo_folder(tmp_path / "photos")
    first = FolderImages(str(photos), 16, 3)
    cached = np.array(first.images)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a file although the cache holds it")

    monkeypatch.setattr(folder_module, "read_image", no_decoding)
    again = FolderImages(str(photos), 16, 3)
    assert np.array_equal(np.asarray(again.images), cached)
    assert again.array_path == first.array_path
    monkeypatch.undo()
    # an edited file (another size and mtime) is another folder: read again
    (photos / "photo03.jpg").write_bytes(jpeg_bytes((0, 0, 0), size=(30, 30)))
    changed = FolderImages(str(photos), 16, 3)
    assert changed.array_path != first.array_path
    assert not np.array_equal(np.asarray(changed.images), cached)
    # another size is another cache too; nothing half-written is left in the cache folder
    assert FolderImages(str(photos), 8, 3).images.shape == (12, 3, 8, 8)
    leftovers = [p.name for p in first.array_path.parent.iterdir() if p.suffix not in (".npy", ".json")]
    assert leftovers == []


def test_a_crash_while_building_leaves_no_cache_behind(tmp_path, monkeypatch):
    photos = photo_folder(tmp_path / "photos")
    real_read = folder_module.read_image
    calls = []

    def crash_late(*args):
        calls.append(1)
        if len(calls) > 6:
            raise KeyboardInterrupt  # the person pressed Ctrl-C halfway
        return real_read(*args)

    monkeypatch.setattr(folder_module, "read_image", crash_late)
    with pytest.raises(KeyboardInterrupt):
        FolderImages(str(photos), 16, 3, workers=1)
    cache = tmp_path / "cache" / "folders"
    assert [p.name for p in cache.iterdir()] == []
    monkeypatch.undo()
    assert len(FolderImages(str(photos), 16, 3).images) == 12


def test_held_out_split_is_fixed_disjoint_and_a_tenth():
    train, test = split_rows(1000, "train"), split_rows(1000, "test")
    assert len(test) == 100 and len(train) == 900
    assert set(train).isdisjoint(test) and set(train) | set(test) == set(range(1000))
    assert np.array_equal(test, split_rows(1000, "test"))  # the same for every run


def test_too_few_readable_images_is_one_clear_error(tmp_path, make_tiny_config):
    from training.config import TrainingError
    from training.loop import train

    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "one.jpg").write_bytes(jpeg_bytes())
    (lonely / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(FolderError, match=r"has 1 readable image \(1 of 2 files could not be read\)"):
        load_dataset("folder", root=str(lonely))
    few = photo_folder(tmp_path / "few", count=6)
    config = make_tiny_config(tmp_path / "run", dataset="folder", data_root=str(few), channels=3)
    with pytest.raises(TrainingError, match="5 samples, fewer than one batch of 8"):
        train(config, progress=False)
