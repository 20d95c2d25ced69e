"""A study's verdict, from its confirmation runs: does tuning beat the default on held-out data, task by task, and
which weighting methods does tuned scalarization (``static``) dominate?

Every confirmed configuration was trained with the same seeds as the baseline, so each task's difference to the
baseline is taken seed by seed (paired) and its 95 % confidence interval is Student's t interval of the paired
differences (n - 1 degrees of freedom). A task is better (or worse) when the whole interval lies on that side of
zero, by the task's own metric direction; otherwise the difference is within noise. Plain data: the CLI, the API and
the dashboard render it. No torch: the API imports it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from itertools import combinations
from typing import Any

from scipy import stats

import storage
from storage import queries
from storage.confirmations import RUN_STATES, confirmation_seeds, current_runs
from storage.models import ConfirmationRun, StudyJob

CONFIDENCE = 0.95
INTERVAL = "95 % paired t interval of the per-seed differences to the baseline (Student's t, n - 1 degrees of freedom)"
BETTER, WORSE, NOISE, TOO_FEW, NOT_RUN = "better", "worse", "within noise", "too few seeds", "not run yet"


def dominates(p: Sequence[float | None], q: Sequence[float | None], directions: Sequence[str]) -> bool:
    """Whether ``p`` is at least as good as ``q`` on every coordinate and strictly better on one, each coordinate
    by its direction (``minimize`` or ``maximize``); a missing or non-finite value (a diverged run) is the worst.

    The one definition of dominance: the verdict's fronts and the ``dominated`` pruner both use it."""
    losses = [(_as_loss(a, d), _as_loss(b, d)) for a, b, d in zip(p, q, directions, strict=True)]
    return all(a <= b for a, b in losses) and any(a < b for a, b in losses)


def _as_loss(value: float | None, direction: str) -> float:
    if direction not in ("minimize", "maximize"):
        raise ValueError(f"unknown direction {direction!r}; expected minimize or maximize")
    if value is None or not math.isfinite(value):
        return math.inf
    return value if direction == "minimize" else -value


def non_dominated(points: Sequence[Sequence[float | None]], directions: Sequence[str]) -> list[bool]:
    """For each point, whether no other point dominates it."""
    return [not any(dominates(q, p, directions) for q in points) for p in points]


def paired_interval(baseline: Sequence[float], other: Sequence[float]) -> dict[str, float | int | None]:
    """Mean of ``other - baseline`` over paired seeds, with its 95 % t interval (None below two pairs)."""
    diffs = [b - a for a, b in zip(baseline, other, strict=True)]
    n = len(diffs)
    mean = statistics.fmean(diffs) if diffs else math.nan
    if n < 2:
        return {"mean": mean if diffs else None, "low": None, "high": None, "n": n}
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, n - 1)) * statistics.stdev(diffs) / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def judge(interval: dict[str, Any], direction: str) -> str:
    """better / worse / within noise, by the metric's direction; too few seeds without an interval (not run yet
    without any pair)."""
    low, high = interval["low"], interval["high"]
    if low is None or high is None:
        return NOT_RUN if not interval.get("n") else TOO_FEW
    if low > 0 or high < 0:
        return BETTER if (low > 0) == (direction == "maximize") else WORSE
    return NOISE


