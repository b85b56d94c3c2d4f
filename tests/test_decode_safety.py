"""Decoding refuses what would fail later or exhaust memory, and reads every bit it is given.

Non-finite pixels, images larger than `data.max_image_pixels` (checked from the header), full-depth
16-bit PNGs, and the `data.grey_to_rgb` / `data.drop_alpha` band options.
"""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
import tifffile
from data_fixtures import PATCH_GRID, png16_bytes, png_header_bytes, random_rgb, small_config, write_png
from PIL import Image

from rejepa_jax import config_lib
from rejepa_jax.data import array_record_dataset, image_formats, pipeline
from rejepa_jax.data.decode import decode_record
from rejepa_jax.data.decode_options import DecodeOptions
from rejepa_jax.data.errors import BadImageError, BandCountError, DataError, ImageTooLargeError
from rejepa_jax.data.image_formats import decode_bytes
from rejepa_jax.masking import MultiBlockMaskSampler
from rejepa_jax.stats import compute_statistics


def _decode_file(path, channels, bands=(), **options):
    record = {"path": str(path), "id": path.name, "label": 0}
    return decode_record(record, channels, bands, DecodeOptions(**options))


def _folder_with(tmp_path, name, write, good=5):
    """`good` RGB PNGs and one file `name` written by `write(path)`; returns the folder."""
    for i in range(good):
        write_png(tmp_path / f"img_{i}.png", random_rgb(i))
    write(tmp_path / name)
    return tmp_path


# ---- Non-finite pixels (item 4) ----


def _nodata_geotiff(path, bands_with_nan=(1, 3), bands=5):
    cube = np.random.default_rng(0).uniform(0, 1, (12, 10, bands)).astype(np.float32)
    for band in bands_with_nan:
        cube[2:4, 5:9, band] = np.nan
    cube[0, 0, bands - 1] = np.inf
    tifffile.imwrite(path, cube, photometric="minisblack", planarconfig="contig")
    return cube


def test_float_geotiff_with_nan_nodata_is_a_bad_image_naming_file_and_bands(tmp_path):
    cube = _nodata_geotiff(tmp_path / "nodata.tif", bands_with_nan=(1, 3))
    with pytest.raises(BadImageError, match=r"nodata\.tif: band\(s\) \[1, 3, 4\] .*non-finite .*NaN"):
        _decode_file(tmp_path / "nodata.tif", 5)
    # Only the bands the config keeps count, named by their number in the file.
    with pytest.raises(BadImageError, match=r"band\(s\) \[3\] "):
        _decode_file(tmp_path / "nodata.tif", 2, bands=(3, 0))
    np.testing.assert_array_equal(_decode_file(tmp_path / "nodata.tif", 2, bands=(0, 2)), cube[:, :, [0, 2]])
    with pytest.raises(BadImageError, match=r"train:7: band\(s\) \[0\]"):
        decode_record({"image": np.full((4, 4), np.nan), "id": "train:7", "label": 0}, channels=1)


def _nan_folder(tmp_path):
    def write(path):
        rgb = random_rgb(9).astype(np.float32)
        rgb[:3, :3, 2] = np.nan
        tifffile.imwrite(path, rgb, photometric="rgb")

    return _folder_with(tmp_path, "nodata.tif", write)


def test_nan_image_stops_training_and_export_naming_it_or_is_skipped(tmp_path):
    root = _nan_folder(tmp_path)
    config = small_config(root)
    sampler = MultiBlockMaskSampler.from_config(config.masks, PATCH_GRID)
    train = pipeline.make_train_iterator(config, sampler)
    with pytest.raises(BadImageError, match=r"nodata\.tif: band\(s\) \[2\].*data\.skip_bad"):
        for _ in range(4):
            next(train)
    with pytest.raises(BadImageError, match=r"nodata\.tif: band\(s\) \[2\]"):
        list(pipeline.make_eval_iterator(config, "archive", 3))  # What export reads.

    config.data.skip_bad = True
    rows = list(pipeline.make_eval_iterator(config, "archive", 3))
    assert sum(int(b["skipped"].sum()) for b in rows) == 1
    assert sum(int(b["valid"].sum()) for b in rows) == 5
    assert all(np.isfinite(b["image"]).all() for b in rows)
    batch = next(pipeline.make_train_iterator(config, sampler))
    assert np.isfinite(batch["image"]).all()
    stats, skipped = compute_statistics(config.data)
    assert skipped == 1 and np.isfinite(stats.mean).all()


def test_prepare_refuses_or_skips_a_nan_file(tmp_path):
    root, out = _nan_folder(tmp_path / "images"), tmp_path / "tfds"
    with pytest.raises(DataError, match=r"nodata\.tif: band\(s\) \[2\].*--skip_bad"):
        array_record_dataset.write_folder_dataset(str(root), str(out), "with_nan")
    result = array_record_dataset.write_folder_dataset(str(root), str(out), "with_nan", skip_bad=True)
    assert result.num_examples == {"train": 5} and "nodata.tif" in result.skipped["train"][0]


