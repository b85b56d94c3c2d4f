"""Retrieval quality per unit of pretraining compute on EuroSAT: one pretraining run per call.

    python -m benchmarks.quality_per_compute --protocol tuning --name ijepa_lr5e-4 \
        --config configs/eurosat.py:recipe=ijepa,model=Ti/8 --budget_pflop 0.1 \
        --set optimizer.lr=5e-4 --data_root ../shared/data/eurosat_rgb \
        --split_dir ../shared/data/eurosat_rgb_meta --out runs/quality
    python -m benchmarks.quality_per_compute --table --out runs/quality --plot quality.png

Protocols (the data README's):
- `tuning`: pretrain on train.csv, archive = train.csv, queries = validation.csv. Every choice of
  recipe, hyper-parameter or descriptor is made here.
- `test`: pretrain on train + validation (the archive, 24,300 images), queries = test.csv (2,700).
  For the final table only: a finished test run is never run again.

The run gets a budget of training FLOPs, counted with XLA's cost analysis of its own compiled train
step (1 PFLOP = 1e15): a cheaper step takes more steps. The warm-up is a fifteenth of the steps.
Retrieval is the trainer's end-of-run evaluation (exact cosine search, relevant = same class):
P@K and mAP@K (normalised by the relevant items retrieved in the top K) for K = 5, 10, 20, 100,
effective rank of the archive descriptors, and for the EMA target the share of its initial weights
it still carries. `--floors` also evaluates the colour-histogram and random-init descriptors.
`--table` also prints, per protocol, the compute a reference method (`--compare REJEPA MAE`) needs
to reach each run's P@20, read off its measured curve in log-PFLOP: the "less compute than MAE" check.
It also prints the compute each method's curve needs to reach `--goal_p20` (0.80, the stretch goal):
read off the measured curve, or extrapolated log-linearly from its last two points (optimistic).

Results accumulate in `<out>/results.json` under `<protocol>/<name>`; workdirs are
`<out>/<protocol>/<name>`, and re-running an unfinished run resumes it from its checkpoint. Each
invocation appends its commit to the workdir's `invocations.jsonl`, and its seconds when it ends; the
results name every commit that trained the run, and the minutes add up over its invocations.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine_info import versions
from rejepa_jax import config_lib, cost_report, optim, trainer

KS = (5, 10, 20, 100)
PROTOCOLS = {
    "tuning": {"train": "train.csv", "archive": "train.csv", "query": "validation.csv"},
    # The demo's size (80 archive and 20 query images per class) drawn from train and validation,
    # for choices that concern the demo: its own queries come from the test split.
    "demo_tuning": {"train": "demo_train.csv", "archive": "demo_train.csv", "query": "demo_validation.csv"},
    "test": {
        "train": "train.csv,validation.csv",
        "archive": "train.csv,validation.csv",
        "query": "test.csv",
    },
}
FLOORS = ("color_histogram", "random_init")
TABLE_METRICS = (*(f"p@{k}" for k in KS), "map@20/retrieved", "effective_rank")


DEMO_PER_CLASS = {"demo_train.csv": ("train.csv", 80), "demo_validation.csv": ("validation.csv", 20)}


def write_demo_splits(split_dir: Path, out_dir: Path, seed: int = 0) -> Path:
    """Writes the demo-sized split files (a fixed per-class draw from train / validation) into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, (source, per_class) in DEMO_PER_CLASS.items():
        with (split_dir / source).open(newline="") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames, sorted(reader, key=lambda row: row["Filename"])
        picked = []
        for label in sorted({row["ClassName"] for row in rows}):
            members = [row for row in rows if row["ClassName"] == label]
            picked += [members[i] for i in sorted(rng.choice(len(members), per_class, replace=False))]
        with (out_dir / name).open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(picked)
    return out_dir


def run_config(args: argparse.Namespace):
    """The run's config: its config file, the protocol's splits, the shared settings, `--set`."""
    config = config_lib.load_config_file(args.config)
    splits = PROTOCOLS[args.protocol]
    split_dir = Path(args.split_dir).resolve()
    if args.protocol == "demo_tuning":
        split_dir = write_demo_splits(split_dir, Path(args.out).resolve() / "demo_splits")
    overrides = [
        f"data.root={Path(args.data_root).resolve()}",
        f"data.split_dir={split_dir}",
        f"data.train_split={splits['train']}",
        f"data.archive_split={splits['archive']}",
        f"data.query_split={splits['query']}",
        f"data.num_workers={args.num_workers}",
        f"batch_size={args.batch_size}",
        "mesh.data=1",
        "eval.every_steps=0",
        f"eval.ks={KS}",
        f"eval.baselines={FLOORS if args.floors else ()}",
        f"checkpoint.every_steps={args.checkpoint_every}",
        *args.set,
    ]
    return config_lib.apply_overrides(config, overrides)


