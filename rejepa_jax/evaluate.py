"""Retrieval benchmark of an exported index: metrics, index quality and speed, baselines, pictures.

    python -m rejepa_jax.evaluate --index INDEX_DIR --queries query [--out DIR] [--ks 5,10,20,100]
        [--exact] [--baselines color_histogram,random_init] [--set data.root=...]
    python -m rejepa_jax.evaluate --workdir RUN --queries query      # exact mode, no index needed

`--queries` names a split of the index's data: `query` (the run's query split), or any split the
data source accepts (a CSV list for folders, a tfds split string). Writes `report.json`,
`report.md` and the pictures (see `rejepa_jax.evaluation.retrieval_report`) to `--out`, by default
`INDEX_DIR.eval_<queries>` beside the index (never inside it) or `RUN/eval_<queries>`.
"""

from __future__ import annotations

from pathlib import Path

from absl import app, flags

from rejepa_jax import cli
from rejepa_jax.evaluation import report_writer
from rejepa_jax.evaluation.retrieval_report import (
    BASELINES,
    REPORT_TITLE,
    archive_from_index,
    archive_from_workdir,
    check_report_dir,
    default_report_dir,
    evaluate,
)

_INDEX = flags.DEFINE_string("index", None, "Index folder written by rejepa_jax.export.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Exact mode without an index: a training run folder.")
_ENCODER = flags.DEFINE_enum(
    "encoder",
    None,
    ["target", "context"],
    "With --workdir: which encoder (default: the run's first eval.encoders).",
)
_QUERIES = flags.DEFINE_string("queries", "query", "Query split: 'query' or a split of the index's data.")
_OUT = flags.DEFINE_string(
    "out", None, "Report folder (default: INDEX_DIR.eval_<queries> beside the index, RUN/eval_<queries>)."
)
_KS = flags.DEFINE_list("ks", ["5", "10", "20", "100"], "Cut-offs K.")
_EXACT = flags.DEFINE_boolean("exact", False, "Exact search only (no ScaNN index needed).")
_BASELINES = flags.DEFINE_list("baselines", list(BASELINES), "Baselines evaluated the same way.")
_GALLERY = flags.DEFINE_integer("gallery_queries", 8, "Queries shown in the gallery picture.")
_SET = flags.DEFINE_multi_string("set", [], "Config override `section.key=value`, e.g. data.root=/data.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if bool(_INDEX.value) == bool(_WORKDIR.value):
        raise app.UsageError("Give exactly one of --index (an exported index) or --workdir (exact mode).")
    cli.quiet_library_info()
    overrides = tuple(_SET.value)
    if _INDEX.value:
        default_out = default_report_dir(_QUERIES.value, index_dir=_INDEX.value)
        out = Path(_OUT.value or default_out)
        check_report_dir(out, _INDEX.value)  # Before the (slow) loading.
        archive = archive_from_index(_INDEX.value, overrides)
    else:
        out = Path(_OUT.value or default_report_dir(_QUERIES.value, workdir=_WORKDIR.value))
        archive = archive_from_workdir(_WORKDIR.value, encoder=_ENCODER.value, overrides=overrides)
    report = evaluate(
        archive,
        _QUERIES.value,
        out,
        ks=[int(k) for k in _KS.value],
        exact_only=_EXACT.value,
        baselines=tuple(b for b in _BASELINES.value if b),
        gallery_queries=_GALLERY.value,
    )
    print(report_writer.render_markdown(out, report, title=REPORT_TITLE))
    print(f"\nReport and pictures written to {out.absolute()} (gallery: {out.absolute() / 'gallery.png'})")


def run() -> None:
    """Console-script entry point (`rejepa-evaluate`)."""
    cli.run(main)


if __name__ == "__main__":
    run()
