"""Train and eval grain pipelines: contracts, determinism, checkpoints, bad records, padding."""

from __future__ import annotations

import os

import grain
import numpy as np
import pytest
from data_fixtures import PATCH_GRID, folder_with_corrupt_files, small_config

from rejepa_jax import config_lib
from rejepa_jax.data import augment, pipeline
from rejepa_jax.data.decode import decode_record
from rejepa_jax.data.errors import BadImageError, DataError
from rejepa_jax.data.record_transforms import TrainTransform
from rejepa_jax.data.sources import FolderSource, make_source
from rejepa_jax.masking import MultiBlockMaskSampler


def _sample_config(**data_overrides):
    """The embedded EuroSAT sample with its real statistics."""
    config = small_config(config_lib.SAMPLE_ROOT, train_split="archive.csv", query_split="query.csv")
    config.data.mean, config.data.std = config_lib.EUROSAT_RGB_MEAN, config_lib.EUROSAT_RGB_STD
    for key, value in data_overrides.items():
        config.data[key] = value
    return config


def _sampler(config):
    return MultiBlockMaskSampler.from_config(config.masks, PATCH_GRID)


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def _assert_same_batches(expected, actual):
    assert len(expected) == len(actual)
    for a, b in zip(expected, actual, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_train_batch_contract():
    config = _sample_config()
    sampler = _sampler(config)
    batch = next(pipeline.make_train_iterator(config, sampler))
    shapes = sampler.shapes
    assert set(batch) == {"image", "context_idx", "target_idx", "skipped"}
    assert batch["image"].shape == (4, 16, 16, 3) and batch["image"].dtype == np.float32
    assert batch["context_idx"].shape == (4, shapes.num_context_tokens)
    assert batch["target_idx"].shape == (4, shapes.num_targets, shapes.num_target_tokens)
    assert batch["context_idx"].dtype == batch["target_idx"].dtype == np.int32
    assert batch["skipped"].dtype == np.int32 and not batch["skipped"].any()
    assert batch["context_idx"].min() >= 0 and batch["target_idx"].max() < 16
    # Normalised with the sample's own statistics: roughly zero mean, unit spread per band.
    assert np.all(np.abs(batch["image"].mean(axis=(0, 1, 2))) < 1.0)
    assert np.all((batch["image"].std(axis=(0, 1, 2)) > 0.3) & (batch["image"].std(axis=(0, 1, 2)) < 2.0))


def test_per_host_batches_split_the_global_batch():
    config = _sample_config()
    config.batch_size = 8
    batch = next(pipeline.make_train_iterator(config, _sampler(config), process_index=1, process_count=2))
    assert batch["image"].shape[0] == 4
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        pipeline.make_train_iterator(config, _sampler(config), process_count=3)


def test_host_slices_interleave_into_the_single_host_batches():
    """An example's crop and masks depend on its global position only, not on the host count."""
    config = _sample_config()
    config.batch_size = 8
    single = _take(pipeline.make_train_iterator(config, _sampler(config)), 2)
    hosts = [
        _take(pipeline.make_train_iterator(config, _sampler(config), process_index=i, process_count=2), 2)
        for i in range(2)
    ]
    for step in range(2):
        for key in ("image", "context_idx", "target_idx"):
            np.testing.assert_array_equal(single[step][key][0::2], hosts[0][step][key])
            np.testing.assert_array_equal(single[step][key][1::2], hosts[1][step][key])


def test_same_seed_same_batches_other_seed_other_batches():
    config = _sample_config()
    first = _take(pipeline.make_train_iterator(config, _sampler(config)), 3)
    _assert_same_batches(first, _take(pipeline.make_train_iterator(config, _sampler(config)), 3))
    config.data.num_threads = 1  # The thread count changes nothing either.
    _assert_same_batches(first, _take(pipeline.make_train_iterator(config, _sampler(config)), 3))
    config.seed = 1
    other = _take(pipeline.make_train_iterator(config, _sampler(config)), 3)
    assert not np.array_equal(first[0]["image"], other[0]["image"])


def test_every_epoch_is_reshuffled():
    source = FolderSource(config_lib.SAMPLE_ROOT, split_files=("query.csv",))
    records = pipeline.train_records(source, seed=0)
    n = len(source)
    epochs = [[records[e * n + i]["id"] for i in range(n)] for e in range(3)]
    assert all(sorted(epoch) == sorted(source[i]["id"] for i in range(n)) for epoch in epochs)
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2] and epochs[0] != epochs[2]


def test_get_state_set_state_resumes_exactly():
    config = _sample_config()
    iterator = pipeline.make_train_iterator(config, _sampler(config))
    _take(iterator, 2)
    state = iterator.get_state()
    expected = _take(iterator, 3)
    resumed = pipeline.make_train_iterator(config, _sampler(config))
    resumed.set_state(state)
    _assert_same_batches(expected, _take(resumed, 3))


