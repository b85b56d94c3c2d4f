"""Short EuroSAT pretraining trials: which settings help REJEPA's descriptor on a small budget.

    python -m benchmarks.short_run_tuning --data_root ../shared/data/eurosat_rgb \
        --split_dir ../shared/data/eurosat_rgb_meta --out runs/tuning [--trials baseline lr_2.5e-4]

Each trial trains ViT-Ti/8 at 64 px for `--steps` steps at batch 64 (predictor width 192, depth 2,
warm-up 40 steps, then cosine), changing one setting from the baseline, and is evaluated by the
trainer's own end-of-run evaluation, kept small so a trial takes minutes on two cores: the first
`--queries` test images against the 5,400 validation images, exact cosine, P@20 and mAP@20 of the
mean-pooled target encoder. `random_init` is the same encoder before any update (lr 0). Writes
`<out>/results.json` (resumable: finished trials are kept) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.quality_per_compute import load_config
from rejepa_jax import config_lib, trainer

# Settings every trial shares, on top of configs/eurosat.py:model=Ti/8.
BASE = (
    "batch_size=64",
    "optimizer.warmup_steps=40",
    "model.predictor_width=192",
    "model.predictor_depth=2",
    "data.num_workers=0",
    "eval.every_steps=0",
    "eval.baselines=()",
    "eval.encoders=('target',)",
    "eval.ks=(20,)",
    "log_every_steps=50",
    "data.archive_split=validation.csv",
)
# name -> overrides on top of BASE.
TRIALS = {
    "random_init": ("optimizer.lr=0", "optimizer.start_lr=0", "optimizer.final_lr=0"),
    "baseline": (),
    "predictor_depth_6": ("model.predictor_depth=6",),
    "lr_2.5e-4": ("optimizer.lr=2.5e-4", "optimizer.start_lr=5e-5"),
    "vicreg_x0.1": ("objective.variance_weight=0.1", "objective.covariance_weight=0.004"),
    "ema_from_0.99": ("ema.start=0.99",),
}


def query_subset(split_dir: Path, out_dir: Path, queries: int) -> str:
    """Writes the header and first `queries` rows of test.csv into out_dir; returns the file name."""
    lines = (split_dir / "test.csv").read_text().splitlines()
    if len(lines) < 2:
        raise ValueError(f"{split_dir / 'test.csv'} has no rows.")
    name = f"test_first{queries}.csv"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / name).write_text("\n".join(lines[: queries + 1]) + "\n")
    return name


def trial_config(trial: str, *, data_root: str, split_dir: str, query_csv: Path, steps: int):
    """configs/eurosat.py (Ti/8) with BASE, the trial's changes and the query subset applied."""
    config = load_config("eurosat", "model=Ti/8")
    overrides = [
        *BASE,
        *TRIALS[trial],
        f"data.root={data_root}",
        f"data.split_dir={split_dir}",
        f"total_steps={1 if trial == 'random_init' else steps}",
        f"checkpoint.every_steps={steps}",
    ]
    config = config_lib.apply_overrides(config, overrides)
    # The query subset lives in its own folder; split paths that are absolute are used as they are.
    config.data.query_split = str(query_csv.absolute())
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_root", required=True)
    parser.add_argument("--split_dir", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--queries", type=int, default=1024)
    parser.add_argument("--trials", nargs="+", default=list(TRIALS), choices=list(TRIALS))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {"trials": {}}
    query_csv = args.out / query_subset(args.split_dir, args.out, args.queries)
    for trial in args.trials:
        if trial in results["trials"]:
            continue
        config = trial_config(
            trial,
            data_root=args.data_root,
            split_dir=str(args.split_dir),
            query_csv=query_csv,
            steps=args.steps,
        )
        start = time.perf_counter()
        metrics = trainer.train_and_evaluate(config, args.out / trial)
        results["trials"][trial] = {
            "changes": list(TRIALS[trial]),
            "seconds": time.perf_counter() - start,
            **{key: float(value) for key, value in metrics["rejepa_target"].items()},
        }
        results_path.write_text(json.dumps(results, indent=2))
    print("| trial | P@20 | mAP@20 | seconds |\n|---|---:|---:|---:|")
    for trial, row in results["trials"].items():
        print(f"| {trial} | {row['p@20']:.3f} | {row['map@20/retrieved']:.3f} | {row['seconds']:.0f} |")


if __name__ == "__main__":
    main()