def sentence(judgements: dict[str, str], *, who: str = "tuning") -> str:
    """One plain sentence: where ``who`` beats the default, where the default wins, where it is noise."""
    by: dict[str, list[str]] = {}
    for task, judgement in judgements.items():
        by.setdefault(judgement, []).append(task)
    parts = []
    if BETTER in by:
        parts.append(f"{who} beats the default on {_and(by[BETTER])}")
    if WORSE in by:
        parts.append(f"the default beats {who} on {_and(by[WORSE])}")
    if NOISE in by:
        difference = "the difference is" if len(by[NOISE]) == 1 else "the differences are"
        parts.append(f"on {_and(by[NOISE])} {difference} within noise")
    if TOO_FEW in by:
        parts.append(f"on {_and(by[TOO_FEW])} too few seeds finished to tell")
    if NOT_RUN in by and len(by) == 1:
        return "no confirmation run has finished yet"
    return "; ".join(parts) if parts else "no confirmation run has finished yet"


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def study_verdict(url: str, name: str) -> dict[str, Any]:
    """The verdict of the study's latest confirmation (``status`` says whether one was asked for and how far it
    got); raises ``StudyNotFound``."""
    with storage.session_scope(url) as session:
        job = storage.get_job(session, name)
        runs = current_runs(session, job.id)
        study_id = queries.optuna_study_id(session, study_name=name)  # None: deleted with Optuna's own tools
        tasks = queries.study_tasks(session, study_id=study_id) if study_id is not None else []
        session.expunge_all()
    return build_verdict(job, runs, tasks)


def build_verdict(job: StudyJob, runs: Sequence[ConfirmationRun], tasks: list[dict[str, str]]) -> dict[str, Any]:
    counts = dict.fromkeys(RUN_STATES, 0)
    for run in runs:
        counts[run.state] += 1
    splits = {run.split for run in runs if run.state == "complete"}
    verdict: dict[str, Any] = {
        "study": job.study_name,
        "objective": job.objective,
        "status": _status(job, counts),
        # The study still searches: a better trial may come, and the study confirms again at its target.
        "provisional": job.status in ("queued", "running"),
        "runs": counts,
        "seeds": confirmation_seeds(job.seed, job.confirm_seeds) if runs or job.confirm_pending else [],
        "split": "validation" if "validation" in splits else ("test" if splits else None),
        "interval": INTERVAL,
        "tasks": tasks,
        "candidates": [],
        "judgements": {},
        "sentence": "",
        "scalarization": None,
    }
    verdict["optimistic"] = verdict["split"] == "validation"
    directions = {t["name"]: t["direction"] for t in tasks}
    by_trial: dict[int, list[ConfirmationRun]] = {}
    for run in runs:
        by_trial.setdefault(run.trial_number, []).append(run)
    baseline = next((rs for rs in by_trial.values() if "baseline" in rs[0].roles), None)
    base_by_seed = {r.seed: r.results for r in baseline or [] if r.state == "complete" and r.results}
    candidates = [_candidate(rs, base_by_seed, directions) for rs in by_trial.values()]
    verdict["candidates"] = candidates
    best = next((c for c in candidates if "best" in c["roles"]), None)
    if best is not None:
        verdict["judgements"] = {t: v["judgement"] for t, v in best["tasks"].items()}
        verdict["sentence"] = _best_sentence(best)
    elif job.objective == "pareto":
        verdict["sentence"] = _pareto_sentence(candidates)
    if runs and not counts["complete"]:
        verdict["sentence"] = "no confirmation run has finished yet"
    verdict["scalarization"] = _scalarization(candidates, directions)
    return verdict


def _status(job: StudyJob, counts: dict[str, int]) -> str:
    if job.confirm_pending:
        return "pending"
    if not any(counts.values()):
        return "not requested"
    return "running" if counts["queued"] or counts["running"] else "complete"


def _candidate(runs: list[ConfirmationRun], base_by_seed: dict[int, Any], directions: dict[str, str]) -> dict[str, Any]:
    done = [r for r in runs if r.state == "complete" and r.results]
    out: dict[str, Any] = {
        "trial": runs[0].trial_number,
        "roles": list(runs[0].roles),
        "strategy": runs[0].config.get("strategy"),
        "config": runs[0].config,
        "seeds": sorted(r.seed for r in done),
        "failed": [{"seed": r.seed, "reason": r.fail_reason} for r in runs if r.state == "failed"],
        "tasks": {},
    }
    results = {r.seed: r.results for r in done if r.results}
    for task, direction in directions.items():
        own = {s: m for s, res in results.items() if (m := _metric(res, task)) is not None}
        base = {s: m for s, res in base_by_seed.items() if (m := _metric(res, task)) is not None}
        values = list(own.values())
        # Differences only where the baseline ran the same seed: the runs are paired by seed.
        seeds = sorted(own.keys() & base.keys())
        interval = paired_interval([base[s] for s in seeds], [own[s] for s in seeds])
        out["tasks"][task] = {
            "mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values),
            "diff": interval,
            "judgement": judge(interval, direction),
        }
    return out