def test_orbax_checkpoint_round_trip(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    config = _sample_config()
    iterator = pipeline.make_train_iterator(config, _sampler(config))
    _take(iterator, 2)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.save(2, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(iterator)))
        manager.wait_until_finished()
        expected = _take(iterator, 2)
        resumed = pipeline.make_train_iterator(config, _sampler(config))
        manager.restore(2, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(resumed)))
    _assert_same_batches(expected, _take(resumed, 2))


@pytest.fixture
def corrupt_folder(tmp_path):
    """20 images, of which 3 are truncated JPEGs."""
    bad = folder_with_corrupt_files(tmp_path, total=20, bad_indices=(2, 9, 15))
    return tmp_path, bad


def _bad_records_consumed(config, num_records_read, bad_names):
    """How many bad files the first `num_records_read` records of the train stream hold."""
    records = pipeline.train_records(make_source(config.data, "train"), config.seed)
    return sum(os.path.basename(records[i]["id"]) in bad_names for i in range(num_records_read))


def test_skip_bad_counts_exactly_the_corrupt_records(corrupt_folder):
    root, bad = corrupt_folder
    config = small_config(root, skip_bad=True)
    iterator = pipeline.make_train_iterator(config, _sampler(config))
    batches = _take(iterator, 12)  # 48 good examples: about 2.8 epochs of 17 good files.
    records_read = iterator.get_state()["next_index"]
    skipped = sum(int(b["skipped"].sum()) for b in batches)
    assert records_read == 48 + skipped
    assert skipped == _bad_records_consumed(config, records_read, set(bad)) >= 6


@pytest.mark.slow
def test_worker_processes_give_the_same_batches_counts_and_states(corrupt_folder):
    root, _ = corrupt_folder
    config = small_config(root, skip_bad=True)
    expected = _take(pipeline.make_train_iterator(config, _sampler(config)), 8)
    config.data.num_workers = 2
    config.data.num_threads = 1
    iterator = pipeline.make_train_iterator(config, _sampler(config))
    try:
        first = _take(iterator, 4)
        state = iterator.get_state()
        _assert_same_batches(expected, first + _take(iterator, 4))
    finally:
        iterator.close()
    resumed = pipeline.make_train_iterator(config, _sampler(config))
    try:
        resumed.set_state(state)
        _assert_same_batches(expected[4:], _take(resumed, 4))
    finally:
        resumed.close()


