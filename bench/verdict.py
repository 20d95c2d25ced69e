"""Does tuning beat the default on held-out data? The confirmation's verdict on three problems.

For each problem one ``compare`` study (the trial budget shared evenly between the space's strategies, each tuning
its own knobs) runs to its target through a real worker on SQLite; reaching the target queues the confirmation
(launch field ``confirm_seeds``), which the same worker then runs: the baseline (equal weighting, the problem's
default learning rates), the best trial, the best trial of each strategy and the non-dominated tuned ``static``
weightings, each trained again over fresh seeds and judged on the test split, which the search never saw.
``tuner.verdict.study_verdict`` gives the verdict this prints.

    python bench/verdict.py [--problems gradnorm-toy multi-digits penguins] [--trials 76] [--seeds 5]
                            [--epochs N] [--pruner none] [--threads 1]

The study's pruner is the product's default for ``compare`` studies (none) unless ``--pruner`` names another; the
results of a run with another pruner are named ``<problem>-pruner-<name>``. Hyperband compares trials of every
strategy at its rungs, so in a ``compare`` study it stops most trials of the strategies that start slowly
(``--pruner hyperband`` shows it): that is why ``compare`` studies are not pruned unless asked.

Problems:

- ``gradnorm-toy`` with 10 tasks (regressions of very different scales: GradNorm's own toy);
- ``multi-digits`` (left digit, right digit, their sum, from two-digit images);
- ``penguins``: the Palmer penguins table (344 real rows; Gorman, Williams and Fraser 2014) that the
  ``palmerpenguins`` package ships, written to a CSV in a temporary folder and read by the ``csv`` problem; three
  natural targets of different kinds: ``species`` (3 classes, accuracy), ``sex`` (binary, AUC; 11 rows missing, so
  masked) and ``body_mass_g`` (regression, RMSE in grams), from island, bill, flipper and year.

Prints, per problem, the verdict table of the best configuration (per task: baseline mean +- std over the seeds,
best mean +- std, the paired difference with its 95 % t interval, the judgement), the same judgement for the best
of every strategy, the sentence, and which strategies a confirmed tuned static weighting dominates on every task.
Writes bench/out/verdict_<problem>.json (the verdict, the trials per strategy, timings) and bench/out/verdict.md
(the tables in markdown, of every result there, earlier runs' included). The studies stay in
bench/out/verdict/<problem>.db.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "out"
DBS = OUT / "verdict"
# Loss-weighting strategies only: a gradient aggregator's step costs about twice equal's (the run would take longer).
SPACE = {"strategy": ["equal", "static", "uncertainty", "gradnorm", "dwa"]}
PENGUIN_TARGETS = ["species:classification", "sex:binary", "body_mass_g:regression"]
PROBLEMS = ("gradnorm-toy", "multi-digits", "penguins")


def penguins_csv(folder: Path) -> Path:
    """The penguins table the ``palmerpenguins`` package ships, as a CSV file in ``folder`` (no download)."""
    from palmerpenguins import load_penguins

    path = folder / "penguins.csv"
    load_penguins().to_csv(path, index=False)
    return path


def problem_of(name: str, folder: Path) -> tuple[str, dict[str, Any]]:
    """The registered problem and its options for a benchmark problem name."""
    if name == "gradnorm-toy":
        return "gradnorm-toy", {"tasks": 10}
    if name == "multi-digits":
        return "multi-digits", {}
    if name == "penguins":
        return "csv", {"data": str(penguins_csv(folder)), "target": PENGUIN_TARGETS}
    raise SystemExit(f"unknown problem {name!r}; choose from {', '.join(PROBLEMS)}")


def run(
    name: str, trials: int, seeds: int, epochs: int | None, folder: Path, pruner: str | None = None
) -> dict[str, Any]:
    """One compare study to its target and its confirmation, through one in-process worker on SQLite."""
    import optuna

    from tuner.study import StudySpec, Worker, WorkerSettings, create_study
    from tuner.verdict import study_verdict

    DBS.mkdir(parents=True, exist_ok=True)
    stem = label(name, pruner)
    for leftover in DBS.glob(f"{stem}.db*"):  # the database, its WAL files and its schema lock
        leftover.unlink()
    url = f"sqlite:///{DBS / f'{stem}.db'}"
    problem, options = problem_of(name, folder)
    spec = StudySpec(
        name="bench",
        problem=problem,
        problem_options=options,
        space=SPACE,
        objective="compare",
        pruner=pruner,
        n_trials=trials,
        epochs=epochs,
        seed=0,
        confirm_seeds=seeds,
    )
    start = time.perf_counter()
    create_study(url, spec, source="cli")
    Worker(WorkerSettings(url=url, study_name="bench", exit_when_idle=True, device="cpu")).run()
    seconds = time.perf_counter() - start
    verdict = study_verdict(url, "bench")
    study = optuna.load_study(study_name="bench", storage=url)
    per_strategy: dict[str, dict[str, int]] = {}
    for t in study.get_trials(deepcopy=False):
        strategy = str(t.user_attrs.get("config", {}).get("strategy", t.params.get("strategy", "?")))
        counts = per_strategy.setdefault(strategy, {})
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    last_trial = max((t.datetime_complete for t in study.trials if t.datetime_complete), default=None)
    confirm_seconds = (datetime.now() - last_trial).total_seconds() if last_trial else None
    return {
        "problem": stem,
        "registered_problem": problem,
        "problem_options": {k: (Path(v).name if k == "data" else v) for k, v in options.items()},
        "space": SPACE,
        "pruner": spec.effective_pruner,
        "trials": trials,
        "seeds": seeds,
        "epochs": epochs,
        "trials_per_strategy": per_strategy,
        "seconds": seconds,
        "confirmation_seconds": confirm_seconds,
        "verdict": verdict,
    }


def label(name: str, pruner: str | None) -> str:
    """The result's name: the problem's, with the pruner when one other than the default is asked for."""
    return name if pruner is None else f"{name}-pruner-{pruner}"


def _num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.4g}"


def _counts(states: dict[str, int]) -> str:
    """A strategy's trials: how many, and how many of them completed (the rest pruned or failed)."""
    return f"{sum(states.values())} ({states.get('complete', 0)} complete)"


