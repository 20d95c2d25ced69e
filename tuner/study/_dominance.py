"""Early stopping for pareto studies: the ``dominated`` pruner's rule.

No Optuna pruner prunes multi-objective studies, so mtl-tune decides itself:

    At a rung (epochs 1, 3, 9, ... as for Hyperband, the last epoch excepted), a running trial whose per-task
    validation metric vector after that epoch is dominated by the vectors of at least ``MIN_DOMINATING`` (3)
    finished trials (complete or pruned) of the same study after the same epoch is pruned. The baseline trial is
    never pruned.

Dominance follows each task's own metric direction, as the study recorded it at launch: ``q`` dominates ``p`` when
``q`` is at least as good on every task and strictly better on at least one. A value that is not a finite number (a
diverged trial) is worse than any number, so a diverged trial dominates nothing and is dominated by any trial that
ties or beats it elsewhere. A finished trial whose vector lacks one of the running trial's tasks is not compared.

Only trials that reached the rung count: a trial pruned at epoch 1 says nothing about epoch 3. Asking costs one
indexed read of mtl-tune's ``epoch_metrics`` per rung (``storage.metrics.rung_vectors``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tuner.verdict import dominates as _dominates

#: How many finished trials must dominate a running trial at a rung for it to be pruned.
MIN_DOMINATING = 3


def dominates(q: Mapping[str, float | None], p: Mapping[str, float | None], directions: Mapping[str, str]) -> bool:
    """``q`` is at least as good as ``p`` on every task of ``p`` and strictly better on one, each task judged by
    its own direction (``tuner.verdict.dominates``, the one definition). False when ``q`` lacks one of ``p``'s
    tasks."""
    if any(task not in q for task in p):
        return False
    tasks = list(p)
    return _dominates([q[t] for t in tasks], [p[t] for t in tasks], [directions[t] for t in tasks])


def dominated_by(
    vector: Mapping[str, float | None],
    others: Iterable[Mapping[str, float | None]],
    directions: Mapping[str, str],
) -> int:
    """How many of ``others`` dominate ``vector`` (task name -> metric value)."""
    if not vector:
        return 0
    return sum(dominates(other, vector, directions) for other in others)
