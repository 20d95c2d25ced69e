"""The verdict of a study's confirmation, as ``study show`` and ``study confirm`` print it."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from mtl_tune_cli._common import console, print_table

_MARK = {"better": "[green]better[/]", "worse": "[red]worse[/]", "within noise": "within noise"}


def print_verdict(verdict: dict[str, Any]) -> None:
    status = verdict["status"]
    if status == "not requested":
        console.print(
            f"verdict: no confirmation yet (`mtl-tune study confirm {verdict['study']}` trains the chosen "
            "configurations again over fresh seeds and judges them on the test split)"
        )
        return
    runs = verdict["runs"]
    split = verdict["split"] or "test"
    console.print(
        f"[bold]verdict[/] on the {split} split, seeds {_seeds(verdict['seeds'])}: confirmation {status}"
        f" (runs: {runs['complete']} complete, {runs['queued'] + runs['running']} to go, {runs['failed']} failed)"
    )
    if verdict["provisional"]:
        console.print(
            "[yellow]the study is still searching: this verdict is provisional; the study confirms again, with as "
            "many seeds, when it reaches its target[/]"
        )
    if verdict["optimistic"]:
        console.print(
            "[yellow]the problem has no test split: judged on the validation data that chose the "
            "configurations, so the verdict is optimistic[/]"
        )
    candidates = verdict["candidates"]
    baseline = next((c for c in candidates if "baseline" in c["roles"]), None)
    best = next((c for c in candidates if "best" in c["roles"]), None)
    if baseline is not None and best is not None:
        table = Table("task", "metric", "baseline", f"best (trial {best['trial']})", "difference, 95 % CI", "judgement",
                      title="best vs baseline, confirmed")  # fmt: skip
        for task in verdict["tasks"]:
            name = task["name"]
            arrow = "↑" if task["direction"] == "maximize" else "↓"
            b, t = baseline["tasks"][name], best["tasks"][name]
            table.add_row(name, f"{task['metric']} {arrow}", _mean_std(b), _mean_std(t), _diff(t["diff"]),
                          _MARK.get(t["judgement"], t["judgement"]))  # fmt: skip
        print_table(table)
    elif best is None and candidates:  # a pareto study: every confirmed configuration, task by task
        names = [t["name"] for t in verdict["tasks"]]
        headings = [f"{t['name']} {'↑' if t['direction'] == 'maximize' else '↓'}" for t in verdict["tasks"]]
        title = "confirmed configurations, mean ± std (difference to the baseline, 95 % CI)"
        table = Table("trial", *headings, title=title)
        for c in candidates:
            cells = [f"{_mean_std(c['tasks'][n])} ({_diff(c['tasks'][n]['diff'])})" for n in names]
            table.add_row(f"{c['trial']} ({', '.join(c['roles'])})", *cells)
        print_table(table)
    if candidates:
        table = Table(
            "trial", "chosen as", "strategy", "seeds", "better on", "worse on", title="confirmed configurations"
        )
        for c in candidates:
            better = [t for t, v in c["tasks"].items() if v["judgement"] == "better"]
            worse = [t for t, v in c["tasks"].items() if v["judgement"] == "worse"]
            seeds = f"{len(c['seeds'])}" + (f" ({len(c['failed'])} failed)" if c["failed"] else "")
            table.add_row(str(c["trial"]), ", ".join(c["roles"]), str(c["strategy"]), seeds,
                          ", ".join(better) or "-", ", ".join(worse) or "-")  # fmt: skip
        print_table(table)
    if verdict["sentence"]:
        console.print(f"[bold]{verdict['sentence']}[/]")
    scal = verdict["scalarization"]
    if scal is not None:
        dominated, kept = scal["dominated"], scal["not_dominated"]
        trials = scal["static_trials"]
        who = (
            f"tuned static weighting (trial {trials[0]}) dominates"
            if len(trials) == 1
            else f"tuned static weightings (trials {', '.join(map(str, trials))}) dominate"
        )
        console.print(
            f"{who} on every task (test means): {', '.join(dominated) or 'none'}; "
            f"not dominated: {', '.join(kept) or 'none'}"
        )
    console.print(f"[dim]{verdict['interval']}[/]")


def _seeds(seeds: list[int]) -> str:
    """``1000–1049`` for consecutive seeds, else each one."""
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds))


def _mean_std(v: dict[str, Any]) -> str:
    if v["mean"] is None:
        return "-"
    return f"{v['mean']:.4g} ± {v['std']:.2g}" if v["std"] is not None else f"{v['mean']:.4g}"


def _diff(d: dict[str, Any] | None) -> str:
    if d is None or d["mean"] is None:
        return "-"
    if d["low"] is None:
        return f"{d['mean']:+.4g}"
    return f"{d['mean']:+.4g} [{d['low']:+.3g}, {d['high']:+.3g}]"
