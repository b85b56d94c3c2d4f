"""An index folder's manifest, its integrity checks, and atomic publication.

Layout of an index folder:

    manifest.json      what the index is: model fingerprint, checkpoint step, config, dimension,
                       count, normalisation, ScaNN settings, measured recall, file checksums
    descriptors.npy    float32 [N, D], L2-normalised (memory-mapped by readers)
    ids.npy            the N ids (unicode); labels.npy the N labels; positions.npy each row's
                       position in its split (to find the image again)
    encoder.npz        the encoder params that made the descriptors
    pca.npz            the PCA-whitening, when used
    scann/             the serialized ScaNN searcher

Every file is listed with its SHA-256 in the manifest; loading refuses a missing, extra-pickle or
changed file, naming it. Nothing in the folder is ever unpickled. A new index is written to a
temporary folder and renamed into place, so an interrupted export leaves the previous one intact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
# The files of an index folder.
DESCRIPTORS = "descriptors.npy"
IDS = "ids.npy"
LABELS = "labels.npy"
POSITIONS = "positions.npy"
ENCODER = "encoder.npz"
PCA = "pca.npz"
SCANN_DIR = "scann"


class IndexIntegrityError(ValueError):
    """An index folder is incomplete, modified, or not an index."""


@dataclasses.dataclass
class Manifest:
    """Everything needed to trust and use an index; serialised as manifest.json."""

    workdir: str
    checkpoint_step: int
    encoder: str  # "target" (EMA) or "context"
    model_fingerprint: str
    config: dict[str, Any]
    dimension: int
    count: int
    normalisation: str
    split: str
    scann: dict[str, Any]
    measured_recall: float
    recall_k: int
    pca_dim: int = 0  # Output width of pca.npz (PCA-whitening or standardisation); 0 when absent.
    class_names: list[str] = dataclasses.field(default_factory=list)
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    format_version: int = FORMAT_VERSION


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def listed_files(directory: Path) -> list[str]:
    """Every file under `directory` except the manifest, as sorted relative paths."""
    return sorted(
        str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST
    )


def write(directory: str | Path, manifest: Manifest) -> None:
    """Checksums every file in `directory` into the manifest and writes manifest.json."""
    directory = Path(directory)
    manifest.files = {name: sha256(directory / name) for name in listed_files(directory)}
    (directory / MANIFEST).write_text(json.dumps(dataclasses.asdict(manifest), indent=2, sort_keys=True))


def load(directory: str | Path, *, verify: bool = True) -> Manifest:
    """Reads manifest.json; with `verify`, checks that every file is present and unchanged."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise IndexIntegrityError(f"{directory} is not an index: {MANIFEST} is missing.")
    try:
        values = json.loads(path.read_text())
        manifest = Manifest(**values)
    except (ValueError, TypeError) as e:
        raise IndexIntegrityError(f"{path} is not a valid index manifest: {e}") from e
    if manifest.format_version != FORMAT_VERSION:
        raise IndexIntegrityError(
            f"{path}: index format {manifest.format_version}, expected {FORMAT_VERSION}."
        )
    if verify:
        present = set(listed_files(directory))
        for name, digest in sorted(manifest.files.items()):
            if name not in present:
                raise IndexIntegrityError(f"Index file {directory / name} is missing.")
            if sha256(directory / name) != digest:
                raise IndexIntegrityError(f"Index file {directory / name} was modified (checksum mismatch).")
        extra = sorted(present - set(manifest.files))
        if extra:
            raise IndexIntegrityError(f"Unexpected file(s) in the index {directory}: {extra}.")
    return manifest


def staging_dir(final: str | Path) -> Path:
    """A fresh temporary folder beside `final` (same filesystem, so the rename is atomic)."""
    final = Path(final).absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    return staging


def publish(staging: Path, final: str | Path) -> None:
    """Moves a finished index into place; a previous index is replaced only once the new one is whole."""
    final = Path(final).absolute()
    previous = None
    if final.exists():
        previous = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(final, previous)
    os.rename(staging, final)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def remove_stale_staging(final: str | Path) -> None:
    """Cleans up after an interrupted export of `final`.

    Deletes its temporary folders; if it was interrupted between the two renames of `publish`, puts
    the previous index back in place.
    """
    final = Path(final).absolute()
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    previous = sorted(final.parent.glob(f".{final.name}.old-*"))
    if previous and not final.exists():
        os.rename(previous[-1], final)
        previous = previous[:-1]
    for stale in previous:
        shutil.rmtree(stale, ignore_errors=True)
