"""Publication of an exported index: refuse unsafe targets, lock, and swap the new index in atomically.

Publication (`rejepa_jax.export`):
- an existing `--out` is replaced only when it is empty or an index holding nothing but its listed
  files (`check_replaceable`); anything else (a training run, a folder of other files) is refused;
- one export at a time per `--out`: `ExportLock` holds `.<name>.lock` beside it for the whole export;
- the new index is written to `.<name>.tmp-*` beside `--out` and swapped in with one atomic
  `renameat2(RENAME_EXCHANGE)`; where the filesystem lacks it, the old index is first renamed to
  `.<name>.old`. A kill between those two renames leaves `--out` missing and `.<name>.old` whole:
  loaders then read `.<name>.old` (`manifest.resolve`) and the next export moves it back
  (`recover_interrupted`), so a kill at any point leaves the old or the new index.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import uuid
from pathlib import Path

from rejepa_jax.retrieval.manifest import (
    MANIFEST,
    IndexIntegrityError,
    aside_dir,
    listed_files,
    read_manifest,
)


class ExportTargetError(ValueError):
    """`--out` holds something an export must not replace, or another export is writing it."""


def export_target(out: str | Path) -> Path:
    """The absolute folder an export of `out` writes: `out`, or the folder it links to."""
    path = Path(os.path.abspath(out))
    return Path(os.path.realpath(path)) if path.is_symlink() else path


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
        manifest = read_manifest(final)
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
