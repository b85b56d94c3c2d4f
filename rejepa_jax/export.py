"""Checkpoint -> descriptors -> ScaNN index, written atomically with a manifest.

    python -m rejepa_jax.export --workdir RUN [--step N] --out INDEX_DIR [--encoder target|context]
        [--split archive] [--pca_dim D] [--target_recall 0.95] [--set data.root=/other/path ...]

The run's config (its `config.json`) says which data to embed; `--set` overrides any key. See
`rejepa_jax.retrieval.exporter` for what is written, and `rejepa_jax.distributed` for many hosts.

`--out` must be missing, an empty folder, or an index written by export holding only its own files
(it is then replaced atomically); anything else, e.g. a training run, is refused. While an export
runs it holds `.<out name>.lock` beside `--out`; a second export to the same `--out` is refused.
"""

from __future__ import annotations

from pathlib import Path

from absl import app, flags

from rejepa_jax import cli, config_lib, distributed
from rejepa_jax.retrieval.exporter import ENCODERS, ExportOptions, export_index

_WORKDIR = flags.DEFINE_string("workdir", None, "Training run folder (config.json and checkpoints).")
_OUT = flags.DEFINE_string(
    "out", None, "Index folder to create, fill (if empty) or replace (if an index written by export)."
)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest good one).")
_ENCODER = flags.DEFINE_enum(
    "encoder",
    None,
    list(ENCODERS),
    "Encoder to index (default: the run's first eval.encoders).",
)
_SPLIT = flags.DEFINE_string("split", "archive", "Split of the run's data to index: archive, query or train.")
_PCA_DIM = flags.DEFINE_integer("pca_dim", 0, "PCA-whiten to this many dimensions (0: off).")
_STANDARDISE = flags.DEFINE_boolean(
    "standardise",
    None,
    "Standardise each descriptor dimension with the indexed split's mean and std (default: the run's "
    "eval.standardise, which the recipes set for the descriptor they validated; off with --pca_dim).",
)
_TARGET_RECALL = flags.DEFINE_float("target_recall", 0.95, "recall@K the auto-tuned index must reach.")
_RECALL_K = flags.DEFINE_integer("recall_k", 10, "K of the recall target.")
_BRUTE_FORCE_BELOW = flags.DEFINE_integer(
    "brute_force_below", 20_000, "Exact (brute-force) index below this size."
)
_SET = flags.DEFINE_multi_string("set", [], "Config override `section.key=value`, e.g. data.root=/data.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    cli.quiet_library_info()
    distributed.initialize()
    workdir = Path(_WORKDIR.value)
    config = config_lib.apply_overrides(config_lib.load_json(workdir / "config.json"), _SET.value)
    options = ExportOptions(
        step=_STEP.value,
        encoder=_ENCODER.value,
        split=_SPLIT.value,
        pca_dim=_PCA_DIM.value,
        standardise=_standardise(config),
        target_recall=_TARGET_RECALL.value,
        recall_k=_RECALL_K.value,
        brute_force_below=_BRUTE_FORCE_BELOW.value,
    )
    result = export_index(config, workdir, _OUT.value, options)
    if result is not None:
        print(
            f"Index of {result.count} descriptors (dimension {result.dimension}, {result.scann['kind']}, "
            f"recall@{result.recall_k} {result.measured_recall:.3f}) written to "
            f"{Path(_OUT.value).absolute()}",
            flush=True,
        )


def _standardise(config) -> bool:
    """--standardise when given; else the run's eval.standardise, unless --pca_dim whitens instead."""
    if _STANDARDISE.value is not None:
        return _STANDARDISE.value
    return bool(config.eval.standardise) and not _PCA_DIM.value


def run() -> None:
    """Console-script entry point (`rejepa-export`)."""
    flags.mark_flags_as_required(["workdir", "out"])
    cli.run(main)


if __name__ == "__main__":
    run()
