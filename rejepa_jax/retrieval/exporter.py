"""Checkpoint -> descriptors -> ScaNN index, written atomically with a manifest.

The run's config says which data to embed. The
checkpoint is restored onto the devices present, the split is embedded by a jit-compiled forward
sharded over every device and host, and process 0 streams the L2-normalised descriptors to disk
(optionally PCA-whitened, learned on the same split), builds a ScaNN index whose settings an
auto-tune picks (the cheapest reaching the recall target against exact search) and publishes the
folder atomically: an interrupted export leaves the previous index in place. An existing `out` is
replaced only if it is empty or an index written by export (see
`index_publication.check_replaceable`), and one export at a time may write it
(`index_publication.ExportLock`).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from rejepa_jax import config_lib
from rejepa_jax import state as state_lib
from rejepa_jax.data.sources import make_source
from rejepa_jax.encoder_restore import restore_encoder
from rejepa_jax.retrieval import encoder_bundle, index_autotune, index_publication, manifest, scann_index
from rejepa_jax.retrieval.descriptor_store import DescriptorWriter, read_descriptors
from rejepa_jax.retrieval.embedding import SplitEmbedder
from rejepa_jax.retrieval.exact_search import l2_normalise
from rejepa_jax.retrieval.manifest import DESCRIPTORS, ENCODER, IDS, LABELS, PCA, POSITIONS, SCANN_DIR
from rejepa_jax.retrieval.pca_whitening import CovarianceAccumulator, PcaWhitening

ENCODERS = ("target", "context")
_PCA_CHUNK = 65_536


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """What to index and how."""

    step: int | None = None
    encoder: str | None = None  # None: the run's first `eval.encoders` (its chosen descriptor).
    split: str = "archive"
    pca_dim: int = 0
    standardise: bool = False  # Per-dimension standardisation learned on the split (not with pca_dim).
    target_recall: float = 0.95
    recall_k: int = 10
    brute_force_below: int = 20_000


def config_for_present_devices(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The run's config on every present device: one `data` axis, batches rounded up to fit."""
    config = config_lib.from_dict(config.to_dict())
    config.unlock()
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = -1, 1, 1
    devices = jax.device_count()
    config.eval.batch_size = -(-config.eval.batch_size // devices) * devices
    config.lock()
    return config


def export_index(
    config: ml_collections.ConfigDict, workdir: str | Path, out: str | Path, options: ExportOptions
) -> manifest.Manifest | None:
    """Builds the index folder `out`; returns its manifest on process 0 (None elsewhere)."""
    options = dataclasses.replace(options, encoder=state_lib.descriptor_encoder(config, options.encoder))
    if options.encoder not in ENCODERS:
        raise ValueError(f"--encoder must be one of {ENCODERS}, got {options.encoder!r}.")
    is_main = jax.process_index() == 0
    lock = staging = None
    if is_main:
        # Refuse a bad --out and a concurrent export before anything slow, and before any change.
        out = index_publication.export_target(out)
        index_publication.check_replaceable(out, workdir=workdir)
        lock = index_publication.ExportLock(out).acquire()
    try:
        if is_main:
            index_publication.recover_interrupted(out)  # With the lock held: no other export is running.
            index_publication.check_replaceable(out, workdir=workdir)
            staging = index_publication.staging_dir(out)
        config = config_for_present_devices(config)
        restored = restore_encoder(config, workdir, options.encoder, step=options.step)
        step, encoder_params, run = restored.step, restored.params, restored.run
        source = make_source(config.data, options.split)
        logging.info(
            "Exporting %d %s images with the %s encoder of step %d.",
            len(source),
            options.split,
            options.encoder,
            step,
        )
        result = _embed_and_index(config, run, encoder_params, source, staging, options)
        if is_main:
            fingerprint = encoder_bundle.save(staging / ENCODER, encoder_params)
            index_manifest = manifest.Manifest(
                workdir=str(Path(workdir).absolute()),
                checkpoint_step=step,
                encoder=options.encoder,
                model_fingerprint=fingerprint,
                config=config.to_dict(),
                dimension=result["dimension"],
                count=result["count"],
                normalisation=result["normalisation"],
                split=options.split,
                scann=result["settings"],
                measured_recall=result["recall"],
                recall_k=options.recall_k,
                pca_dim=result["dimension"] if options.standardise else options.pca_dim,
                class_names=list(getattr(source, "class_names", None) or []),
            )
            manifest.write(staging, index_manifest)
            index_publication.publish(staging, out)
            staging = None
            return index_manifest
        return None
    finally:
        if staging is not None and staging.exists():  # Failed before publishing: drop the partial folder.
            shutil.rmtree(staging, ignore_errors=True)
        if lock is not None:
            lock.release()
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("export_done")


def _embed_and_index(config, run, encoder_params, source, staging, options) -> dict:
    """Streams descriptors to `staging` (process 0), then PCA and ScaNN; returns the index facts."""
    is_main = staging is not None
    embedder = SplitEmbedder(config, run.encoder, run.mesh)
    width = run.encoder.width
    if options.pca_dim and options.standardise:
        raise ValueError("Choose PCA-whitening (pca_dim) or standardisation, not both.")
    whiten = bool(options.pca_dim or options.standardise)
    first_pass = DESCRIPTORS if not whiten else "unwhitened.npy"
    writer = DescriptorWriter(staging / first_pass, width) if is_main else None
    stats = CovarianceAccumulator(width) if whiten else None
    labels, positions = [], []
    start = time.perf_counter()
    bar = tqdm(total=len(source), unit="img", desc=f"embedding {options.split}", disable=not is_main)
    for batch in embedder.stream(options.split, {"encoder": encoder_params}):
        rows = l2_normalise(batch.descriptors["encoder"][batch.valid])
        if is_main:
            writer.append(rows)
            labels.append(batch.labels[batch.valid])
            positions.append(batch.index[batch.valid])
        if stats is not None:
            stats.add(rows)
        bar.update(int(batch.valid.sum()))
    bar.close()
    seconds = time.perf_counter() - start
    if not is_main:
        return {}
    count = writer.rows
    logging.info("Embedded %d images in %.1f s (%.1f images/s).", count, seconds, count / max(seconds, 1e-9))
    path = writer.finish()
    normalisation = "mean-pooled tokens, L2-normalised"
    if whiten:
        if options.standardise:
            whitening = PcaWhitening.fit_standardisation(stats)
        else:
            whitening = PcaWhitening.fit(stats, options.pca_dim)
        whitening.save(staging / PCA)
        whitened = DescriptorWriter(staging / DESCRIPTORS, whitening.output_dim)
        raw = read_descriptors(path)
        for begin in range(0, len(raw), _PCA_CHUNK):
            whitened.append(whitening.apply(raw[begin : begin + _PCA_CHUNK]))
        whitened.finish()
        del raw
        path.unlink()
        learned = f"learned on the {options.split} split"
        if options.standardise:
            normalisation += f", standardised per dimension ({learned}), L2-normalised"
        else:
            normalisation += f", PCA-whitened to {options.pca_dim} dimensions ({learned}), L2-normalised"
    np.save(staging / LABELS, np.concatenate(labels), allow_pickle=False)
    order = np.concatenate(positions)
    np.save(staging / POSITIONS, order.astype(np.int64), allow_pickle=False)
    np.save(staging / IDS, np.array([source.record_id(int(i)) for i in order], dtype=str), allow_pickle=False)

    descriptors = np.asarray(read_descriptors(staging / DESCRIPTORS))
    tune_start = time.perf_counter()
    settings, recall, _ = index_autotune.autotune(
        descriptors,
        target_recall=options.target_recall,
        k=options.recall_k,
        brute_force_below=options.brute_force_below,
    )
    searcher = scann_index.build_searcher(descriptors, settings, num_neighbors=options.recall_k)
    scann_index.save(searcher, staging / SCANN_DIR)
    logging.info(
        "ScaNN %s index, recall@%d %.3f (target %.2f), tuned and built in %.1f s.",
        settings.kind,
        options.recall_k,
        recall,
        options.target_recall,
        time.perf_counter() - tune_start,
    )
    return {
        "count": int(count),
        "dimension": int(descriptors.shape[1]),
        "normalisation": normalisation,
        "settings": dataclasses.asdict(settings),
        "recall": float(recall),
    }