# ---- Size limit from the header (item 5) ----


def _huge_tiff_header(path):
    """The header of a 20000 x 20000 x 4 uint16 TIFF (3.2 GB of pixels) without its pixels."""
    tifffile.imwrite(path, shape=(20000, 20000, 4), dtype=np.uint16, photometric="rgb", extrasamples=[0])
    with open(path, "rb") as f:
        header = f.read(1024)
    path.write_bytes(header)  # Decoding the pixels would fail: only the header can be read.
    return path


def test_tiff_header_claiming_3_gb_is_refused_before_decoding(tmp_path):
    path = _huge_tiff_header(tmp_path / "huge.tif")
    assert path.stat().st_size == 1024
    with pytest.raises(ImageTooLargeError) as info:
        _decode_file(path, 4)
    message = str(info.value)
    for part in ("huge.tif", "20000 x 20000 pixels x 4 band(s)", "1,600,000,000", "data.max_image_pixels"):
        assert part in message
    assert issubclass(ImageTooLargeError, BadImageError)  # So data.skip_bad applies.
    with pytest.raises(ImageTooLargeError, match="train:3"):
        decode_record({"image": path.read_bytes(), "id": "train:3", "label": 0}, channels=4)

    # The whole file, sparse (3.2 GB long, a few kB on disk): only its header is read.
    sparse = tmp_path / "sparse.tif"
    tifffile.imwrite(sparse, shape=(20000, 20000, 4), dtype=np.uint16, photometric="rgb", extrasamples=[0])
    assert sparse.stat().st_size > 3_000_000_000
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooLargeError, match=r"sparse\.tif: 20000 x 20000 pixels x 4 band"):
            _decode_file(sparse, 4)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000


def test_png_header_bomb_is_refused_by_the_same_limit_not_by_pil(tmp_path):
    assert Image.MAX_IMAGE_PIXELS is None  # PIL's process-wide guard is replaced by the config's.
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png: 100000 x 100000 pixels x 3 band.*max_image"):
        decode_bytes(png_header_bytes(100000, 100000), "bomb.png")
    (tmp_path / "grey.jpg").write_bytes(_jpeg(np.zeros((40, 50), np.uint8)))
    with pytest.raises(ImageTooLargeError, match=r"grey\.jpg: 50 x 40 pixels x 1 band"):
        _decode_file(tmp_path / "grey.jpg", 1, max_image_pixels=1999)
    assert _decode_file(tmp_path / "grey.jpg", 1, max_image_pixels=2000).shape == (40, 50, 1)
    np.save(tmp_path / "cube.npy", np.zeros((30, 20, 4), np.float32))
    with pytest.raises(ImageTooLargeError, match=r"cube\.npy"):
        _decode_file(tmp_path / "cube.npy", 4, max_image_pixels=2399)
    assert _decode_file(tmp_path / "cube.npy", 4, max_image_pixels=0).shape == (30, 20, 4)


def test_max_image_pixels_key_limits_the_pipeline_and_prepare(tmp_path):
    root = _folder_with(tmp_path / "images", "big.png", lambda p: write_png(p, random_rgb(7, size=32)))
    config = small_config(root, max_image_pixels=32 * 32 * 3 - 1)
    assert "data.max_image_pixels" in config_lib.dotted_keys(config_lib.base_config())
    with pytest.raises(ImageTooLargeError, match=r"big\.png: 32 x 32 pixels x 3 band.*=3,071"):
        list(pipeline.make_eval_iterator(config, "archive", 3))
    config.data.skip_bad = True
    rows = list(pipeline.make_eval_iterator(config, "archive", 3))
    assert sum(int(b["skipped"].sum()) for b in rows) == 1

    out = tmp_path / "tfds"
    with pytest.raises(DataError, match=r"big\.png.*--max_image_pixels"):
        array_record_dataset.write_folder_dataset(str(root), str(out), "big", max_image_pixels=3071)
    result = array_record_dataset.write_folder_dataset(str(root), str(out), "big", max_image_pixels=3072)
    assert result.num_examples == {"train": 6}


# ---- 16-bit PNGs, grey and alpha (item 6) ----


