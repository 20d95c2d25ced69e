"""HPO efficiency: best objective against cumulative training epochs, TPE + Hyperband vs random search.

For each problem and seed, random search without pruning runs 60 trials; TPE + Hyperband runs until it matches
random search's 60-trial best or has used as many epochs as random search did.
The question: how many training epochs does TPE + Hyperband need
to reach what random search reaches with all of its epochs? Target: <= 40 %.

    python bench/hpo_efficiency.py [--problems gradnorm-toy multi-digits] [--seeds 0 1 2] [--trials 60]

Prints tables, writes bench/out/hpo_<problem>.json and docs/hpo_efficiency.png. Trials run in-process
with Optuna's in-memory storage: this measures the search, not the bookkeeping.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch

from tuner.problems import Problem, create_problem
from tuner.study import baseline_config, default_space, make_pruner, make_sampler, suggest_config, task_table
from tuner.train import EpochReport, train

OUT = Path(__file__).parent / "out"
PROBLEMS = {"gradnorm-toy": {"tasks": 10}, "multi-digits": {}}


@dataclass
class Run:
    method: str
    seed: int
    curve: list[tuple[int, float]] = field(default_factory=list)  # (cumulative epochs, best so far)
    best_tasks: dict[str, Any] = field(default_factory=dict)
    epochs: int = 0
    seconds: float = 0.0

    @property
    def best(self) -> float:
        return self.curve[-1][1] if self.curve else math.inf

    def epochs_to_reach(self, value: float) -> int | None:
        return next((e for e, b in self.curve if b <= value), None)


def run_search(
    problem: Problem, method: str, seed: int, n_trials: int, stop_at: float | None = None, max_epochs: int | None = None
) -> Run:
    epochs = problem.defaults.epochs
    space = default_space(problem)
    if method == "random":
        sampler, pruner = make_sampler("random", seed=seed, objective="scalar"), optuna.pruners.NopPruner()
    else:
        sampler = make_sampler("tpe", seed=seed, objective="scalar")
        pruner = make_pruner("hyperband", epochs=epochs, objective="scalar")
    study = optuna.create_study(sampler=sampler, pruner=pruner)
    run, best = Run(method, seed), math.inf
    start = time.perf_counter()

    def objective(trial: optuna.Trial) -> float:
        nonlocal best
        config = suggest_config(trial, space, problem, epochs=epochs, seed=seed)
        seen: list[EpochReport] = []

        def on_epoch(report: EpochReport) -> None:
            seen.append(report)
            trial.report(report.objective, report.epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        try:
            result = train(problem, config, device="cpu", on_epoch_end=on_epoch)
        finally:
            run.epochs += len(seen)
        if result.objective < best:
            best, run.best_tasks = result.objective, task_table(result.final)
        run.curve.append((run.epochs, best))
        if (stop_at is not None and best <= stop_at) or (max_epochs is not None and run.epochs >= max_epochs):
            trial.study.stop()
        return result.objective

    def record_pruned(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state != optuna.trial.TrialState.COMPLETE:
            run.curve.append((run.epochs, best))
            if max_epochs is not None and run.epochs >= max_epochs:
                study.stop()

    study.enqueue_trial({}, user_attrs={"baseline": True})
    study.optimize(objective, n_trials=n_trials, callbacks=[record_pruned], catch=(Exception,))
    run.seconds = time.perf_counter() - start
    return run


def baseline(problem: Problem, seed: int) -> dict[str, Any]:
    result = train(problem, baseline_config(problem, epochs=problem.defaults.epochs, seed=seed), device="cpu")
    return {"objective": result.objective, "tasks": task_table(result.final)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--report-only", action="store_true", help="Only print and plot the saved results.")
    args = parser.parse_args()
    if args.report_only:
        report()
        return
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    OUT.mkdir(exist_ok=True)
    results: dict[str, Any] = {}
    for name in args.problems:
        problem = create_problem(name, PROBLEMS.get(name, {}))
        rows = []
        for seed in args.seeds:
            rand = run_search(problem, "random", seed, args.trials)
            # TPE + Hyperband may run as many trials as it likes within random search's epoch budget.
            tpe = run_search(
                problem, "tpe+hyperband", seed, 100 * args.trials, stop_at=rand.best, max_epochs=rand.epochs
            )
            reach = tpe.epochs_to_reach(rand.best)
            rows.append(
                {
                    "seed": seed,
                    "random_best": rand.best,
                    "random_epochs": rand.epochs,
                    "tpe_best": tpe.best,
                    "tpe_epochs_to_match": reach,
                    "ratio": reach / rand.epochs if reach else None,
                    "random_curve": rand.curve,
                    "tpe_curve": tpe.curve,
                    "tpe_tasks": tpe.best_tasks,
                    "random_tasks": rand.best_tasks,
                    "seconds": rand.seconds + tpe.seconds,
                }
            )
            print(
                f"{name} seed {seed}: random best {rand.best:.4f} in {rand.epochs} epochs; TPE+Hyperband "
                f"{'reached it after ' + str(reach) + ' epochs' if reach else 'did not reach it'} "
                f"(best {tpe.best:.4f})",
                flush=True,
            )
        results[name] = {"rows": rows, "baseline": baseline(problem, args.seeds[0])}
        (OUT / f"hpo_{name}.json").write_text(json.dumps(results[name], indent=1))
    report()


def report() -> None:
    """Tables and the plot from every problem's saved results (problems may run in separate processes)."""
    results = {p.stem.removeprefix("hpo_"): json.loads(p.read_text()) for p in sorted(OUT.glob("hpo_*.json"))}
    print_tables(results)
    plot(results)


def print_tables(results: dict[str, Any]) -> None:
    print("\n| problem | seed | random: best of 60 trials | random: epochs | TPE+Hyperband: epochs to match | ratio |")
    print("|---|---|---|---|---|---|")
    for name, res in results.items():
        for r in res["rows"]:
            ratio = f"{r['ratio']:.0%}" if r["ratio"] is not None else "not reached"
            reach = r["tpe_epochs_to_match"] if r["tpe_epochs_to_match"] is not None else "-"
            print(f"| {name} | {r['seed']} | {r['random_best']:.4f} | {r['random_epochs']} | {reach} | {ratio} |")
    print("\n| problem | task | metric: baseline | metric: tuned best (TPE+Hyperband, seed 0) |")
    print("|---|---|---|---|")
    for name, res in results.items():
        tuned = res["rows"][0]["tpe_tasks"] or res["rows"][0]["random_tasks"]
        for task, numbers in res["baseline"]["tasks"].items():
            after = tuned.get(task, {}).get("metric", float("nan"))
            print(f"| {name} | {task} | {numbers['metric']:.4g} | {after:.4g} |")


def plot(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, (name, res) in zip(axes[0], results.items(), strict=True):
        for r in res["rows"]:
            for key, color in (("random_curve", "tab:gray"), ("tpe_curve", "tab:blue")):
                xs, ys = zip(*r[key], strict=True) if r[key] else ((), ())
                name_of = "random, no pruning" if key == "random_curve" else "TPE + Hyperband"
                label = name_of if r["seed"] == 0 else None
                ax.step(xs, ys, where="post", color=color, alpha=0.8, label=label)
        ax.set(title=name, xlabel="cumulative training epochs", ylabel="best objective (lower is better)")
        ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(Path(__file__).parent.parent / "docs" / "hpo_efficiency.png", dpi=110)


if __name__ == "__main__":
    main()
