"""One trial: suggest a configuration, train it, report every epoch, record what the dashboards read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

import storage
from tuner.problems import Problem
from tuner.study._space import SearchSpace
from tuner.study._suggest import suggest_config
from tuner.train import EpochReport, train

STOPPING = ("stopping", "stopped")


class StopRequested(Exception):
    """The study was asked to stop; the running trial ends (FAIL, reason recorded) and its slot is freed."""


@dataclass(frozen=True)
class JobInfo:
    """A plain copy of a study job row, safe to keep outside its session."""

    id: int
    study_name: str
    problem: str
    problem_options: dict[str, Any]
    space: dict[str, Any] | None
    objective: str
    sampler: str
    pruner: str
    epochs: int
    n_trials: int
    seed: int

    @classmethod
    def of(cls, job: storage.StudyJob) -> JobInfo:
        return cls(
            id=job.id,
            study_name=job.study_name,
            problem=job.problem,
            problem_options=dict(job.problem_options or {}),
            space=job.space,
            objective=job.objective,
            sampler=job.sampler,
            pruner=job.pruner,
            epochs=job.epochs,
            n_trials=job.n_trials,
            seed=job.seed,
        )


def task_table(report: EpochReport) -> dict[str, dict[str, float | None]]:
    """Per-task final numbers kept on every trial: validation loss, metric, loss weight, sigma."""
    return {
        name: {"val_loss": t.val_loss, "metric": t.metric, "weight": t.weight, "sigma": t.sigma}
        for name, t in report.tasks.items()
    }


@dataclass
class TrialRunner:
    """The Optuna objective for one claimed slot of a job."""

    url: str
    job: JobInfo
    problem: Problem
    space: SearchSpace
    claim_id: int
    device: str | None = None
    report_steps: frozenset[int] | None = None

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        with storage.session_scope(self.url) as session:
            storage.attach_trial(session, self.claim_id, trial.number)
        config = suggest_config(trial, self.space, self.problem, epochs=self.job.epochs, seed=self.job.seed)
        trial.set_user_attr("config", config.model_dump(mode="json"))
        last: list[EpochReport] = []
        try:
            result = train(self.problem, config, device=self.device, on_epoch_end=lambda r: self._epoch(trial, r, last))
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if last:
                trial.set_user_attr("tasks", task_table(last[0]))
        if self.job.objective == "pareto":
            return [t.metric for t in result.final.tasks.values()]
        return result.objective

    def _epoch(self, trial: optuna.Trial, report: EpochReport, last: list[EpochReport]) -> None:
        last[:] = [report]
        rows = [
            {
                "task": name,
                "train_loss": t.train_loss,
                "val_loss": t.val_loss,
                "metric": t.metric,
                "weight": t.weight,
                "sigma": t.sigma,
                "grad_norm": t.grad_norm,
            }
            for name, t in report.tasks.items()
        ]
        # One transaction per epoch: every task's numbers plus the claim's heartbeat, then the stop flag.
        with storage.session_scope(self.url) as session:
            storage.write_epoch(
                session,
                job_id=self.job.id,
                trial_number=trial.number,
                epoch=report.epoch,
                rows=rows,
                claim_id=self.claim_id,
            )
            status = storage.job_status(session, self.job.id)
        if status is None or status in STOPPING:
            raise StopRequested(f"study {self.job.study_name!r} was asked to stop")
        step = report.epoch + 1  # epochs trained so far: the pruners' resource
        if self.report_steps is None or step in self.report_steps:
            trial.report(report.objective, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {step}")
