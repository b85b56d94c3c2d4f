"""BigEarthNet's official lists and nomenclature, read from the data files of `bigearthnet-common`.

The package (Apache-2.0, kai-tub/bigearthnet_common) ships the official train / validation / test
lists (BigEarthNet-MM's splits, already without cloudy, snowy and no-19-class patches), the
exclusion lists, the S1 <-> S2 patch pairing and, in `constants.py`, the 43 -> 19 class map and the
per-band statistics. Its Python modules need library versions this project does not pin, so they
are never imported: the `.csv.bz2` files are read directly, and `constants.py` is parsed with `ast`
and its literal assignments evaluated. Every reader is cached, each file read once per process, under
one lock: the pipeline's reading threads ask for the nomenclature at the same time, and CPython 3.11's
`ast.parse` is not safe to run in two threads at once ("AST constructor recursion depth mismatch").
"""

from __future__ import annotations

import ast
import bz2
import functools
import importlib.util
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rejepa_jax.data.errors import DataError

PACKAGE = "bigearthnet_common"
INSTALL_HINT = "pip install bigearthnet-common==2.8.0"
# Split name -> the package's list file (one S2 patch name per line, no header).
SPLIT_FILES = {"train": "train.csv.bz2", "validation": "val.csv.bz2", "test": "test.csv.bz2"}
CLOUD_AND_SHADOW_FILE = "patches_with_cloud_and_shadow.csv.bz2"
SEASONAL_SNOW_FILE = "patches_with_seasonal_snow.csv.bz2"
NO_19_CLASS_FILE = "patches_with_no_19_class_targets.csv.bz2"
S1_S2_FILE = "s1_s2_name_country_season.csv.bz2"  # Header: s1_name,s2_name,country,season.
CONSTANTS_FILE = "constants.py"

_T = TypeVar("_T")
_LOCK = threading.RLock()  # Re-entrant: cached readers call each other.


def _cached(function: Callable[..., _T]) -> Callable[..., _T]:
    """`functools.cache`, with every call under the module's lock (computed once, in one thread)."""
    cached = functools.cache(function)

    @functools.wraps(function)
    def locked(*args: Any) -> _T:
        with _LOCK:
            return cached(*args)

    return locked


@_cached
def package_dir() -> Path:
    """The installed package's folder, found without executing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise DataError(
            f"BigEarthNet's split lists and nomenclature come from the package {PACKAGE!r}, which is not "
            f"installed: {INSTALL_HINT}"
        )
    return Path(locations[0])


def _package_file(name: str) -> Path:
    path = package_dir() / name
    if not path.is_file():
        raise DataError(f"{path} is missing from the installed {PACKAGE}; reinstall it: {INSTALL_HINT}")
    return path


@_cached
def _read_names(name: str) -> tuple[str, ...]:
    """The patch names of a one-name-per-line list (CRLF or LF endings, blank lines ignored)."""
    path = _package_file(name)
    try:
        text = bz2.decompress(path.read_bytes()).decode("utf-8")
    except (OSError, ValueError) as e:
        raise DataError(f"Cannot read {path}: {e}") from e
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def official_split(split: str) -> tuple[str, ...]:
    """The official list of `split` ("train", "validation" or "test"): sorted S2 patch names."""
    if split not in SPLIT_FILES:
        raise ValueError(f"Unknown BigEarthNet split {split!r}; official splits: {', '.join(SPLIT_FILES)}.")
    return _sorted_names(SPLIT_FILES[split])


@_cached
def _sorted_names(name: str) -> tuple[str, ...]:
    return tuple(sorted(_read_names(name)))


@_cached
def official_split_set(split: str) -> frozenset[str]:
    """The official list of `split` as a set, for membership tests."""
    return frozenset(official_split(split))


@_cached
def cloud_and_shadow_patches() -> frozenset[str]:
    """S2 patches with clouds or cloud shadows (9,280), which the official lists leave out."""
    return frozenset(_read_names(CLOUD_AND_SHADOW_FILE))


@_cached
def seasonal_snow_patches() -> frozenset[str]:
    """S2 patches covered by seasonal snow (61,707), which the official lists leave out."""
    return frozenset(_read_names(SEASONAL_SNOW_FILE))


@_cached
def no_19_class_patches() -> frozenset[str]:
    """S2 patches none of whose 43-class labels maps to a 19-class label (57)."""
    return frozenset(_read_names(NO_19_CLASS_FILE))


@_cached
def s1_to_s2_names() -> dict[str, str]:
    """S1 patch name -> the S2 patch of the same place (590,326 pairs)."""
    path = _package_file(S1_S2_FILE)
    try:
        lines = bz2.decompress(path.read_bytes()).decode("utf-8").splitlines()
    except (OSError, ValueError) as e:
        raise DataError(f"Cannot read the S1 -> S2 pairing {path}: {e}") from e
    if not lines or not lines[0].startswith("s1_name,s2_name,"):
        raise DataError(f"{path} does not start with the header 's1_name,s2_name,...'.")
    # Names hold no commas or quotes, so a plain split reads the file 3x faster than the csv module.
    pairs = (line.split(",", 2) for line in lines[1:] if line.strip())
    return {pair[0].strip(): pair[1].strip() for pair in pairs}


@_cached
def _constants() -> dict[str, Any]:
    """The literal assignments of constants.py that this module uses, evaluated without importing it."""
    path = _package_file(CONSTANTS_FILE)
    wanted = {"OLD2NEW_LABELS_DICT", "NEW_LABELS_ORIGINAL_ORDER", "BAND_STATS_S2", "BAND_STATS_S1"}
    found: dict[str, Any] = {}
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
                if isinstance(target, ast.Name) and target.id in wanted:
                    found[target.id] = ast.literal_eval(node.value)
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"Cannot read BigEarthNet's constants from {path}: {e}") from e
    missing = wanted - set(found)
    if missing:
        raise DataError(
            f"{path} defines no literal {sorted(missing)}; expected {PACKAGE} 2.8.0 ({INSTALL_HINT})."
        )
    return found


def old_to_new_labels() -> dict[str, str | None]:
    """43-class CORINE name -> its 19-class name, or None for the 11 classes BigEarthNet-19 drops."""
    return dict(_constants()["OLD2NEW_LABELS_DICT"])


def labels_43() -> tuple[str, ...]:
    """The 43 original class names in BigEarthNet's original order (multi-hot index order)."""
    return tuple(_constants()["OLD2NEW_LABELS_DICT"])


def labels_19() -> tuple[str, ...]:
    """The 19 class names of BigEarthNet-19 in their official order (multi-hot index order)."""
    return tuple(_constants()["NEW_LABELS_ORIGINAL_ORDER"])


def band_stats_s2() -> dict[str, dict[str, float]]:
    """{"mean": {band: value}, "std": {band: value}} of the 12 S2 bands, reflectance x 10,000."""
    return {key: dict(values) for key, values in _constants()["BAND_STATS_S2"].items()}


def band_stats_s1() -> dict[str, dict[str, float]]:
    """{"mean": {band: value}, "std": {band: value}} of VV, VH (and VV/VH) backscatter in dB."""
    return {key: dict(values) for key, values in _constants()["BAND_STATS_S1"].items()}
