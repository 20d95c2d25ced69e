"""Pareto studies with and without the ``dominated`` pruner: hypervolume against cumulative training epochs.

For each problem and seed, two pareto studies with the same trial budget (TPE, the same seed, the same space) run
through a real worker on SQLite, one with pruner ``none`` and one with ``dominated``. Pruned trials count toward the
budget, so the pruned study trains fewer epochs. The question: does ``dominated`` reach the same hypervolume with
clearly fewer epochs?

    python bench/pareto_pruning.py [--problems multi-digits gradnorm-toy] [--seeds 0 1 2] [--trials 30] [--jobs 2]

Hypervolume comes from Optuna's public ``optuna.visualization.plot_hypervolume_history`` (the hypervolume after
each complete trial). Its reference point is the same for every run of a problem: per task, the value 90 % of the
complete trials of all runs of that problem beat (both pruners, all seeds), so nearly every trial counts and no
diverged outlier sizes the box. Epochs are counted from ``epoch_metrics`` (every epoch a trial
trained, pruned trials included), in trial order: one worker runs the trials one after another.

Prints tables and writes bench/out/pareto_<problem>.json; the studies stay in bench/out/pareto/*.db.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "out"
DBS = OUT / "pareto"
PROBLEMS: dict[str, dict[str, Any]] = {"multi-digits": {}, "gradnorm-toy": {"tasks": 3}}
# Loss-weighting strategies only: the gradient aggregators' per-step solvers would dominate the run time.
SPACE = {"strategy": ["equal", "static", "uncertainty", "gradnorm", "dwa"]}
PRUNERS = ("none", "dominated")


def url_of(problem: str, pruner: str, seed: int) -> str:
    return f"sqlite:///{DBS / f'{problem}-{pruner}-{seed}.db'}"


def run_study(problem: str, pruner: str, seed: int, trials: int) -> dict[str, Any]:
    """One pareto study through a worker; returns how long it took."""
    import optuna
    import torch

    from tuner.study import StudySpec, Worker, WorkerSettings, create_study

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore")
    path = DBS / f"{problem}-{pruner}-{seed}.db"
    for leftover in DBS.glob(f"{path.name}*"):  # the database and its schema lock
        leftover.unlink()
    url = url_of(problem, pruner, seed)
    spec = StudySpec(
        name="bench",
        problem=problem,
        problem_options=PROBLEMS[problem],
        space=SPACE,
        objective="pareto",
        sampler="tpe",
        pruner=pruner,
        n_trials=trials,
        seed=seed,
        confirm_seeds=0,  # no confirmation runs: this measures the search
    )
    start = time.perf_counter()
    create_study(url, spec, source="cli")
    Worker(WorkerSettings(url=url, study_name="bench", exit_when_idle=True, max_trials=trials, device="cpu")).run()
    return {"problem": problem, "pruner": pruner, "seed": seed, "seconds": time.perf_counter() - start}


def trial_epochs(url: str) -> dict[int, int]:
    """Epochs each trial trained, by trial number, from mtl-tune's ``epoch_metrics``."""
    from sqlalchemy import distinct, func, select

    import storage

    with storage.session_scope(url) as session:
        job = storage.get_job(session, "bench")
        rows = session.execute(
            select(storage.EpochMetric.trial_number, func.count(distinct(storage.EpochMetric.epoch)))
            .where(storage.EpochMetric.job_id == job.id)
            .group_by(storage.EpochMetric.trial_number)
        ).all()
    return {int(n): int(e) for n, e in rows}


