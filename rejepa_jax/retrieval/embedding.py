"""Embeds a whole split with a jit-compiled forward sharded over every device and host.

Descriptors are mean-pooled encoder tokens. Each host reads its own slice of the split; every
per-example value (descriptor, label, position in the split, padding flag, colour histogram in the
space `eval.histogram_space` names) goes through the same host-slice -> global-array path, so on many
hosts all of them arrive in the same global order, and every host receives the whole batch
(replicated output). Batches are yielded one at a time, so a caller can stream an archive of any size
to disk.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from rejepa_jax import sharding
from rejepa_jax.data import pipeline
from rejepa_jax.retrieval.color_histogram import histogram_descriptor

COLOR_HISTOGRAM = "color_histogram"


@dataclasses.dataclass
class EmbeddedBatch:
    """One global batch: descriptors per name [G, D], labels, split positions and padding flags."""

    descriptors: dict[str, np.ndarray]
    labels: np.ndarray
    index: np.ndarray
    valid: np.ndarray


@dataclasses.dataclass
class SplitEmbeddings:
    """Every descriptor of one split, padding removed, rows in split order (whatever the hosts)."""

    pooled: dict[str, np.ndarray]  # name -> [N, D], not normalised
    labels: np.ndarray
    index: np.ndarray  # position of each row in the split


class SplitEmbedder:
    """Runs encoders (and optionally the colour histogram) over a split, batch by batch."""

    def __init__(self, config: ml_collections.ConfigDict, encoder: nn.Module, mesh: jax.sharding.Mesh):
        shards = sharding.batch_divisor(mesh)
        if config.eval.batch_size % shards:
            raise ValueError(
                f"eval.batch_size={config.eval.batch_size} must be a multiple of the {shards} batch "
                f"shards of mesh {dict(mesh.shape)}."
            )
        self.config = config
        self.mesh = mesh
        self._encoder = encoder
        replicated = sharding.replicated(mesh)
        self._pool = jax.jit(self._pool_tokens, out_shardings=replicated)
        self._gather = jax.jit(lambda x: x, out_shardings=replicated)

    def _pool_tokens(self, params: Any, images: jax.Array) -> jax.Array:
        tokens = self._encoder.apply({"params": params}, images)
        return tokens.astype(jnp.float32).mean(axis=1)

    def _all_hosts(self, local_rows: np.ndarray) -> np.ndarray:
        return np.asarray(self._gather(sharding.global_batch({"x": local_rows}, self.mesh)["x"]))

    def stream(
        self, split: str, encoders: dict[str, Any], *, with_histogram: bool = False
    ) -> Iterator[EmbeddedBatch]:
        """Yields global batches of a split ("query", "archive" or "train")."""
        per_host = self.config.eval.batch_size // jax.process_count()
        batches = pipeline.make_eval_iterator(
            self.config, split, per_host, process_index=jax.process_index(), process_count=jax.process_count()
        )
        try:
            yield from self._embed_batches(batches, encoders, with_histogram)
        finally:
            batches.close()  # Stops grain's worker processes and frees their shared memory.

    def _embed_batches(
        self, batches: grain.DatasetIterator, encoders: dict[str, Any], with_histogram: bool
    ) -> Iterator[EmbeddedBatch]:
        for batch in batches:
            images = sharding.global_batch({"image": batch["image"]}, self.mesh)["image"]
            descriptors = {name: np.asarray(self._pool(params, images)) for name, params in encoders.items()}
            if with_histogram:
                hist = histogram_descriptor(np.asarray(batch["image"]), self.config.data, self.config.eval)
                descriptors[COLOR_HISTOGRAM] = self._all_hosts(hist.astype(np.float32))
            yield EmbeddedBatch(
                descriptors=descriptors,
                labels=self._all_hosts(np.asarray(batch["label"])),
                index=self._all_hosts(np.asarray(batch["index"], np.int64)),
                valid=self._all_hosts(np.asarray(batch["valid"])).astype(bool),
            )

    def embed_split(
        self, split: str, encoders: dict[str, Any], *, with_histogram: bool = False
    ) -> SplitEmbeddings:
        """Collects a whole split in memory (for evaluation splits, not for huge archives)."""
        start = time.perf_counter()
        pooled: dict[str, list[np.ndarray]] = {}
        labels, index = [], []
        for batch in self.stream(split, encoders, with_histogram=with_histogram):
            for name, rows in batch.descriptors.items():
                pooled.setdefault(name, []).append(rows[batch.valid])
            labels.append(batch.labels[batch.valid])
            index.append(batch.index[batch.valid])
        order = np.argsort(np.concatenate(index), kind="stable")
        result = SplitEmbeddings(
            pooled={name: np.concatenate(rows)[order] for name, rows in pooled.items()},
            labels=np.concatenate(labels)[order],
            index=np.concatenate(index)[order],
        )
        seconds = time.perf_counter() - start
        logging.info(
            "Embedded the %s split with %s: %d images in %.1f s (%.0f images/s).",
            split,
            ", ".join(pooled),
            len(result.index),
            seconds,
            len(result.index) / max(seconds, 1e-9),
        )
        return result
