"""Retrieval quality per unit of compute on EuroSAT: REJEPA, REJEPA without VICReg, and MAE.

    python -m benchmarks.quality_per_compute --data_root ../shared/data/eurosat_rgb \
        --split_dir ../shared/data/eurosat_rgb_meta --budget_pflop 0.1 --out runs/quality

Protocol (the data README's): pretrain without labels on train + validation (the archive, 24,300
images), index the archive, query with test (2,700), relevant = same class; exact cosine search.
Every method gets the same compute budget, counted in training FLOPs from XLA's cost analysis of
its own compiled step (`--budget_pflop`, 1 PFLOP = 1e15): a method whose step is cheaper takes more
steps. Each run is trained, exported and evaluated with the same protocol; the colour-histogram and
random-init floors are evaluated once. Writes `<out>/results.json` and prints a markdown table with
P@K and mAP@K (K = 5, 10, 20, 100; mAP normalised by the relevant items retrieved in the top K),
for the target (EMA) and context encoders where a method has both, with wall-clock per run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import time
from pathlib import Path

from rejepa_jax import config_lib, cost_report, trainer
from rejepa_jax.evaluation.index_benchmark import archive_from_workdir, evaluate

REPO = Path(__file__).resolve().parent.parent
KS = [5, 10, 20, 100]
# name -> (config file, overrides applied on top of it). REJEPA runs with a 2-block predictor: on
# 400-step EuroSAT runs it matched the 6-block one's P@20 (0.497 vs 0.496) at half the step time,
# so under a fixed FLOP budget it gets twice the steps (BENCHMARKS.md, "Tuning").
METHODS = {
    "rejepa": ("eurosat", {"model.predictor_depth": 2}),
    "rejepa_no_vicreg": ("eurosat", {"model.predictor_depth": 2, "objective.vicreg": False}),
    "mae": ("eurosat_mae", {}),
}


def load_config(name: str, arg: str):
    spec = importlib.util.spec_from_file_location(f"configs_{name}", REPO / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def method_config(method: str, args: argparse.Namespace):
    """The method's config on the EuroSAT folder, with the shared model and schedule settings."""
    config_name, extra = METHODS[method]
    config = load_config(config_name, f"model={args.model}")
    overrides = [
        f"data.root={args.data_root}",
        f"data.split_dir={args.split_dir}",
        f"batch_size={args.batch_size}",
        f"data.num_workers={args.num_workers}",
        "mesh.data=1",
        "eval.every_steps=0",
        "eval.baselines=()",
        f"checkpoint.every_steps={args.checkpoint_every}",
        *(f"{key}={value}" for key, value in extra.items()),
        *args.set,
    ]
    return config_lib.apply_overrides(config, overrides)


def steps_for_budget(config, budget_flops: float) -> tuple[int, float]:
    """Steps that spend `budget_flops` of this config's compiled step, and its FLOPs per step."""
    flops_per_step = cost_report.compile_cost(config).flops_per_step
    return max(1, math.floor(budget_flops / flops_per_step)), flops_per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_root", required=True)
    parser.add_argument("--split_dir", required=True)
    parser.add_argument("--budget_pflop", type=float, default=0.1)
    parser.add_argument("--model", default="Ti/8")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("--checkpoint_every", type=int, default=500)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--set", nargs="*", default=[], help="Config overrides for every method.")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {"runs": {}}
    results.update(
        date=time.strftime("%Y-%m-%d"),
        machine={"cpu_count": os.cpu_count()},
        budget_flops=args.budget_pflop * 1e15,
        model=args.model,
        batch_size=args.batch_size,
    )

    for method in args.methods:
        if method in results["runs"] and results["runs"][method].get("done"):
            continue  # Resumable: finished methods are kept.
        config = method_config(method, args)
        steps, flops_per_step = steps_for_budget(config, args.budget_pflop * 1e15)
        config = config_lib.apply_overrides(
            config, [f"total_steps={steps}", f"optimizer.warmup_steps={max(1, steps // 15)}"]
        )
        workdir = args.out / method
        start = time.perf_counter()
        trainer.train_and_evaluate(config, workdir)
        train_seconds = time.perf_counter() - start
        encoders = config.eval.encoders
        reports = {}
        for encoder in encoders:
            archive = archive_from_workdir(workdir, encoder=encoder)
            report = evaluate(archive, "query", args.out / f"{method}_{encoder}_report", ks=KS, baselines=())
            reports[encoder] = report["descriptors"][f"{config.method} (exact)"]
        results["runs"][method] = {
            "steps": steps,
            "flops_per_step": flops_per_step,
            "flops_per_image": flops_per_step / config.batch_size,
            "train_seconds": train_seconds,
            "encoders": reports,
            "done": True,
        }
        results_path.write_text(json.dumps(results, indent=2))

    if "floors" not in results:
        archive = archive_from_workdir(args.out / args.methods[0])
        report = evaluate(archive, "query", args.out / "floors_report", ks=KS)
        results["floors"] = {name: report["descriptors"][name] for name in ("color_histogram", "random_init")}
        results_path.write_text(json.dumps(results, indent=2))
    print(format_table(results))


def format_table(results: dict) -> str:
    header = (
        "| descriptor | steps | GFLOP/image/step | train min | "
        + " | ".join([f"P@{k}" for k in KS] + [f"mAP@{k}" for k in KS])
        + " |"
    )
    lines = [header, "|" + "---|" * (4 + 2 * len(KS))]
    for method, run in results["runs"].items():
        for encoder, metrics in run["encoders"].items():
            cells = [f"{metrics[f'p@{k}']:.3f}" for k in KS] + [
                f"{metrics[f'map@{k}/retrieved']:.3f}" for k in KS
            ]
            lines.append(
                f"| {method} ({encoder}) | {run['steps']} | {run['flops_per_image'] / 1e9:.2f} | "
                f"{run['train_seconds'] / 60:.1f} | " + " | ".join(cells) + " |"
            )
    for name, metrics in results.get("floors", {}).items():
        cells = [f"{metrics[f'p@{k}']:.3f}" for k in KS] + [
            f"{metrics[f'map@{k}/retrieved']:.3f}" for k in KS
        ]
        lines.append(f"| {name} | – | – | – | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