def steps_for_budget(config, budget_flops: float) -> tuple[int, float]:
    """Steps that spend `budget_flops` of this config's compiled step, and its FLOPs per step."""
    flops_per_step = cost_report.compile_cost(config).flops_per_step
    return max(1, math.floor(budget_flops / flops_per_step)), flops_per_step


def budget_config(config, budget_flops: float):
    """`config` with total steps (and warm-up) set to spend the budget; also returns FLOPs per step."""
    steps, flops_per_step = steps_for_budget(config, budget_flops)
    overrides = [f"total_steps={steps}", f"optimizer.warmup_steps={max(1, steps // 15)}"]
    return config_lib.apply_overrides(config, overrides), flops_per_step


def summarise(config, metrics: dict[str, dict[str, float]], flops_per_step: float) -> dict[str, Any]:
    """What the results file keeps of one finished run."""
    keep = {"effective_rank", "std_mean"} | {f"p@{k}" for k in KS} | {f"map@{k}/retrieved" for k in KS}
    descriptors = {name: {k: v for k, v in report.items() if k in keep} for name, report in metrics.items()}
    summary = {
        "method": config.method,
        "steps": config.total_steps,
        "batch_size": config.batch_size,
        "flops_per_step": flops_per_step,
        "flops_per_image": flops_per_step / config.batch_size,
        "pflop": flops_per_step * config.total_steps / 1e15,
        "descriptors": descriptors,
    }
    if config.method == "rejepa":
        summary["ema_initial_weight"] = optim.ema_initial_weight(
            config.ema, config.total_steps, config.total_steps
        )
    return summary


INVOCATIONS_FILE = "invocations.jsonl"


def record_invocation(workdir: Path) -> list[str | None]:
    """Appends this invocation's commit to the run's log; returns the commits of all its invocations.

    A long run resumed across days may span commits: the results then name every one of them
    (and a warning says so), not only the commit of the invocation that happens to finish it.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    _append_invocation_entry(workdir, commit=versions()["rejepa_jax_commit"], started=_now())
    commits = [entry["commit"] for entry in _invocation_entries(workdir) if "commit" in entry]
    commits = list(dict.fromkeys(commits))
    if len(commits) > 1:
        print(f"Warning: {workdir} was trained by more than one commit: {', '.join(map(str, commits))}.")
    return commits


def record_invocation_end(workdir: Path, seconds: float) -> None:
    """Appends how long this invocation ran, so a resumed run's minutes add up over its invocations."""
    _append_invocation_entry(workdir, ended=_now(), seconds=seconds)


def invocation_seconds(workdir: Path) -> tuple[float, bool]:
    """Seconds of every invocation that recorded its end, and whether all did.

    An invocation killed outright (not stopped by SIGTERM) records no end: the sum is then a lower bound.
    """
    entries = _invocation_entries(workdir)
    ends = [entry["seconds"] for entry in entries if "seconds" in entry]
    starts = sum("commit" in entry for entry in entries)
    return float(sum(ends)), len(ends) == starts


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _append_invocation_entry(workdir: Path, **entry: Any) -> None:
    with (workdir / INVOCATIONS_FILE).open("a") as f:
        f.write(json.dumps(entry) + "\n")


