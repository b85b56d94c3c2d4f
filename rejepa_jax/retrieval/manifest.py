"""An index folder's manifest, its integrity checks, and its safe, atomic publication.

Layout of an index folder:

    manifest.json      what the index is: model fingerprint, checkpoint step, config, dimension,
                       count, normalisation, ScaNN settings, measured recall, file checksums
    descriptors.npy    float32 [N, D], L2-normalised
    ids.npy            the N ids (unicode); labels.npy the N labels; positions.npy each row's
                       position in its split (to find the image again)
    encoder.npz        the encoder params that made the descriptors
    pca.npz            the PCA-whitening, when used
    scann/             the serialized ScaNN searcher

Every file is listed with its SHA-256 in the manifest. `IndexFiles` reads each file once, hashes
those bytes and parses the same bytes (the ScaNN files are copied, hashed on the way, to a private
folder that ScaNN loads), so what is loaded is exactly what was checked; a missing, changed or
unlisted file is refused, naming it (only the top-level manifest.json is not listed). Nothing in the
folder is ever unpickled.

Publication (`rejepa_jax.export`):
- an existing `--out` is replaced only when it is empty or an index holding nothing but its listed
  files (`check_replaceable`); anything else (a training run, a folder of other files) is refused;
- one export at a time per `--out`: `ExportLock` holds `.<name>.lock` beside it for the whole export;
- the new index is written to `.<name>.tmp-*` beside `--out` and swapped in with one atomic
  `renameat2(RENAME_EXCHANGE)`; where the filesystem lacks it, the old index is first renamed to
  `.<name>.old`. A kill between those two renames leaves `--out` missing and `.<name>.old` whole:
  loaders then read `.<name>.old` (`resolve`) and the next export moves it back
  (`recover_interrupted`), so a kill at any point leaves the old or the new index.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import hashlib
import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

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

_CHUNK = 1 << 20


class IndexIntegrityError(ValueError):
    """An index folder is incomplete, modified, or not an index."""


class ExportTargetError(ValueError):
    """`--out` holds something an export must not replace, or another export is writing it."""


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
        while chunk := f.read(_CHUNK):
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


def export_target(out: str | Path) -> Path:
    """The absolute folder an export of `out` writes: `out`, or the folder it links to."""
    path = Path(os.path.abspath(out))
    return Path(os.path.realpath(path)) if path.is_symlink() else path


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
            f"{path}: index format {manifest.format_version}, expected {FORMAT_VERSION}."
        )
    if not isinstance(manifest.files, dict) or any(
        Path(name).is_absolute() or ".." in Path(name).parts or name == MANIFEST for name in manifest.files
    ):
        raise IndexIntegrityError(f"{path} lists file names outside the index folder.")
    return manifest


def _read_manifest(directory: Path) -> Manifest:
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

    A standalone check. Code that uses the files reads them through `IndexFiles`, which hashes the
    very bytes it hands out.
    """
    directory = resolve(directory)
    manifest = _read_manifest(directory)
    if verify:
        check_file_set(directory, manifest)
        for name, digest in sorted(manifest.files.items()):
            if sha256(directory / name) != digest:
                raise IndexIntegrityError(f"Index file {directory / name} was modified (checksum mismatch).")
    return manifest


class NamedBytes(io.BytesIO):
    """In-memory file contents that print as the file they came from (for error messages)."""

    def __init__(self, data: bytes, name: Path):
        super().__init__(data)
        self.name = str(name)

    def __str__(self) -> str:
        return self.name


