"""Decoding of every supported format, the named errors, and the numpy augmentations."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from data_fixtures import random_rgb, write_corrupt_jpeg, write_png
from PIL import Image

from rejepa_jax.data import augment
from rejepa_jax.data.band_resampling import stack_bands
from rejepa_jax.data.decode import decode_record
from rejepa_jax.data.errors import BadImageError, BandCountError, DataError
from rejepa_jax.data.image_formats import decode_bytes


def _decode_file(path, channels, bands=()):
    return decode_record({"path": str(path), "id": path.name, "label": 0}, channels, bands)


def test_png_modes_decode_to_their_band_counts(tmp_path):
    rgb = random_rgb(0)
    grey = rgb[:, :, 0]
    rgba = np.concatenate([rgb, grey[:, :, None]], axis=-1)
    for array, channels in ((grey, 1), (rgb, 3), (rgba, 4)):
        image = _decode_file(write_png(tmp_path / f"x{channels}.png", array), channels)
        assert image.dtype == np.float32 and image.shape == (16, 16, channels)
        np.testing.assert_array_equal(image, array.reshape(16, 16, channels))


def test_sixteen_bit_png_keeps_raw_values(tmp_path):
    array = (np.arange(16 * 16, dtype=np.uint16) * 250).reshape(16, 16)
    Image.fromarray(array).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(_decode_file(tmp_path / "deep.png", 1)[:, :, 0], array)


def test_jpeg_decodes_close_to_the_original(tmp_path):
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (32, 1))
    rgb = np.stack([smooth, smooth.T, 255 - smooth], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "x.jpg", quality=95)
    image = _decode_file(tmp_path / "x.jpg", 3)
    assert image.shape == (32, 32, 3)
    assert np.abs(image - rgb).mean() < 3.0


@pytest.mark.parametrize("planar", ["separate", "contig"])
def test_five_band_uint16_geotiff_in_either_layout(tmp_path, planar):
    bands_first = np.random.default_rng(0).integers(0, 10000, (5, 12, 20), dtype=np.uint16)
    data = bands_first if planar == "separate" else np.moveaxis(bands_first, 0, -1)
    tifffile.imwrite(tmp_path / "scene.tif", data, planarconfig=planar, photometric="minisblack")
    image = _decode_file(tmp_path / "scene.tif", 5)
    np.testing.assert_array_equal(image, np.moveaxis(bands_first, 0, -1).astype(np.float32))


def test_npy_layouts(tmp_path):
    hwc = np.random.default_rng(0).normal(size=(10, 12, 2)).astype(np.float32)
    for name, array in (("hwc", hwc), ("chw", np.moveaxis(hwc, -1, 0))):
        np.save(tmp_path / f"{name}.npy", array)
        np.testing.assert_array_equal(_decode_file(tmp_path / f"{name}.npy", 2), hwc)
    np.save(tmp_path / "hw.npy", hwc[:, :, 0])
    np.testing.assert_array_equal(_decode_file(tmp_path / "hw.npy", 1), hwc[:, :, :1])


def test_pickled_npy_is_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BadImageError, match="obj.npy"):
        _decode_file(tmp_path / "obj.npy", 1)


def test_tfds_style_records_arrays_and_bytes():
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5)
    image = decode_record({"image": grey, "id": "train:3", "label": 0}, channels=1)
    np.testing.assert_array_equal(image[:, :, 0], grey)
    buffer = io.BytesIO()
    Image.fromarray(random_rgb(1)).save(buffer, format="PNG")
    decoded = decode_record({"image": buffer.getvalue(), "id": "train:4", "label": 0}, channels=3)
    np.testing.assert_array_equal(decoded, random_rgb(1))
    with pytest.raises(BadImageError, match="train:5"):
        decode_record({"image": b"not an image", "id": "train:5", "label": 0}, channels=3)


def test_truncated_jpeg_error_names_the_file(tmp_path):
    path = write_corrupt_jpeg(tmp_path / "cut_off.jpg")
    with pytest.raises(BadImageError, match=r"(?i)cut_off\.jpg.*truncated"):
        _decode_file(path, 3)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(BadImageError, match=r"empty\.png.*empty"):
        _decode_file(tmp_path / "empty.png", 3)
    with pytest.raises(BadImageError, match="missing.png"):
        _decode_file(tmp_path / "missing.png", 3)
    assert issubclass(BadImageError, DataError) and issubclass(DataError, ValueError)


def test_band_count_mismatch_names_file_counts_and_keys(tmp_path):
    path = write_png(tmp_path / "rgb.png", random_rgb(0))
    with pytest.raises(BandCountError) as info:
        _decode_file(path, channels=4)
    message = str(info.value)
    for part in ("rgb.png", "expected 4", "found 3", "data.channels", "data.bands"):
        assert part in message
    assert issubclass(BandCountError, DataError)


def test_band_selection_reorders_and_is_checked(tmp_path):
    cube = np.random.default_rng(0).integers(0, 4000, (8, 8, 5), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "cube.tif", cube, photometric="minisblack", planarconfig="contig")
    selected = _decode_file(tmp_path / "cube.tif", 3, bands=(4, 0, 2))
    np.testing.assert_array_equal(selected, cube[:, :, [4, 0, 2]])
    with pytest.raises(BandCountError, match=r"data\.bands=\(0, 7\).*\[7\]"):
        _decode_file(tmp_path / "cube.tif", 2, bands=(0, 7))


def test_decode_bytes_rejects_garbage():
    with pytest.raises(BadImageError, match="blob"):
        decode_bytes(b"\x00\x01garbage", "blob")


# ---- Augmentations ----


def _multiband(bands=7, size=(20, 30), dtype=np.uint16):
    return np.random.default_rng(0).integers(0, 3000, (*size, bands)).astype(dtype)


def test_random_resized_crop_shape_range_and_determinism():
    image = _multiband()
    crop = augment.random_resized_crop(image, 12, (0.3, 1.0), (0.75, 1.33), np.random.default_rng(1))
    again = augment.random_resized_crop(image, 12, (0.3, 1.0), (0.75, 1.33), np.random.default_rng(1))
    other = augment.random_resized_crop(image, 12, (0.3, 1.0), (0.75, 1.33), np.random.default_rng(2))
    assert crop.shape == (12, 12, 7) and crop.dtype == np.float32
    np.testing.assert_array_equal(crop, again)
    assert not np.array_equal(crop, other)
    # Bilinear weights are non-negative and sum to one: outputs stay within the input range.
    assert image.min() - 1e-3 <= crop.min() and crop.max() <= image.max() + 1e-3
    constant = np.full((20, 30, 2), 1234.0, np.float32)
    np.testing.assert_allclose(
        augment.random_resized_crop(constant, 8, (0.3, 1.0), (0.75, 1.33), np.random.default_rng(0)), 1234.0
    )


def test_crop_box_follows_torchvision():
    rng = np.random.default_rng(0)
    for _ in range(50):
        top, left, h, w = augment._crop_box(40, 60, (0.2, 0.6), (0.5, 2.0), rng)
        assert 0 <= top <= 40 - h and 0 <= left <= 60 - w
        assert 0.2 * 2400 * 0.9 <= h * w <= 0.6 * 2400 * 1.1
        assert 0.5 * 0.8 <= w / h <= 2.0 * 1.2
    # No draw can fit a 10:1 box in a square at full area: centre crop clamped to the ratio range.
    assert augment._crop_box(40, 40, (1.0, 1.0), (10.0, 10.0), rng) == (18, 0, 4, 40)


def test_full_image_crop_equals_resize():
    image = _multiband(bands=2, size=(24, 24))
    crop = augment.random_resized_crop(image, 10, (1.0, 1.0), (1.0, 1.0), np.random.default_rng(0))
    np.testing.assert_allclose(crop, augment.resize(image, 10), rtol=1e-6)
    assert augment.resize(image, (6, 9)).shape == (6, 9, 2)
    np.testing.assert_allclose(augment.resize(image, 24), image, rtol=1e-6)


def test_flips_are_exact_and_respect_the_switches():
    image = _multiband(bands=3, size=(5, 6)).astype(np.float32)
    seen = set()
    for seed in range(20):
        out = augment.random_flips(image, True, False, np.random.default_rng(seed))
        if np.array_equal(out, image):
            seen.add("none")
        else:
            np.testing.assert_array_equal(out, image[:, ::-1])
            seen.add("horizontal")
        out = augment.random_flips(image, False, True, np.random.default_rng(seed))
        assert np.array_equal(out, image) or np.array_equal(out, image[::-1])
        np.testing.assert_array_equal(
            augment.random_flips(image, False, False, np.random.default_rng(seed)), image
        )
    assert seen == {"none", "horizontal"}


def test_normalise_per_band_and_checks_lengths():
    image = np.stack([np.full((2, 2), 10.0), np.full((2, 2), 300.0)], axis=-1).astype(np.uint16)
    out = augment.normalise(image, (4.0, 100.0), (2.0, 50.0))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], [3.0, 4.0])
    with pytest.raises(ValueError, match=r"data\.mean has 3"):
        augment.normalise(image, (1.0, 2.0, 3.0), (1.0, 1.0, 1.0))


def test_stack_bands_upsamples_coarse_bands_to_the_finest_grid():
    fine = np.arange(16, dtype=np.float32).reshape(4, 4)
    coarse = np.full((2, 2), 7.0, dtype=np.float32)
    stacked = stack_bands([fine, coarse], "example")
    assert stacked.shape == (4, 4, 2) and stacked.dtype == np.float32
    np.testing.assert_array_equal(stacked[..., 0], fine)
    np.testing.assert_allclose(stacked[..., 1], 7.0)
    with pytest.raises(BadImageError, match="example"):
        stack_bands([fine, np.zeros((2, 2, 2))], "example")


def test_rotate90_gives_the_four_exact_rotations_of_square_images_only():
    image = _multiband(bands=2, size=(6, 6)).astype(np.float32)
    rotations = [np.rot90(image, k) for k in range(4)]
    seen = set()
    for seed in range(30):
        out = augment.random_rotate90(image, np.random.default_rng(seed))
        matches = [k for k, r in enumerate(rotations) if np.array_equal(out, r)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="square"):
        augment.random_rotate90(_multiband(size=(5, 6)), np.random.default_rng(0))
