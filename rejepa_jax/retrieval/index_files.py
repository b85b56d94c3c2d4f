"""An index folder opened for loading: each listed file is read once and checked as it is read.

`IndexFiles` reads each file once, hashes those bytes and parses the same bytes (the ScaNN files are
copied, hashed on the way, to a private folder that ScaNN loads), so what is loaded is exactly what
was checked. Nothing in the folder is ever unpickled: `.npy` files are parsed by `npy_from_bytes`,
which refuses object arrays.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rejepa_jax.retrieval.manifest import (
    READ_CHUNK_BYTES,
    IndexIntegrityError,
    check_file_set,
    read_manifest,
    resolve,
    sha256,
)


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
        self.manifest = read_manifest(self.directory)
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
                    while chunk := src.read(READ_CHUNK_BYTES):
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