def _metric(results: dict[str, Any], task: str) -> float | None:
    """A run's metric of the task; None when it has none or it is not finite (a task without held-out rows)."""
    value = results.get(task, {}).get("metric")
    return float(value) if value is not None and math.isfinite(value) else None


def _best_sentence(best: dict[str, Any]) -> str:
    if "baseline" in best["roles"]:
        return "the best configuration found is the default itself: tuning found nothing better on validation data"
    return sentence({t: v["judgement"] for t, v in best["tasks"].items()})


def _pareto_sentence(candidates: list[dict[str, Any]]) -> str:
    front = [c for c in candidates if "pareto" in c["roles"] and "baseline" not in c["roles"]]
    if not front:
        return "no Pareto configuration was confirmed"
    every = [c["trial"] for c in front if all(v["judgement"] == BETTER for v in c["tasks"].values())]
    some = [c["trial"] for c in front if any(v["judgement"] == BETTER for v in c["tasks"].values())]
    worse = [c["trial"] for c in front if any(v["judgement"] == WORSE for v in c["tasks"].values())]
    parts = [
        f"{len(every)} of {len(front)} Pareto configurations beat the default on every task",
        f"{len(some)} on at least one task",
    ]
    if worse:
        parts.append(f"{len(worse)} lose to the default on some task")
    return ", ".join(parts)


def _mean_point(candidate: dict[str, Any], names: Sequence[str]) -> list[float] | None:
    means = [candidate["tasks"][t]["mean"] for t in names]
    return None if any(m is None for m in means) else [float(m) for m in means]


def _scalarization(candidates: list[dict[str, Any]], directions: dict[str, str]) -> dict[str, Any] | None:
    """Each strategy's confirmed best against the confirmed tuned static weightings (mean test metrics): per pair of
    tasks the static front and the other points, and which strategies some static weighting dominates on every
    task. None when no static weighting was confirmed."""
    names = list(directions)
    static = [c for c in candidates if c["strategy"] == "static" and _mean_point(c, names) is not None]
    if not static or len(names) < 2:
        return None
    others = [
        c for c in candidates
        if c["strategy"] != "static" and _mean_point(c, names) is not None
        and ("baseline" in c["roles"] or any(r.startswith("best ") for r in c["roles"]))
    ]  # fmt: skip
    static_points = [_mean_point(c, names) or [] for c in static]
    dirs = [directions[n] for n in names]
    dominated: list[str] = []
    kept: list[str] = []
    for c in others:
        label = "default" if "baseline" in c["roles"] else str(c["strategy"])
        point = _mean_point(c, names) or []
        (dominated if any(dominates(s, point, dirs) for s in static_points) else kept).append(label)
    pairs = []
    for a, b in combinations(names, 2):
        pair_dirs = [directions[a], directions[b]]
        xy = [[c["tasks"][a]["mean"], c["tasks"][b]["mean"]] for c in static]
        front = non_dominated(xy, pair_dirs)
        static_xy = [
            {"trial": c["trial"], "x": p[0], "y": p[1], "front": f} for c, p, f in zip(static, xy, front, strict=True)
        ]
        others_xy = []
        for c in others:
            point = [c["tasks"][a]["mean"], c["tasks"][b]["mean"]]
            others_xy.append({
                "trial": c["trial"], "strategy": c["strategy"], "roles": c["roles"], "x": point[0], "y": point[1],
                "dominated": any(dominates(p, point, pair_dirs) for p in xy),
            })  # fmt: skip
        pairs.append({"tasks": [a, b], "static": static_xy, "others": others_xy})
    return {
        "static_trials": [c["trial"] for c in static],
        "pairs": pairs,
        "dominated": dominated,
        "not_dominated": kept,
    }
