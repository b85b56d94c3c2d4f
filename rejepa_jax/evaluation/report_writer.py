"""Writes a retrieval evaluation as `report.json` (for programs) and `report.md` (for people).

The `report` dict (plain JSON types; numpy scalars and arrays and `Path`s are converted, and non-finite
floats are written as null, so report.json is strict JSON):

    {
      "meta": {                              # optional, every key optional
        "num_index": 24300,                  # vectors in the search index
        "num_queries": 2700,                 # query set size
        "num_archive": 24300,                # archive (searched set) size
        "dataset": "eurosat", ...            # any other scalar: listed as "key: value"
      },
      "descriptors": {                       # required: descriptor name -> flat metric dict
        "rejepa": {                          # the keys of retrieval_metrics.retrieval_report, for each K:
          "p@10": 0.91, "r@10": 0.02,
          "map@10/retrieved": 0.95, "map@10/min_k_r": 0.90, "map@10/total": 0.01,
          "ndcg@10": 0.92, "f1@10": 0.70,    # f1@K only for multi-label data
          ...                                # other keys: listed under "Other values"
        },
      },
      "index": {                             # optional: the approximate index against exact search
        "method": "scann",                   # optional
        "k": 10,                             # the K of recall@K vs exact
        "bytes_per_vector": 96,              # optional default for the runs
        "runs": [                            # one row per search setting measured
          {"settings": {"leaves_to_search": 8, "reorder": 50},
           "recall_vs_exact": 0.961, "batch_qps": 29290.0,
           "latency_ms_p50": 0.08, "latency_ms_p99": 0.21, "bytes_per_vector": 96},
        ],
        ...                                  # other scalars (build_seconds, ...): listed
      },
      "figures": [                           # optional, in display order
        {"caption": "Top-10 results of 8 queries", "path": "gallery.png"},  # relative to the directory
      ],
    }

Any other top-level key is kept in report.json only. Both files are written through a temporary file and
renamed, so a reader (or a job killed mid-write) never leaves a half-written report.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rejepa_jax.evaluation.retrieval_metrics import NORMALISATIONS

# What each mAP@K normalisation divides S_K = Σ_{k≤K} P@k·rel_k by, for the table header
# and the one-line explanations under it.
_MAP_HEADERS = {
    "retrieved": "mAP@K ÷R_K (retrieved)",
    "min_k_r": "mAP@K ÷min(K,R) (min_k_r)",
    "total": "mAP@K ÷R (total)",
}
_MAP_FORMULAS = {"retrieved": "S_K / R_K", "min_k_r": "S_K / min(K, R)", "total": "S_K / R"}
_MAP_EXPLANATIONS = {
    "retrieved": (
        "R_K is the number of relevant items in the top K, so precision is averaged over the hits only; "
        "a single relevant item at rank 1 scores 1 (optimistic; hashing-literature style)."
    ),
    "min_k_r": (
        "the standard AP@K; reaches 1 only when the top K are all relevant (all R of them first when R < K)."
    ),
    "total": (
        "R is the number of relevant items in the whole archive; a truncated TREC AP, at most K/R, so it is "
        "small whenever R ≫ K."
    ),
}
_SIMPLE_COLUMNS = {"p": "P@K", "r": "R@K", "ndcg": "NDCG@K", "f1": "F1@K (CSMAE)"}
_SIMPLE_KEY = re.compile(r"^(p|r|ndcg|f1)@(\d+)$")
_MAP_KEY = re.compile(r"^map@(\d+)/(" + "|".join(NORMALISATIONS) + r")$")
_META_SIZES = (
    ("num_index", "Index", "vectors"),
    ("num_queries", "Queries", ""),
    ("num_archive", "Archive", "items"),
)
_RUN_FIELDS = (
    "settings",
    "recall_vs_exact",
    "batch_qps",
    "latency_ms_p50",
    "latency_ms_p99",
    "bytes_per_vector",
)
_MISSING = "–"


# ---------------------------------------------------------------------------------------------------
# Files.


def _atomic_write_text(path: Path, text: str) -> Path:
    """Writes `text` to a temporary file next to `path`, syncs it and renames it over `path`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _jsonable(value: Any) -> Any:
    """`value` in plain JSON types: numpy and paths converted, keys as strings, NaN and ±inf as None."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------------------------------------
# Formatting.


def _number(value: Any) -> float | None:
    """A finite float, or None for anything missing, non-numeric or non-finite."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _metric(value: Any) -> str:
    number = _number(value)
    return _MISSING if number is None else f"{number:.4f}"