def curve(url: str, reference: list[float]) -> dict[str, Any]:
    """(cumulative epochs, hypervolume) after each trial, in trial order, with the pruned count."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name="bench", storage=url)
    with warnings.catch_warnings():  # the plot is marked experimental; the warning is noise here
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        figure = optuna.visualization.plot_hypervolume_history(study, reference)
    after = dict(zip(figure.data[0].x, figure.data[0].y, strict=True))  # complete trials only
    epochs = trial_epochs(url)
    points, total, hv = [], 0, 0.0
    trials = study.get_trials(deepcopy=False)
    for t in sorted(trials, key=lambda t: t.number):
        total += epochs.get(t.number, 0)
        hv = float(after.get(t.number, hv))
        points.append((total, hv))
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    return {"curve": points, "epochs": total, "hypervolume": hv, "pruned": pruned, "trials": len(trials)}


def hv_at(points: list[list[float]] | list[tuple[int, float]], epochs: int) -> float:
    """The hypervolume reached within ``epochs`` cumulative epochs."""
    return max((hv for e, hv in points if e <= epochs), default=0.0)


def reference_point(problem: str, seeds: list[int]) -> list[float]:
    """Per task, the value 90 % of the complete trials of every run of ``problem`` beat (both pruners, all seeds):
    a box that holds nearly every trial, and no diverged outlier sets its size."""
    import optuna
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    values: list[list[float]] = []
    directions: list[StudyDirection] = []
    for pruner in PRUNERS:
        for seed in seeds:
            study = optuna.load_study(study_name="bench", storage=url_of(problem, pruner, seed))
            directions = study.directions
            values += [list(t.values) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    deciles = [statistics.quantiles(column, n=10) for column in zip(*values, strict=True)]
    return [q[-1] if d == StudyDirection.MINIMIZE else q[0] for q, d in zip(deciles, directions, strict=True)]


def epochs_to_reach(points: list[Any], hypervolume: float) -> int | None:
    return next((int(e) for e, hv in points if hv >= hypervolume * (1 - 1e-9)), None)


def measure(problem: str, seeds: list[int], runs: list[dict[str, Any]]) -> dict[str, Any]:
    reference = reference_point(problem, seeds)
    rows = []
    for seed in seeds:
        row: dict[str, Any] = {"seed": seed}
        for pruner in PRUNERS:
            row[pruner] = curve(url_of(problem, pruner, seed), reference)
            row[pruner]["seconds"] = next(
                (r["seconds"] for r in runs if (r["problem"], r["pruner"], r["seed"]) == (problem, pruner, seed)),
                None,
            )
        row["none_hv_at_dominated_epochs"] = hv_at(row["none"]["curve"], row["dominated"]["epochs"])
        row["none_epochs_to_dominated_hv"] = epochs_to_reach(row["none"]["curve"], row["dominated"]["hypervolume"])
        row["dominated_epochs_to_none_hv"] = epochs_to_reach(row["dominated"]["curve"], row["none"]["hypervolume"])
        rows.append(row)
    return {"reference_point": reference, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2, help="studies run at once, one process and thread each")
    parser.add_argument("--report-only", action="store_true", help="Only print the saved results.")
    parser.add_argument("--measure-only", action="store_true", help="Measure the saved studies again, run none.")
    args = parser.parse_args()
    if args.report_only:
        report()
        return
    if args.measure_only:
        runs_file = OUT / "pareto_runs.json"
        save(args, json.loads(runs_file.read_text()) if runs_file.exists() else [])
        return
    DBS.mkdir(parents=True, exist_ok=True)
    work = [(p, pruner, s) for p in args.problems for s in args.seeds for pruner in PRUNERS]
    runs: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_study, p, pruner, s, args.trials) for p, pruner, s in work]
        for future in futures:
            run = future.result()
            runs.append(run)
            print(f"{run['problem']} {run['pruner']} seed {run['seed']}: {run['seconds']:.0f} s", flush=True)
    (OUT / "pareto_runs.json").write_text(json.dumps(runs, indent=1))
    save(args, runs)


def save(args: argparse.Namespace, runs: list[dict[str, Any]]) -> None:
    for problem in args.problems:
        result = measure(problem, args.seeds, runs) | {"trials": args.trials, "space": SPACE}
        (OUT / f"pareto_{problem}.json").write_text(json.dumps(result, indent=1))
    report()


def report() -> None:
    results = {
        p.stem.removeprefix("pareto_"): json.loads(p.read_text())
        for p in sorted(OUT.glob("pareto_*.json"))
        if p.stem != "pareto_runs"
    }
    print(
        "\n| problem | seed | none: HV | none: epochs | dominated: HV | dominated: epochs | pruned trials "
        "| none: HV at dominated's epochs | none: epochs to dominated's HV | dominated: epochs to none's HV |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, res in results.items():
        rows = res["rows"]
        for r in rows:
            n, d = r["none"], r["dominated"]
            print(
                f"| {name} | {r['seed']} | {n['hypervolume']:.4g} | {n['epochs']} | {d['hypervolume']:.4g} "
                f"| {d['epochs']} | {d['pruned']}/{d['trials']} | {r['none_hv_at_dominated_epochs']:.4g} "
                f"| {_reached(r['none_epochs_to_dominated_hv'])} | {_reached(r['dominated_epochs_to_none_hv'])} |"
            )

        def mean(f: Any, rows: list[dict[str, Any]] = rows) -> float:
            return statistics.fmean(f(r) for r in rows)

        print(
            f"| {name} | mean | {mean(lambda r: r['none']['hypervolume']):.4g} "
            f"| {mean(lambda r: r['none']['epochs']):.0f} | {mean(lambda r: r['dominated']['hypervolume']):.4g} "
            f"| {mean(lambda r: r['dominated']['epochs']):.0f} | {mean(lambda r: r['dominated']['pruned']):.1f} "
            f"| {mean(lambda r: r['none_hv_at_dominated_epochs']):.4g} | | |"
        )
    for name, res in results.items():
        ref = ", ".join(f"{v:.4g}" for v in res["reference_point"])
        print(f"\n{name}: reference point ({ref}), {res['trials']} trials per study, space {res['space']}")


def _reached(epochs: int | None) -> str:
    return "not reached" if epochs is None else str(epochs)


if __name__ == "__main__":
    main()