def _jpeg(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.mark.parametrize("bands", [2, 3, 4])
def test_sixteen_bit_colour_pngs_keep_every_bit(tmp_path, bands):
    array = np.random.default_rng(bands).integers(0, 65536, (9, 11, bands), dtype=np.uint16)
    array[0, 0, 0] = 60000  # Was read as 234 (its high byte).
    (tmp_path / "deep.png").write_bytes(png16_bytes(array))
    np.testing.assert_array_equal(_decode_file(tmp_path / "deep.png", bands), array)


def test_sixteen_bit_png_statistics_are_in_16_bit_units(tmp_path):
    array = np.full((8, 8, 3), [60000, 1000, 65535], np.uint16)
    array[::2] = [50000, 3000, 0]
    (tmp_path / "a.png").write_bytes(png16_bytes(array))
    stats, _ = compute_statistics(small_config(tmp_path).data)
    np.testing.assert_allclose(stats.mean, [55000, 2000, 32767.5])
    np.testing.assert_allclose(stats.std, [5000, 1000, 32767.5])


def test_grey_jpeg_in_an_rgb_archive_names_grey_to_rgb_and_is_repeated_with_it(tmp_path):
    grey = np.tile(np.arange(0, 240, 15, dtype=np.uint8), (16, 1))
    (tmp_path / "grey.jpg").write_bytes(_jpeg(grey))
    with pytest.raises(BandCountError, match=r"grey\.jpg: expected 3 band.*found 1.*data\.grey_to_rgb=True"):
        _decode_file(tmp_path / "grey.jpg", 3)
    image = _decode_file(tmp_path / "grey.jpg", 3, grey_to_rgb=True)
    assert image.shape == (16, 16, 3)
    np.testing.assert_array_equal(image[:, :, 0], image[:, :, 2])
    assert np.abs(image[:, :, 1] - grey).max() <= 3


def test_rgba_png_in_an_rgb_archive_names_drop_alpha_and_loses_alpha_with_it(tmp_path):
    rgb = random_rgb(3)
    rgba = np.concatenate([rgb, np.full((16, 16, 1), 255, np.uint8)], axis=-1)
    write_png(tmp_path / "rgba.png", rgba)
    with pytest.raises(BandCountError, match=r"rgba\.png: expected 3 band.*found 4.*data\.drop_alpha=True"):
        _decode_file(tmp_path / "rgba.png", 3)
    np.testing.assert_array_equal(_decode_file(tmp_path / "rgba.png", 3, drop_alpha=True), rgb)
    np.testing.assert_array_equal(_decode_file(tmp_path / "rgba.png", 4, grey_to_rgb=True), rgba)
    # Grey + alpha needs both; a 4-band TIFF whose 4th band is not marked alpha keeps it.
    write_png(tmp_path / "la.png", rgba[:, :, [0, 3]])
    la = _decode_file(tmp_path / "la.png", 3, drop_alpha=True, grey_to_rgb=True)
    np.testing.assert_array_equal(la, rgb[:, :, [0, 0, 0]])
    tifffile.imwrite(tmp_path / "rgbn.tif", rgba, photometric="rgb", extrasamples=[0])
    with pytest.raises(BandCountError, match="found 4"):
        _decode_file(tmp_path / "rgbn.tif", 3, drop_alpha=True)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=[2])
    np.testing.assert_array_equal(_decode_file(tmp_path / "rgba.tif", 3, drop_alpha=True), rgb)


def test_mixed_archive_trains_with_the_band_keys(tmp_path):
    rgba = np.concatenate([random_rgb(5), np.full((16, 16, 1), 255, np.uint8)], axis=-1)

    def write_both(path):
        write_png(path, rgba)
        (path.parent / "grey.jpg").write_bytes(_jpeg(random_rgb(6)[:, :, 0]))

    root = _folder_with(tmp_path, "rgba.png", write_both, good=2)
    config = small_config(root, grey_to_rgb=True, drop_alpha=True)
    keys = config_lib.dotted_keys(config_lib.base_config())
    assert {"data.grey_to_rgb", "data.drop_alpha"} <= set(keys)
    sampler = MultiBlockMaskSampler.from_config(config.masks, PATCH_GRID)
    batch = next(pipeline.make_train_iterator(config, sampler))
    assert batch["image"].shape == (4, 16, 16, 3) and not batch["skipped"].any()
    config.data.grey_to_rgb = False
    with pytest.raises(BandCountError, match=r"grey\.jpg.*data\.grey_to_rgb"):
        list(pipeline.make_eval_iterator(config, "archive", 4))


def test_large_files_decoded_from_the_open_file_give_the_same_pixels(tmp_path, monkeypatch):
    rgba = np.concatenate([random_rgb(4), np.full((16, 16, 1), 9, np.uint8)], axis=-1)
    deep = np.random.default_rng(0).integers(0, 65536, (7, 5, 3), dtype=np.uint16)
    write_png(tmp_path / "a.png", rgba)
    (tmp_path / "b.png").write_bytes(png16_bytes(deep))
    tifffile.imwrite(tmp_path / "c.tif", deep, photometric="rgb")
    np.save(tmp_path / "d.npy", deep)
    (tmp_path / "e.jpg").write_bytes(_jpeg(random_rgb(5)))
    names = ("a.png", "b.png", "c.tif", "d.npy", "e.jpg")
    whole = [_decode_file(tmp_path / name, 3, drop_alpha=True) for name in names]
    monkeypatch.setattr(image_formats, "_READ_WHOLE_BYTES", 0)  # Every file counts as large.
    for name, expected in zip(names, whole, strict=True):
        np.testing.assert_array_equal(_decode_file(tmp_path / name, 3, drop_alpha=True), expected)
    np.testing.assert_array_equal(whole[1], deep)