def _invocation_entries(workdir: Path) -> list[dict[str, Any]]:
    lines = (workdir / INVOCATIONS_FILE).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def run(args: argparse.Namespace) -> None:
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {"runs": {}}
    key = f"{args.protocol}/{args.name}"
    if results["runs"].get(key, {}).get("done"):
        print(f"{key} is finished; its results are kept (test queries are used once per run).")
        return
    config = run_config(args)
    if args.steps:  # A fixed length (the demo's) instead of a FLOP budget.
        flops_per_step = cost_report.compile_cost(config).flops_per_step
        config = config_lib.apply_overrides(config, [f"total_steps={args.steps}"])
    else:
        config, flops_per_step = budget_config(config, args.budget_pflop * 1e15)
    workdir = args.out / args.protocol / args.name
    commits = record_invocation(workdir)
    start = time.perf_counter()
    try:
        metrics = trainer.train_and_evaluate(config, workdir)
    finally:
        record_invocation_end(workdir, time.perf_counter() - start)
    if not metrics:  # Stopped by SIGTERM after a checkpoint: run the same command to resume.
        return
    seconds, seconds_complete = invocation_seconds(workdir)
    results = json.loads(results_path.read_text()) if results_path.exists() else {"runs": {}}
    results["runs"][key] = {
        **summarise(config, metrics, flops_per_step),
        "budget_pflop": args.budget_pflop,
        "label": args.label or args.name,
        "descriptor": args.descriptor
        or f"{config.method}_{'target' if config.method == 'rejepa' else 'context'}",
        "seconds": seconds,  # Summed over the run's invocations;
        "seconds_complete": seconds_complete,  # False when one was killed outright (a lower bound).
        "command": shlex.join(["python", "-m", "benchmarks.quality_per_compute", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d"),
        "commit": commits[-1],  # Of the invocation that finishes the run.
        "commits": commits,  # Of every invocation that trained it, first to last, without repeats.
        "done": True,
    }
    results_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = results_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(results_path)
    print(format_table(results, args.protocol))


def format_table(results: dict[str, Any], protocol: str) -> str:
    """A markdown table of every finished run of one protocol, one row per descriptor."""
    header = ["run", "PFLOP", "steps", "GFLOP/img/step", "min", "descriptor"]
    header += [m.replace("/retrieved", "") for m in TABLE_METRICS] + ["EMA init share"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, run_result in results["runs"].items():
        run_protocol, _, name = key.partition("/")
        if run_protocol != protocol:
            continue
        for descriptor, metrics in run_result["descriptors"].items():
            is_floor = descriptor.partition("+")[0] in FLOORS  # Also their standardised rows.
            cells = [
                descriptor if is_floor else name,
                "–" if is_floor else f"{run_result['pflop']:.3f}",
                "–" if is_floor else str(run_result["steps"]),
                "–" if is_floor else f"{run_result['flops_per_image'] / 1e9:.2f}",
                "–" if is_floor else format_minutes(run_result),
                "–" if is_floor else descriptor,
            ]
            cells += [f"{metrics.get(m, float('nan')):.3f}" for m in TABLE_METRICS[:-1]]
            cells.append(f"{metrics.get('effective_rank', float('nan')):.1f}")
            share = run_result.get("ema_initial_weight")
            cells.append(f"{share:.3f}" if share is not None and descriptor.endswith("target") else "–")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_minutes(run_result: dict[str, Any]) -> str:
    """Training minutes over all invocations; "≥" where one was killed without recording its time."""
    minutes = f"{run_result['seconds'] / 60:.0f}"
    return minutes if run_result.get("seconds_complete", True) else f"≥{minutes}"


def reported_descriptor(run_result: dict[str, Any]) -> str:
    """The descriptor a run reports: `--descriptor`, else the method's convention (EMA target for REJEPA)."""
    if run_result.get("descriptor"):
        return run_result["descriptor"]
    return "rejepa_target" if run_result["method"] == "rejepa" else f"{run_result['method']}_context"


def reported_runs(results: dict[str, Any], protocol: str) -> dict[str, dict[float, dict[str, Any]]]:
    """Method label -> budget (PFLOP to 0.1) -> its run; a later-finished rerun replaces an earlier one."""
    by_label: dict[str, dict[float, dict[str, Any]]] = {}
    for key, run_result in results["runs"].items():
        if key.startswith(f"{protocol}/"):
            by_label.setdefault(run_result["label"], {})[round(run_result["pflop"], 1)] = run_result
    return by_label


def reported_metrics(run_result: dict[str, Any]) -> dict[str, float]:
    """The figures of the descriptor a run reports."""
    return run_result["descriptors"][reported_descriptor(run_result)]


def curve_of(runs: dict[float, dict[str, Any]]) -> list[tuple[float, float]]:
    """(PFLOP, P@20 of the reported descriptor) of one label's reported runs, by compute."""
    return sorted((run_result["pflop"], reported_metrics(run_result)["p@20"]) for run_result in runs.values())


def p20_curve(results: dict[str, Any], protocol: str, label: str) -> list[tuple[float, float]]:
    """(PFLOP, P@20 of the reported descriptor) of one method label's runs, by compute."""
    return curve_of(reported_runs(results, protocol).get(label, {}))


def floor_metrics(results: dict[str, Any], protocol: str) -> dict[str, dict[str, float]]:
    """The floors' figures, from whichever runs of the protocol evaluated them (--floors)."""
    return {
        name: run_result["descriptors"][name]
        for key, run_result in results["runs"].items()
        if key.startswith(f"{protocol}/")
        for name in FLOORS
        if name in run_result["descriptors"]
    }


def _p20_map20(metrics: dict[str, float]) -> str:
    return f"{metrics['p@20']:.3f} / {metrics['map@20/retrieved']:.3f}"


def format_budget_table(results: dict[str, Any], protocol: str) -> str:
    """One row per method label, one column per budget: P@20 / mAP@20 of the reported descriptor.

    The README's first table; the floors (no training) close it.
    """
    by_label = reported_runs(results, protocol)
    floors = {name: _p20_map20(metrics) for name, metrics in floor_metrics(results, protocol).items()}
    budgets = sorted({budget for runs in by_label.values() for budget in runs} | set(PLOT_BUDGETS_PFLOP))
    lines = [
        "| method | " + " | ".join(f"{budget:g} PFLOP" for budget in budgets) + " |",
        "|---|" + "---:|" * len(budgets),
    ]
    for label, runs in sorted(by_label.items()):
        row = [
            _p20_map20(reported_metrics(runs[budget])) if budget in runs else "not run" for budget in budgets
        ]
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    for name, cell in sorted(floors.items()):
        lines.append(
            f"| {name.replace('_', ' ')} (no training) | " + " | ".join([cell] * len(budgets)) + " |"
        )
    return "\n".join(lines)


def compute_to_reach(curve: list[tuple[float, float]], target: float) -> tuple[str, float]:
    """The compute at which `curve` first reaches P@20 `target`, linear in log-PFLOP between points.

    Returns a relation and a PFLOP: ("=", x) where the curve crosses the target between two measured
    budgets, ("<=", smallest budget) where its first point is already at or above it, and
    (">", largest budget) where no measured point reaches it (only a lower bound is known).
    """
    if not curve:
        raise ValueError("no finished runs to compare against")
    if curve[0][1] >= target:
        return "<=", curve[0][0]
    for (x0, y0), (x1, y1) in itertools.pairwise(curve):
        if y1 >= target:
            fraction = (target - y0) / (y1 - y0)
            return "=", math.exp(math.log(x0) + fraction * (math.log(x1) - math.log(x0)))
    return ">", curve[-1][0]


def format_compute_to_match(results: dict[str, Any], protocol: str, label: str, reference: str) -> str:
    """For each run of `label`: the reference method's compute to reach the same P@20, and the saving.

    This is how "needs 40-60 % less compute than MAE" is checked: saving = 1 - PFLOP / reference PFLOP,
    exact where the reference's curve crosses between measured budgets, a bound where it does not.
    """
    reference_curve = p20_curve(results, protocol, reference)
    lines = [
        f"| {label} PFLOP | {label} P@20 | {reference} PFLOP to reach it | compute saved |",
        "|---:|---:|---:|---:|",
    ]
    for pflop, p20 in p20_curve(results, protocol, label):
        relation, reference_pflop = compute_to_reach(reference_curve, p20)
        prefix = "" if relation == "=" else f"{relation} "  # A bound, not a reading of the curve.
        saving = 1.0 - pflop / reference_pflop
        saved = f"{prefix}{round(saving, 2) + 0.0:.0%}"
        if relation == ">" and saving < -0.01:  # Only "more than a smaller run": says nothing yet.
            saved = "unknown"
        reached = f"{prefix}{reference_pflop:.3f}"
        lines.append(f"| {pflop:.3f} | {p20:.3f} | {reached} | {saved} |")
    return "\n".join(lines)


def extrapolated_compute_to_reach(
    curve: list[tuple[float, float]], target: float
) -> tuple[str, float | None]:
    """Where a method's curve reaches P@20 `target`: measured if it does, else extrapolated.

    Returns ("measured", x) when a measured point reaches the target (x read as in
    `compute_to_reach`); ("extrapolated", x) from the line through the last two points in
    log-PFLOP when none does and that line rises; ("unknown", None) otherwise. Gains per decade of
    compute usually shrink, so an extrapolated figure is an optimistic estimate, not a promise.
    """
    if curve and max(p20 for _, p20 in curve) >= target:
        return "measured", compute_to_reach(curve, target)[1]
    if len(curve) < 2 or curve[-1][1] <= curve[-2][1]:
        return "unknown", None
    (x0, y0), (x1, y1) = curve[-2:]
    decades_per_point = (math.log10(x1) - math.log10(x0)) / (y1 - y0)
    return "extrapolated", 10 ** (math.log10(x1) + (target - y1) * decades_per_point)


def format_goal_table(results: dict[str, Any], protocol: str, target: float) -> str:
    """Per method label: its best measured P@20 and the compute its curve says reaching `target` takes."""
    lines = [
        f"| method | best P@20 (at PFLOP) | PFLOP to reach P@20 {target:.2f} | read |",
        "|---|---:|---:|---|",
    ]
    for label, runs in sorted(reported_runs(results, protocol).items()):
        curve = curve_of(runs)
        best_pflop, best_p20 = max(curve, key=lambda point: point[1])
        how, pflop = extrapolated_compute_to_reach(curve, target)
        reach = "–" if pflop is None else f"{pflop:.2f}"
        read = {
            "measured": "measured curve",
            "extrapolated": "extrapolated, log-linear from the last two points",
            "unknown": "unknown (fewer than two points, or not rising)",
        }[how]
        lines.append(f"| {label} | {best_p20:.3f} ({best_pflop:.3f}) | {reach} | {read} |")
    return "\n".join(lines)


PLOT_BUDGETS_PFLOP = (0.1, 0.3, 1.0)


def plot(results: dict[str, Any], protocol: str, path: Path) -> None:
    """P@20 against training PFLOP, one line per method label, the floors as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    curves = {label: curve_of(runs) for label, runs in reported_runs(results, protocol).items()}
    floors = {name: metrics["p@20"] for name, metrics in floor_metrics(results, protocol).items()}
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for label, points in sorted(curves.items()):
        xs, ys = zip(*sorted(points), strict=True)
        ax.plot(xs, ys, marker="o", label=label)
    for (name, value), style in zip(sorted(floors.items()), ("--", ":"), strict=False):
        ax.axhline(value, color="grey", linestyle=style, label=f"{name.replace('_', ' ')} ({value:.3f})")
    # The budgets stay on the axis (plain tick labels) even while few points are measured.
    spanned = [x for points in curves.values() for x, _ in points] + list(PLOT_BUDGETS_PFLOP)
    ax.set_xscale("log")
    ax.set_xlim(min(spanned) / 1.5, max(spanned) * 1.5)
    ax.set_xticks(PLOT_BUDGETS_PFLOP)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("pretraining compute (PFLOP, XLA count)")
    ax.set_ylabel("P@20")
    ax.set_title(f"EuroSAT retrieval, {protocol} queries, ViT-Ti/8")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--table", action="store_true", help="Only print the tables of finished runs.")
    parser.add_argument("--name", help="Run name, unique within its protocol.")
    parser.add_argument("--label", default="", help="Method label for plots (default: the name).")
    parser.add_argument("--config", help="Config file and arguments, e.g. configs/eurosat.py:model=Ti/8.")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="tuning")
    parser.add_argument("--budget_pflop", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=0, help="Train this many steps instead of a budget.")
    parser.add_argument("--data_root", default="../shared/data/eurosat_rgb")
    parser.add_argument("--split_dir", default="../shared/data/eurosat_rgb_meta")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("--checkpoint_every", type=int, default=250)
    parser.add_argument("--floors", action="store_true", help="Also evaluate the two floors.")
    parser.add_argument("--set", nargs="*", default=[], help="Config overrides, key=value.")
    parser.add_argument("--descriptor", default="", help="The descriptor this run reports (plots).")
    parser.add_argument(
        "--compare",
        nargs=2,
        default=("REJEPA", "MAE"),
        metavar=("LABEL", "REFERENCE"),
        help="With --table: the reference's compute to reach each LABEL run's P@20.",
    )
    parser.add_argument("--plot", type=Path, help="With --table: write the plot of the test runs here.")
    parser.add_argument(
        "--goal_p20",
        type=float,
        default=0.80,
        help="With --table: the compute each method's curve needs to reach this P@20 (the stretch goal).",
    )
    args = parser.parse_args()
    if args.table:
        results = json.loads((args.out / "results.json").read_text())
        for protocol in PROTOCOLS:
            print(f"\n{protocol}:\n{format_table(results, protocol)}")
            print(f"\n{protocol}, P@20 / mAP@20 by budget:\n{format_budget_table(results, protocol)}")
        label, reference = args.compare
        for protocol in PROTOCOLS:
            if p20_curve(results, protocol, label) and p20_curve(results, protocol, reference):
                print(f"\n{protocol}, compute to match:\n")
                print(format_compute_to_match(results, protocol, label, reference))
        if reported_runs(results, "test"):  # The stretch goal is stated on the test queries.
            print(f"\ntest, compute to reach P@20 {args.goal_p20:.2f}:\n")
            print(format_goal_table(results, "test", args.goal_p20))
        if args.plot:
            plot(results, "test", args.plot)
        return
    if not args.name or not args.config:
        parser.error("--name and --config are required to run.")
    run(args)


if __name__ == "__main__":
    main()
