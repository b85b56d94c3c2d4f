"""An exported index opened for search: verified files, ids, and the encoder for new queries.

Query images are embedded by the encoder stored with the index (or, with `workdir`, by that run's
newest checkpoint, which must be the same model), pooled, L2-normalised and PCA-whitened exactly
like the archive. `--id` looks up an indexed item's own descriptor and leaves the item itself out of
its results. `--queries FILE` lists one image path per line (relative paths are relative to FILE);
query images are decoded and embedded `QUERY_BATCH` at a time. Every file of the index is read once
and checked against the manifest's checksums; what is loaded is exactly what was checked.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rejepa_jax import config_lib
from rejepa_jax.config_lib import suggest
from rejepa_jax.data import augment
from rejepa_jax.data.decode import decode_record
from rejepa_jax.data.decode_options import DecodeOptions
from rejepa_jax.encoder_restore import restore_encoder
from rejepa_jax.models import factory
from rejepa_jax.retrieval import encoder_bundle, index_files, manifest, scann_index
from rejepa_jax.retrieval.exact_search import l2_normalise
from rejepa_jax.retrieval.exporter import config_for_present_devices
from rejepa_jax.retrieval.manifest import DESCRIPTORS, ENCODER, IDS, LABELS, PCA, POSITIONS, SCANN_DIR
from rejepa_jax.retrieval.pca_whitening import PcaWhitening

QUERY_BATCH = 64  # Query images decoded and embedded at a time.


class QueryError(ValueError):
    """A query cannot be answered by this index (unknown id, wrong dimension or model)."""


@dataclasses.dataclass
class Hit:
    rank: int
    id: str
    score: float
    label: Any


class IndexSearcher:
    """An exported index, verified, with the encoder that embeds new queries the same way.

    Every file is read once, checked against the manifest's SHA-256 and parsed from those same
    bytes (`index_files.IndexFiles`); the descriptors are held in memory, not memory-mapped.
    """

    def __init__(self, index_dir: str | Path, *, workdir: str | Path | None = None):
        files = index_files.IndexFiles(index_dir)
        self.directory = files.directory
        self.manifest = files.manifest
        self.config = config_lib.from_dict(self.manifest.config)
        # Every listed file is read (the ScaNN files: copied) once and checked before anything is
        # parsed or loaded; parsing and loading then use those very bytes.
        names = [IDS, LABELS, POSITIONS, DESCRIPTORS, ENCODER] + ([PCA] if self.manifest.pca_dim else [])
        checked = {name: files.read_bytes(name) for name in names}
        with files.private_copy(SCANN_DIR) as scann_dir:
            files.check_all_read()
            self.ids, self.labels, self.positions, self.descriptors = (
                index_files.npy_from_bytes(checked[name], self.directory / name)
                for name in (IDS, LABELS, POSITIONS, DESCRIPTORS)
            )
            self._check_shapes()
            self.whitening = (
                PcaWhitening.load(index_files.NamedBytes(checked[PCA], self.directory / PCA))
                if self.manifest.pca_dim
                else None
            )
            self._encoder_bytes = checked[ENCODER]
            self.settings = scann_index.IndexSettings(**self.manifest.scann)
            self.searcher = scann_index.load(scann_dir)  # ScaNN reads the checked private copy.
        self._row_of_id = {str(item): row for row, item in enumerate(self.ids)}
        self._workdir = workdir
        self._encode = None

    def _check_shapes(self) -> None:
        shape = (self.manifest.count, self.manifest.dimension)
        if self.descriptors.dtype != np.float32 or self.descriptors.shape != shape:
            raise manifest.IndexIntegrityError(
                f"{self.directory / DESCRIPTORS} holds {self.descriptors.dtype} {self.descriptors.shape} "
                f"descriptors, the manifest says float32 {shape[0]} x {shape[1]}."
            )
        for name, values in ((IDS, self.ids), (LABELS, self.labels), (POSITIONS, self.positions)):
            if len(values) != self.manifest.count:
                raise manifest.IndexIntegrityError(
                    f"{self.directory / name} has {len(values)} rows, the manifest says "
                    f"{self.manifest.count}."
                )

    # ---- The encoder ----
    def encoder_params(self) -> Any:
        """The bundled encoder's params, from the checked bytes, refused unless they are the model
        whose fingerprint the manifest records."""
        source = self.directory / ENCODER
        params = encoder_bundle.load(index_files.NamedBytes(self._encoder_bytes, source), self.config)
        self._check_fingerprint(params, source)
        return params

    def _check_fingerprint(self, params: Any, source: Any) -> None:
        found = encoder_bundle.fingerprint(params)
        if found != self.manifest.model_fingerprint:
            raise QueryError(
                f"Model mismatch: the encoder from {source} (fingerprint {found[:12]}) is not the one "
                f"that built the index (fingerprint {self.manifest.model_fingerprint[:12]})."
            )

    def _encoder(self):
        """jit(images -> pooled tokens) with the index's model, checked against its fingerprint."""
        if self._encode is None:
            if self._workdir is None:
                params = self.encoder_params()
            else:
                run_config = config_lib.load_json(Path(self._workdir) / "config.json")
                config = config_for_present_devices(run_config)
                params = jax.device_get(restore_encoder(config, self._workdir, self.manifest.encoder).params)
                self._check_fingerprint(params, self._workdir)
            model = factory.build_encoder(self.config)
            self._encode = jax.jit(
                lambda images: model.apply({"params": params}, images).astype(jnp.float32).mean(axis=1)
            )
        return self._encode

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
        return np.array(self.descriptors[rows]), rows

    def iter_image_descriptors(
        self, paths: Sequence[str | Path], *, batch_size: int = QUERY_BATCH
    ) -> Iterator[tuple[list[str | Path], np.ndarray]]:
        """(paths, descriptors [n, D]) batch by batch: at most `batch_size` images decoded at once.

        Every batch handed to the encoder has the same size, min(batch_size, len(paths)) (the last
        one is padded), so the encoder compiles once.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        size = min(batch_size, len(paths))
        for start in range(0, len(paths), max(size, 1)):
            chunk = list(paths[start : start + size])
            yield chunk, self._embed_images([self._read_image(path) for path in chunk], size)

    def descriptors_for_images(
        self, paths: Sequence[str | Path], *, batch_size: int = QUERY_BATCH
    ) -> np.ndarray:
        """Embeds image files exactly as the archive was embedded: [n, D]."""
        parts = [rows for _, rows in self.iter_image_descriptors(paths, batch_size=batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, self.manifest.dimension), np.float32)

    def search_images(
        self, paths: Sequence[str | Path], k: int, *, batch_size: int = QUERY_BATCH
    ) -> Iterator[tuple[list[str], list[list[Hit]]]]:
        """(queries, top-k hits) batch by batch, so memory stays bounded for any number of queries."""
        for chunk, descriptors in self.iter_image_descriptors(paths, batch_size=batch_size):
            yield [str(path) for path in chunk], self.search(descriptors, k)

    def _read_image(self, path: str | Path) -> np.ndarray:
        data = self.config.data
        record = {"path": str(path), "id": str(path), "label": -1}
        image = decode_record(record, data.channels, tuple(data.bands), DecodeOptions.from_config(data))
        return augment.normalise(augment.resize(image, data.image_size), data.mean, data.std)

    def _embed_images(self, images: list[np.ndarray], batch_size: int) -> np.ndarray:
        batch = np.stack(images)
        count = len(batch)
        if count < batch_size:  # Pad to the fixed batch size; the padding rows are dropped.
            batch = np.concatenate([batch, np.zeros((batch_size - count, *batch.shape[1:]), batch.dtype)])
        pooled = np.asarray(self._encoder()(batch))[:count]
        descriptors = l2_normalise(pooled)
        if self.whitening is not None:
            descriptors = self.whitening.apply(descriptors)
        if descriptors.shape[1] != self.manifest.dimension:
            raise QueryError(
                f"Query descriptors have dimension {descriptors.shape[1]} but the index has "
                f"{self.manifest.dimension} (dimension mismatch)."
            )
        return descriptors

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