def _scalar(value: Any) -> str:
    """Integers with thousands separators, floats with 4 significant digits, anything else as text."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}" if math.isfinite(value) else _MISSING
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_scalar(v)}" for k, v in value.items()) or _MISSING
    if isinstance(value, list | tuple):
        return ", ".join(_scalar(v) for v in value)
    return str(value)


def _qps(value: Any) -> str:
    number = _number(value)
    return _MISSING if number is None else f"{number:,.0f}"


def _ms(value: Any) -> str:
    number = _number(value)
    if number is None:
        return _MISSING
    return f"{number:,.2f}" if number >= 1 else f"{number:.3f}"


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]], numeric_from: int) -> list[str]:
    """A markdown table; columns from `numeric_from` on are right-aligned."""
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


# ---------------------------------------------------------------------------------------------------
# Sections.


def _header(title: str, meta: Mapping[str, Any]) -> list[str]:
    lines = [f"# {title}", ""]
    sizes = [
        f"{label}: {_scalar(meta[key])} {unit}".rstrip() for key, label, unit in _META_SIZES if key in meta
    ]
    if sizes:
        lines += [" · ".join(sizes), ""]
    size_keys = {key for key, _, _ in _META_SIZES}
    others = [f"- {key}: {_scalar(value)}" for key, value in meta.items() if key not in size_keys]
    if others:
        lines += [*others, ""]
    return lines


def _split_metrics(metrics: Mapping[str, Any]) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
    """Per K: column name -> value for the main table; and every other key."""
    by_k: dict[int, dict[str, Any]] = {}
    other: dict[str, Any] = {}
    for key, value in metrics.items():
        if match := _SIMPLE_KEY.match(key):
            by_k.setdefault(int(match[2]), {})[_SIMPLE_COLUMNS[match[1]]] = value
        elif match := _MAP_KEY.match(key):
            by_k.setdefault(int(match[1]), {})[_MAP_HEADERS[match[2]]] = value
        else:
            other[key] = value
    return by_k, other


def _metrics_section(descriptors: Mapping[str, Mapping[str, Any]]) -> list[str]:
    split = {name: _split_metrics(metrics) for name, metrics in descriptors.items()}
    ks = sorted({k for by_k, _ in split.values() for k in by_k})
    columns = ["P@K", "R@K", *(_MAP_HEADERS[n] for n in NORMALISATIONS), "NDCG@K"]
    if any(_SIMPLE_COLUMNS["f1"] in cols for by_k, _ in split.values() for cols in by_k.values()):
        columns.append(_SIMPLE_COLUMNS["f1"])
    lines = ["## Retrieval metrics", ""]
    if not ks:
        return [*lines, "No retrieval metrics in this report.", ""]

    rows = []
    for k in ks:
        # Bold the best value of each column at this K when several descriptors have one.
        at_k = [by_k[k] for by_k, _ in split.values() if k in by_k]
        best = {}
        for column in columns:
            finite = [v for v in (_number(cols.get(column)) for cols in at_k) if v is not None]
            if len(finite) > 1:
                best[column] = f"{max(finite):.4f}"
        for name, (by_k, _) in split.items():
            if k not in by_k:
                continue
            cells = []
            for column in columns:
                text = _metric(by_k[k].get(column))
                cells.append(f"**{text}**" if best.get(column) == text else text)
            rows.append([_cell(name), str(k), *cells])
    lines += _table(["Descriptor", "K", *columns], rows, numeric_from=1)
    lines += [
        "",
        "Means over all queries (a query with no relevant item counts as 0); with several descriptors, the "
        "best value of each column at each K is in bold.",
        "",
        "mAP@K is S_K = Σ_{k≤K} P@k·rel_k divided by one of three normalisations:",
        "",
        *(f"- **{n}** ({_MAP_FORMULAS[n]}): {_MAP_EXPLANATIONS[n]}" for n in NORMALISATIONS),
        "",
    ]
    other_rows = [
        [_cell(name), _cell(key), _cell(_scalar(value))]
        for name, (_, other) in split.items()
        for key, value in other.items()
    ]
    if other_rows:
        lines += ["### Other values", "", *_table(["Descriptor", "Key", "Value"], other_rows, 2), ""]
    return lines


def _index_section(index: Mapping[str, Any]) -> list[str]:
    k = index.get("k")
    lines = ["## Index", ""]
    facts = [f"- {key}: {_scalar(value)}" for key, value in index.items() if key not in ("runs", "k")]
    if facts:
        lines += [*facts, ""]
    runs = index.get("runs") or []
    if runs:
        recall = f"Recall@{k} vs exact" if k is not None else "Recall@K vs exact"
        header = ["Settings", recall, "Batch QPS", "p50 latency (ms)", "p99 latency (ms)", "Bytes/vector"]
        rows = []
        for run in runs:
            settings = dict(run.get("settings") or {})
            # Keys outside the documented fields are shown with the settings rather than dropped.
            settings.update({key: value for key, value in run.items() if key not in _RUN_FIELDS})
            bytes_per_vector = run.get("bytes_per_vector", index.get("bytes_per_vector"))
            rows.append(
                [
                    _cell(_scalar(settings)),
                    _metric(run.get("recall_vs_exact")),
                    _qps(run.get("batch_qps")),
                    _ms(run.get("latency_ms_p50")),
                    _ms(run.get("latency_ms_p99")),
                    _MISSING if _number(bytes_per_vector) is None else _scalar(bytes_per_vector),
                ]
            )
        lines += [*_table(header, rows, numeric_from=1), ""]
    return lines


def _figures_section(directory: Path, figures: list[Mapping[str, Any]]) -> list[str]:
    lines = ["## Figures", ""]
    for figure in figures:
        path = Path(figure["path"])
        link = Path(os.path.relpath(path, directory)) if path.is_absolute() else path
        caption = str(figure.get("caption") or link.name)
        lines.append(f"### {caption}")
        lines.append("")
        missing = "" if (directory / link).is_file() else " (file missing when this report was written)"
        lines += [f"![{caption}]({link.as_posix()}){missing}", ""]
    return lines


# ---------------------------------------------------------------------------------------------------
# Entry point.


def render_markdown(directory: str | os.PathLike, report: Mapping[str, Any], *, title: str) -> str:
    """The report.md text for `report` (structure in the module docstring); figure links are checked
    against `directory`."""
    descriptors = report.get("descriptors")
    if not isinstance(descriptors, Mapping):
        raise ValueError("report['descriptors'] must be a dict: descriptor name -> flat metric dict.")
    lines = _header(title, report.get("meta") or {})
    lines += _metrics_section(descriptors)
    if report.get("index"):
        lines += _index_section(report["index"])
    if report.get("figures"):
        lines += _figures_section(Path(directory), list(report["figures"]))
    return "\n".join(lines).rstrip("\n") + "\n"


def write_report(directory: str | os.PathLike, report: Mapping[str, Any], *, title: str) -> tuple[Path, Path]:
    """Writes `directory`/report.json (sorted keys, indent 2) and `directory`/report.md, each atomically.

    Returns (json path, markdown path). The JSON is written first: it is the record, the page is a view.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(directory, report, title=title)
    text = json.dumps(_jsonable(report), sort_keys=True, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    json_path = _atomic_write_text(directory / "report.json", text)
    md_path = _atomic_write_text(directory / "report.md", markdown)
    return json_path, md_path
