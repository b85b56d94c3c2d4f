"""An exported index opened for search: verified files, ids, and the encoder for new queries.

Query images are embedded by the encoder stored with the index (or, with `workdir`, by that run's
newest checkpoint, which must be the same model), pooled, L2-normalised and PCA-whitened exactly
like the archive. `--id` looks up an indexed item's own descriptor and leaves the item itself out of
its results. `--queries FILE` lists one image path per line (relative paths are relative to FILE).
Every file of the index is checked against the manifest's checksums before use.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rejepa_jax import config_lib, trainer
from rejepa_jax.config_lib import suggest
from rejepa_jax.data import augment
from rejepa_jax.data.decode import decode_record
from rejepa_jax.evaluation.retrieval_metrics import l2_normalise
from rejepa_jax.models import factory
from rejepa_jax.retrieval import encoder_bundle, manifest, scann_index
from rejepa_jax.retrieval.descriptor_store import read_descriptors
from rejepa_jax.retrieval.exporter import config_for_present_devices
from rejepa_jax.retrieval.manifest import DESCRIPTORS, ENCODER, IDS, LABELS, PCA, POSITIONS, SCANN_DIR
from rejepa_jax.retrieval.pca_whitening import PcaWhitening


class QueryError(ValueError):
    """A query cannot be answered by this index (unknown id, wrong dimension or model)."""


@dataclasses.dataclass
class Hit:
    rank: int
    id: str
    score: float
    label: Any


class IndexSearcher:
    """An exported index, verified, with the encoder that embeds new queries the same way."""

    def __init__(self, index_dir: str | Path, *, workdir: str | Path | None = None):
        self.directory = Path(index_dir)
        self.manifest = manifest.load(self.directory)
        self.config = config_lib.from_dict(self.manifest.config)
        self.ids = np.load(self.directory / IDS, allow_pickle=False)
        self.labels = np.load(self.directory / LABELS, allow_pickle=False)
        self.positions = np.load(self.directory / POSITIONS, allow_pickle=False)
        self.descriptors = read_descriptors(self.directory / DESCRIPTORS)
        if self.descriptors.shape != (self.manifest.count, self.manifest.dimension):
            raise manifest.IndexIntegrityError(
                f"{self.directory / DESCRIPTORS} holds {self.descriptors.shape} descriptors, the "
                f"manifest says {self.manifest.count} x {self.manifest.dimension}."
            )
        self.settings = scann_index.IndexSettings(**self.manifest.scann)
        self.searcher = scann_index.load(self.directory / SCANN_DIR)
        self.whitening = PcaWhitening.load(self.directory / PCA) if self.manifest.pca_dim else None
        self._row_of_id = {str(item): row for row, item in enumerate(self.ids)}
        self._workdir = workdir
        self._encode = None

    # ---- Query descriptors ----
    def descriptors_for_ids(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(descriptors [n, D], their rows) of indexed items; an unknown id is a QueryError."""
        rows = []
        for item in ids:
            if item not in self._row_of_id:
                raise QueryError(
                    f"Id {item!r} is not in the index {self.directory}.{suggest(item, self._row_of_id)}"
                )
            rows.append(self._row_of_id[item])
        rows = np.array(rows, dtype=np.int64)
        return np.asarray(self.descriptors[rows]), rows

    def descriptors_for_images(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Embeds image files exactly as the archive was embedded: [n, D]."""
        data = self.config.data
        images = []
        for path in paths:
            image = decode_record(
                {"path": str(path), "id": str(path), "label": -1}, data.channels, tuple(data.bands)
            )
            images.append(augment.normalize(augment.resize(image, data.image_size), data.mean, data.std))
        pooled = np.asarray(self._encoder()(np.stack(images)))
        descriptors = l2_normalise(pooled)
        if self.whitening is not None:
            descriptors = self.whitening.apply(descriptors)
        if descriptors.shape[1] != self.manifest.dimension:
            raise QueryError(
                f"Query descriptors have dimension {descriptors.shape[1]} but the index has "
                f"{self.manifest.dimension} (dimension mismatch)."
            )
        return descriptors

    def _encoder(self):
        """jit(images -> pooled tokens) with the index's model, checked against its fingerprint."""
        if self._encode is None:
            if self._workdir is None:
                params = encoder_bundle.load(self.directory / ENCODER, self.config)
            else:
                run_config = config_lib.load_json(Path(self._workdir) / "config.json")
                _, all_params = trainer.restore_params(config_for_present_devices(run_config), self._workdir)
                params = jax.device_get(all_params[self.manifest.encoder])
            found = encoder_bundle.fingerprint(params)
            if found != self.manifest.model_fingerprint:
                source = self._workdir or self.directory / ENCODER
                raise QueryError(
                    f"Model mismatch: the encoder from {source} (fingerprint {found[:12]}) is not the one "
                    f"that built the index (fingerprint {self.manifest.model_fingerprint[:12]})."
                )
            model = factory.build_encoder(self.config)
            self._encode = jax.jit(
                lambda images: model.apply({"params": params}, images).astype(jnp.float32).mean(axis=1)
            )
        return self._encode

    # ---- Search ----
    def search(
        self, descriptors: np.ndarray, k: int, *, exclude_rows: np.ndarray | None = None
    ) -> list[list[Hit]]:
        """Top-k hits per query descriptor; `exclude_rows[i]` is left out of query i's results."""
        if descriptors.ndim != 2 or descriptors.shape[1] != self.manifest.dimension:
            raise QueryError(
                f"Query descriptors of shape {descriptors.shape} do not match the index dimension "
                f"{self.manifest.dimension}."
            )
        extra = 1 if exclude_rows is not None else 0
        indices, scores = scann_index.search(
            self.searcher, descriptors.astype(np.float32), k + extra, self.settings
        )
        names = self.manifest.class_names
        results = []
        for q in range(len(descriptors)):
            hits = []
            for row, score in zip(indices[q], scores[q], strict=True):
                if row < 0 or (exclude_rows is not None and row == exclude_rows[q]) or len(hits) == k:
                    continue
                hits.append(
                    Hit(len(hits) + 1, str(self.ids[row]), float(score), _label(self.labels[row], names))
                )
            results.append(hits)
        return results


def _label(value: np.ndarray, class_names: list[str]) -> Any:
    value = np.asarray(value)
    if value.ndim == 0:
        index = int(value)
        return class_names[index] if 0 <= index < len(class_names) else index
    present = np.flatnonzero(value).tolist()
    return [class_names[i] if i < len(class_names) else i for i in present]


def read_query_file(path: str | Path) -> list[Path]:
    """Image paths listed one per line in `path` (blank lines and # comments ignored)."""
    path = Path(path)
    entries = [line.strip() for line in path.read_text().splitlines()]
    paths = [
        Path(e) if Path(e).is_absolute() else path.parent / e for e in entries if e and not e.startswith("#")
    ]
    if not paths:
        raise QueryError(f"{path} lists no query images.")
    return paths


def format_results(queries: Sequence[str], results: list[list[Hit]], fmt: str) -> str:
    if fmt == "jsonl":
        return "\n".join(
            json.dumps({"query": q, **dataclasses.asdict(hit)})
            for q, hits in zip(queries, results, strict=True)
            for hit in hits
        )
    lines = []
    for query, hits in zip(queries, results, strict=True):
        lines.append(f"query: {query}")
        lines.append(f"{'rank':>4}  {'score':>7}  {'label':<24}  id")
        lines.extend(f"{h.rank:>4}  {h.score:>7.4f}  {h.label!s:<24}  {h.id}" for h in hits)
        lines.append("")
    return "\n".join(lines)
