"""An index folder's manifest: its layout, the manifest.json record, and the check of its files.

Layout of an index folder:

    manifest.json      what the index is: model fingerprint, checkpoint step, config, dimension,
                       count, normalisation, ScaNN settings, measured recall, file checksums
    descriptors.npy    float32 [N, D], L2-normalised
    ids.npy            the N ids (unicode); labels.npy the N labels; positions.npy each row's
                       position in its split (to find the image again)
    encoder.npz        the encoder params that made the descriptors
    pca.npz            the PCA-whitening, when used
    scann/             the serialized ScaNN searcher

Every file is listed with its SHA-256 in the manifest; a missing, changed or unlisted file is refused,
naming it (only the top-level manifest.json is not listed). `load` checks a folder on its own; code
that uses the files reads them through `index_files.IndexFiles`, which hashes the very bytes it hands
out. Writing a new index safely into place is `index_publication`'s job; `resolve` here lets loaders
find the previous index while a non-atomic swap is half done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
# 2: the saved encoder's parameters are named blocks/block_* (1: encoder/block_*).
FORMAT_VERSION = 2
# The files of an index folder.
DESCRIPTORS = "descriptors.npy"
IDS = "ids.npy"
LABELS = "labels.npy"
POSITIONS = "positions.npy"
ENCODER = "encoder.npz"
PCA = "pca.npz"
SCANN_DIR = "scann"

READ_CHUNK_BYTES = 1 << 20


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
        while chunk := f.read(READ_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def listed_files(directory: Path) -> list[str]:
    """Every file under `directory` except the top-level manifest.json, as sorted relative paths."""
    directory = Path(directory)
    return sorted(
        p.relative_to(directory).as_posix()
        for p in directory.rglob("*")
        if p.is_file() and p != directory / MANIFEST
    )


def write(directory: str | Path, manifest: Manifest) -> None:
    """Checksums every file in `directory` into the manifest and writes manifest.json."""
    directory = Path(directory)
    manifest.files = {name: sha256(directory / name) for name in listed_files(directory)}
    (directory / MANIFEST).write_text(json.dumps(dataclasses.asdict(manifest), indent=2, sort_keys=True))


def aside_dir(final: str | Path) -> Path:
    """Where a replaced index waits, on filesystems without an atomic exchange, during the swap."""
    final = Path(os.path.abspath(final))
    return final.parent / f".{final.name}.old"


def resolve(directory: str | Path) -> Path:
    """The folder that holds the index `directory` names.

    That is `directory` itself, unless an export was killed between the two renames of its swap
    (only on filesystems without an atomic exchange): then `directory` is missing and the previous
    index is whole in `.<name>.old`, which the next export of `directory` moves back.
    """
    directory = Path(directory)
    if not os.path.lexists(directory):
        aside = aside_dir(directory)
        if (aside / MANIFEST).is_file():
            return aside
    return directory


def _parse(directory: Path, text: str) -> Manifest:
    path = directory / MANIFEST
    try:
        manifest = Manifest(**json.loads(text))
    except (ValueError, TypeError) as e:
        raise IndexIntegrityError(f"{path} is not a valid index manifest: {e}") from e
    if manifest.format_version != FORMAT_VERSION:
        raise IndexIntegrityError(
            f"{path}: index format {manifest.format_version}, this version of rejepa_jax reads format "
            f"{FORMAT_VERSION}"
            + (
                " (the encoder saved beside an index was renamed from encoder/block_* to blocks/block_*)"
                if manifest.format_version == 1
                else ""
            )
            + ". Export the index again from its run."
        )
    if not isinstance(manifest.files, dict) or any(
        Path(name).is_absolute() or ".." in Path(name).parts or name == MANIFEST for name in manifest.files
    ):
        raise IndexIntegrityError(f"{path} lists file names outside the index folder.")
    return manifest


def read_manifest(directory: Path) -> Manifest:
    """The parsed manifest.json of `directory`, its files not yet checked."""
    path = directory / MANIFEST
    if not path.is_file():
        raise IndexIntegrityError(f"{directory} is not an index: {MANIFEST} is missing.")
    return _parse(directory, path.read_text())


def check_file_set(directory: Path, manifest: Manifest) -> None:
    """Every listed file is present and nothing else is (only the top-level manifest.json)."""
    present = set(listed_files(directory))
    for name in sorted(manifest.files):
        if name not in present:
            raise IndexIntegrityError(f"Index file {directory / name} is missing.")
    extra = sorted(present - set(manifest.files))
    if extra:
        raise IndexIntegrityError(f"Unexpected file(s) in the index {directory}: {extra}.")


def load(directory: str | Path, *, verify: bool = True) -> Manifest:
    """Reads manifest.json; with `verify`, checks that every file is present, unchanged and listed.

    A standalone check. Code that uses the files reads them through `index_files.IndexFiles`, which
    hashes the very bytes it hands out.
    """
    directory = resolve(directory)
    manifest = read_manifest(directory)
    if verify:
        check_file_set(directory, manifest)
        for name, digest in sorted(manifest.files.items()):
            if sha256(directory / name) != digest:
                raise IndexIntegrityError(f"Index file {directory / name} was modified (checksum mismatch).")
    return manifest