def _mean_std(cell: dict[str, Any]) -> str:
    return f"{_num(cell['mean'])} ± {_num(cell['std'])}"


def _diff(cell: dict[str, Any]) -> str:
    d = cell["diff"]
    if d["low"] is None:
        return f"{_num(d['mean'])} [-]"
    return f"{d['mean']:+.3g} [{d['low']:+.3g}, {d['high']:+.3g}]"


def tables(result: dict[str, Any]) -> list[str]:
    """The verdict as markdown lines: the best against the baseline, each strategy's best, the sentence and the
    scalarization check."""
    v = result["verdict"]
    candidates = v["candidates"]
    baseline = next((c for c in candidates if "baseline" in c["roles"]), None)
    best = next((c for c in candidates if "best" in c["roles"]), None)
    directions = {t["name"]: t["direction"] for t in v["tasks"]}
    lines = [
        f"### {result['problem']}",
        "",
        f"{result['trials']} trials (pruner {result.get('pruner', 'hyperband')}; `compare` over "
        f"{', '.join(SPACE['strategy'])}; per strategy: "
        + ", ".join(f"{s} {_counts(c)}" for s, c in sorted(result["trials_per_strategy"].items()))
        + f"), confirmation over {len(v['seeds'])} seeds on the {v['split']} split "
        f"({sum(v['runs'].values())} runs, {v['runs']['failed']} failed); {result['seconds']:.0f} s in all.",
        "",
    ]
    if baseline is None or best is None:
        return [*lines, "No verdict: the baseline or the best configuration was not confirmed.", ""]
    lines += [
        f"Best configuration: trial {best['trial']} (`{best['strategy']}`; roles: {', '.join(best['roles'])}).",
        "",
        "| task (direction) | baseline mean ± std | best mean ± std | difference [95 % CI] | judgement |",
        "| --- | --- | --- | --- | --- |",
    ]
    for task, direction in directions.items():
        b, o = baseline["tasks"][task], best["tasks"][task]
        lines.append(f"| {task} ({direction[:3]}) | {_mean_std(b)} | {_mean_std(o)} | {_diff(o)} | {o['judgement']} |")
    lines += ["", f"Verdict: {v['sentence']}.", ""]
    # The baseline is a strategy's best when no tuned trial of that strategy beat it on validation.
    each = [c for c in candidates if any(r.startswith("best ") for r in c["roles"])]
    if each:
        lines += [
            "Best of each strategy against the baseline (difference [95 % CI], judgement):",
            "",
            "| strategy (trial) | " + " | ".join(directions) + " |",
            "| --- |" + " --- |" * len(directions),
        ]
        for c in each:
            cells = [f"{_diff(c['tasks'][t])} {c['tasks'][t]['judgement']}" for t in directions]
            who = f"{c['strategy']} ({c['trial']}{', the baseline' if 'baseline' in c['roles'] else ''})"
            lines.append(f"| {who} | " + " | ".join(cells) + " |")
        lines.append("")
    s = v["scalarization"]
    if s is None:
        lines.append("Scalarization: no tuned static weighting was confirmed.")
    else:
        lines.append(
            f"Scalarization: the confirmed tuned static weightings (trials {', '.join(map(str, s['static_trials']))}) "
            f"dominate on every task (test means): {', '.join(s['dominated']) or 'none'}; "
            f"not dominated: {', '.join(s['not_dominated']) or 'none'}."
        )
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=PROBLEMS)
    parser.add_argument(
        "--trials",
        type=int,
        default=76,
        help="trials per study: the baseline, then shared evenly between the strategies",
    )
    parser.add_argument("--seeds", type=int, default=5, help="confirmation seeds (at least 2)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial (default: the problem's)")
    parser.add_argument("--pruner", default=None, help="the study's pruner (default: none, as compare studies)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()

    import optuna
    import torch

    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.problems:
            print(f"== {name}: {args.trials} trials, {args.seeds} confirmation seeds", flush=True)
            result = run(name, args.trials, args.seeds, args.epochs, Path(tmp), args.pruner)
            (OUT / f"verdict_{label(name, args.pruner)}.json").write_text(json.dumps(result, indent=2, default=str))
            print("\n".join(tables(result)), flush=True)
    # Every problem's latest result, those of earlier runs of this script included.
    markdown: list[str] = []
    for name in [label(p, q) for p in PROBLEMS for q in (None, "none")]:
        if (path := OUT / f"verdict_{name}.json").exists():
            markdown += tables(json.loads(path.read_text()))
    (OUT / "verdict.md").write_text("\n".join(markdown))


if __name__ == "__main__":
    main()