@pytest.mark.parametrize("num_workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_bad_record_without_skip_bad_raises_naming_the_file(corrupt_folder, num_workers):
    root, _ = corrupt_folder
    config = small_config(root, skip_bad=False, num_workers=num_workers)
    iterator = pipeline.make_train_iterator(config, _sampler(config))
    try:
        with pytest.raises(BadImageError, match=r"img_0(02|09|15)\.jpg.*data\.skip_bad"):
            _take(iterator, 10)
    finally:
        iterator.close()


def test_all_bad_records_is_an_error_not_a_hang(tmp_path):
    folder_with_corrupt_files(tmp_path, total=3, bad_indices=(0, 1, 2))
    config = small_config(tmp_path, skip_bad=True)
    with pytest.raises(DataError, match="in a row failed to decode"):
        next(pipeline.make_train_iterator(config, _sampler(config)))


def test_mean_std_must_match_the_channels():
    config = _sample_config(mean=(1.0, 2.0))
    with pytest.raises(ValueError, match=r"data\.mean has 2 value\(s\) but data\.channels=3"):
        pipeline.make_train_iterator(config, _sampler(config))


# ---- Evaluation ----


def _eval_rows(config, split, batch_size, **kwargs):
    batches = list(pipeline.make_eval_iterator(config, split, batch_size, **kwargs))
    return batches, {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def test_eval_pads_the_last_batch_and_covers_each_example_once():
    config = _sample_config()
    source = make_source(config.data, "query")
    batches, rows = _eval_rows(config, "query", 64)
    assert len(batches) == pipeline.num_eval_batches(200, 64) == 4
    for batch in batches:
        assert batch["image"].shape == (64, 16, 16, 3) and batch["image"].dtype == np.float32
        assert batch["label"].dtype == np.int32 and batch["valid"].dtype == bool
    assert batches[-1]["valid"].sum() == 200 - 3 * 64
    valid = rows["valid"]
    assert rows["id"][valid].tolist() == [source[i]["id"] for i in range(200)]
    assert rows["label"][valid].tolist() == list(source.labels)
    assert rows["index"][valid].tolist() == list(range(200)) and set(rows["index"][~valid]) == {-1}
    assert not rows["image"][~valid].any() and not rows["skipped"].any()
    assert pipeline.num_examples(config, "query") == 200


def test_eval_is_deterministic_resize_without_randomness():
    config = _sample_config()
    _, first = _eval_rows(config, "query", 50)
    config.seed = 7
    _, second = _eval_rows(config, "query", 50)
    np.testing.assert_array_equal(first["image"], second["image"])


def test_eval_over_two_hosts_has_equal_batch_counts_and_full_coverage():
    config = _sample_config()
    hosts = [_eval_rows(config, "query", 48, process_index=i, process_count=2) for i in range(2)]
    assert len(hosts[0][0]) == len(hosts[1][0]) == 3  # 100 examples per host in batches of 48.
    ids = np.concatenate([rows["id"][rows["valid"]] for _, rows in hosts])
    source = make_source(config.data, "query")
    assert sorted(ids.tolist()) == sorted(source[i]["id"] for i in range(len(source)))
    indices = np.concatenate([rows["index"][rows["valid"]] for _, rows in hosts])
    assert sorted(indices.tolist()) == list(range(len(source)))  # Positions identify rows across hosts.


def test_eval_skip_bad_drops_and_counts_including_trailing_bad_records(tmp_path):
    bad = folder_with_corrupt_files(tmp_path, total=20, bad_indices=(3, 18, 19))
    config = small_config(tmp_path, skip_bad=True)
    batches, rows = _eval_rows(config, "query", 8)
    assert len(batches) == 3 and rows["valid"].sum() == 17
    assert int(rows["skipped"].sum()) == 3
    assert not set(rows["id"][rows["valid"]].tolist()) & set(bad)
    assert rows["skipped"][3] == 1 and rows["id"][3] == "img_004.png"  # After the bad img_003.
    assert rows["skipped"][17] == 2 and not rows["valid"][17]  # The two trailing bad files.
    assert rows["index"][3] == 4  # Positions count the skipped record too.


@pytest.mark.slow
def test_eval_with_worker_processes_matches_in_process_reading(tmp_path):
    folder_with_corrupt_files(tmp_path, total=13, bad_indices=(0, 12))
    config = small_config(tmp_path, skip_bad=True)
    expected, _ = _eval_rows(config, "archive", 4)
    config.data.num_workers = 2
    actual, rows = _eval_rows(config, "archive", 4)
    _assert_same_batches(expected, actual)
    assert rows["valid"].sum() == 11 and rows["skipped"].sum() == 2


def test_eval_iterator_resumes_from_its_state():
    config = _sample_config()
    iterator = pipeline.make_eval_iterator(config, "query", 64)
    next(iterator)
    state = iterator.get_state()
    expected = list(iterator)
    resumed = pipeline.make_eval_iterator(config, "query", 64)
    resumed.set_state(state)
    _assert_same_batches(expected, list(resumed))


def test_multi_label_eval_labels_are_multi_hot():
    config = small_config(source="synthetic", multi_label=True, num_classes=6, synthetic_size=10)
    batches, rows = _eval_rows(config, "archive", 4)
    assert batches[0]["label"].shape == (4, 6) and batches[0]["label"].dtype == np.float32
    assert np.all(rows["label"][rows["valid"]].sum(1) >= 1) and not rows["label"][~rows["valid"]].any()


def test_one_view_draws_exactly_what_the_single_view_pipeline_drew():
    """Views leave the default stream unchanged: crop, flips, normalise, then masks, per example."""
    config = _sample_config()
    sampler = _sampler(config)
    transform = TrainTransform.from_config(config.data, sampler)
    record = make_source(config.data, "train")[0]
    example = transform(record, np.random.default_rng(11))
    rng = np.random.default_rng(11)
    image = augment.random_resized_crop(
        decode_record(record, 3, ()), 16, config.data.crop_scale, config.data.crop_ratio, rng
    )
    image = augment.normalise(augment.random_flips(image, True, True, rng), config.data.mean, config.data.std)
    context_idx, target_idx = sampler.sample(rng)
    np.testing.assert_array_equal(example["image"], image)
    np.testing.assert_array_equal(example["context_idx"], context_idx)
    np.testing.assert_array_equal(example["target_idx"], target_idx)
    assert set(example) == {"image", "context_idx", "target_idx"}


def test_multi_view_batch_contract_and_resume():
    config = _sample_config(global_views=2, local_views=3, local_size=8, rotate90=True)
    sampler = _sampler(config)
    iterator = pipeline.make_train_iterator(config, sampler)
    batch = next(iterator)
    shapes = sampler.shapes
    assert batch["image"].shape == (4, 2, 16, 16, 3)
    assert batch["context_idx"].shape == (4, 2, shapes.num_context_tokens)
    assert batch["target_idx"].shape == (4, 2, shapes.num_targets, shapes.num_target_tokens)
    assert batch["local_image"].shape == (4, 3, 8, 8, 3) and batch["local_image"].dtype == np.float32
    # Each view is its own crop with its own masks.
    assert not np.array_equal(batch["image"][:, 0], batch["image"][:, 1])
    assert not np.array_equal(batch["context_idx"][:, 0], batch["context_idx"][:, 1])
    state = iterator.get_state()
    expected = _take(iterator, 2)
    resumed = pipeline.make_train_iterator(config, sampler)
    resumed.set_state(state)
    _assert_same_batches(expected, _take(resumed, 2))
    with pytest.raises(ValueError, match="data.global_views"):
        pipeline.make_train_iterator(_sample_config(global_views=0), sampler)