class IndexFiles:
    """An index folder opened for loading: each listed file is read once and checked as it is read.

    Opening checks the manifest and the set of files (missing, unlisted). Then `read_bytes` and
    `private_copy` hand out exactly the bytes whose SHA-256 matched the manifest: parse those
    (`npy_from_bytes`, `NamedBytes` for `np.load`), never the file again.
    """

    def __init__(self, directory: str | Path):
        self.directory = resolve(directory)
        self.manifest = _read_manifest(self.directory)
        check_file_set(self.directory, self.manifest)
        self._checked: set[str] = set()

    def _expected(self, name: str) -> str:
        if name not in self.manifest.files:
            raise IndexIntegrityError(f"{self.directory / name} is not listed in the index manifest.")
        return self.manifest.files[name]

    def _mismatch(self, name: str) -> IndexIntegrityError:
        return IndexIntegrityError(f"Index file {self.directory / name} was modified (checksum mismatch).")

    def read_bytes(self, name: str) -> bytes:
        """The file's contents, read once; refused unless their SHA-256 is the listed one."""
        expected = self._expected(name)
        with (self.directory / name).open("rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != expected:
            raise self._mismatch(name)
        self._checked.add(name)
        return data

    @contextlib.contextmanager
    def private_copy(self, subdir: str) -> Iterator[Path]:
        """The listed files under `subdir`, copied (hashed on the way) to a fresh private folder.

        For loaders that read files themselves (ScaNN): they read the copy, which nobody else can
        change, so they load exactly the checked bytes. The copy is deleted on exit.
        """
        prefix = f"{subdir}/"
        names = sorted(name for name in self.manifest.files if name.startswith(prefix))
        with tempfile.TemporaryDirectory(prefix="rejepa_index_") as tmp:
            root = Path(tmp) / subdir
            root.mkdir(mode=0o700)
            for name in names:
                target = Path(tmp) / name
                target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with (self.directory / name).open("rb") as src, target.open("xb") as dst:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        dst.write(chunk)
                if digest.hexdigest() != self._expected(name):
                    raise self._mismatch(name)
                self._checked.add(name)
            yield root

    def check_all_read(self) -> None:
        """Checks (by reading) every listed file not handed out yet, so none goes unverified."""
        for name in sorted(set(self.manifest.files) - self._checked):
            expected = self._expected(name)
            if sha256(self.directory / name) != expected:
                raise self._mismatch(name)
            self._checked.add(name)


def npy_from_bytes(data: bytes, name: str | Path) -> np.ndarray:
    """Parses `.npy` bytes into a read-only array sharing them; object (pickled) arrays are refused."""
    stream = io.BytesIO(data[: 1 << 16])
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as e:
        raise IndexIntegrityError(f"{name} is not a valid .npy file: {e}") from e
    if dtype.hasobject:
        raise IndexIntegrityError(f"{name} holds Python objects, which would be unpickled; refusing it.")
    count = int(np.prod(shape, dtype=np.int64))
    offset = stream.tell()
    if len(data) - offset != count * dtype.itemsize:
        raise IndexIntegrityError(
            f"{name}: {len(data) - offset} data bytes, its header says {shape} of {dtype} "
            f"({count * dtype.itemsize} bytes)."
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return array.reshape(shape, order="F" if fortran_order else "C")


# ---------------------------------------------------------------------------------------------------
# Publication.


def check_replaceable(final: str | Path, *, workdir: str | Path | None = None) -> None:
    """Refuses an export target that holds anything but nothing or an index written by export.

    `final` may be missing, an empty folder, or an index folder whose files are all listed in its
    manifest.json (replacing it loses nothing else). A training run (`workdir`) or a folder holding
    it is refused even if it looks like an index.
    """
    final = Path(os.path.abspath(final))
    if workdir is not None:
        run = Path(os.path.abspath(workdir))
        if run == final or run.is_relative_to(final):
            raise ExportTargetError(
                f"Refusing to write the index to {final}: it holds the training run {run}, which "
                "publishing the index would delete. Choose an --out outside the run folder."
            )
    if not os.path.lexists(final):
        return
    if not final.is_dir():
        raise ExportTargetError(f"Refusing to write the index to {final}: it exists and is not a folder.")
    if not any(final.iterdir()):
        return
    if not (final / MANIFEST).is_file():
        raise ExportTargetError(
            f"Refusing to replace {final}: it is not empty and not an index written by "
            f"rejepa_jax.export (no {MANIFEST}). Choose another --out, or empty that folder yourself."
        )
    try:
        manifest = _read_manifest(final)
    except IndexIntegrityError as e:
        raise ExportTargetError(f"Refusing to replace {final}: {e}") from e
    others = sorted(set(listed_files(final)) - set(manifest.files))
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise ExportTargetError(
            f"Refusing to replace the index {final}: it also holds files that are not part of the "
            f"index ({shown}). Move them out of it first."
        )


class ExportLock:
    """An exclusive lock on `.<name>.lock` beside an export's target, held for the whole export.

    Taking it never waits: if another export of the same target holds it, `ExportTargetError`. The
    lock (flock) dies with its process, so a killed export never blocks the next one.
    """

    def __init__(self, final: str | Path):
        final = Path(os.path.abspath(final))
        self.final = final
        self.path = final.parent / f".{final.name}.lock"
        self._fd: int | None = None

    def acquire(self) -> ExportLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ExportTargetError(
                    f"Another export to {self.final} is running (it holds {self.path}); wait for it "
                    "to finish, or choose another --out."
                ) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:  # Not a lock file its previous holder removed while we opened it.
                self._fd = fd
                return self
            os.close(fd)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ExportLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def staging_dir(final: str | Path) -> Path:
    """A fresh temporary folder beside `final` (same filesystem, so the swap is a rename)."""
    final = Path(os.path.abspath(final))
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    return staging


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swaps two existing paths (Linux renameat2); False where unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), str(b))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        path.unlink()


def publish(staging: Path, final: str | Path) -> None:
    """Swaps a finished index into place (hold `ExportLock`); a kill leaves the old or the new one.

    Checks `check_replaceable` again first. The swap is one atomic exchange where the filesystem
    supports it; otherwise two renames through `.<name>.old` (see `resolve`).
    """
    final = Path(os.path.abspath(final))
    check_replaceable(final)
    if not os.path.lexists(final):
        os.rename(staging, final)
        return
    if _exchange(staging, final):
        _remove(staging)  # Now the previous index.
        return
    aside = aside_dir(final)
    _remove(aside)
    os.rename(final, aside)
    os.rename(staging, final)
    _remove(aside)


def recover_interrupted(final: str | Path) -> None:
    """Cleans up after interrupted exports of `final` (hold `ExportLock`).

    Moves the previous index back if an export was killed between the two renames of `publish`,
    and deletes leftover temporary folders (with the lock held, none belongs to a running export).
    """
    final = Path(os.path.abspath(final))
    asides = [aside_dir(final), *sorted(final.parent.glob(f".{final.name}.old-*"))]  # and older names
    for aside in asides:
        if not os.path.lexists(final) and (aside / MANIFEST).is_file():
            os.rename(aside, final)
        else:
            _remove(aside)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        _remove(stale)
