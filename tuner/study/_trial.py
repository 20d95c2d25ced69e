"""One trial: suggest a configuration, train it, report every epoch, record what the dashboards read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import optuna

import storage
from storage.claims import INTERRUPTED_ATTR
from storage.epochs import EpochOutcome, TrialRecorder
from storage.metrics import rung_vectors
from storage.reports import task_metrics
from tuner.problems import Problem
from tuner.study._dominance import MIN_DOMINATING, dominated_by
from tuner.study._space import SearchSpace
from tuner.study._suggest import suggest_config
from tuner.train import EpochReport, train

if TYPE_CHECKING:
    from storage._worker_storage import WorkerStorage

STOPPING = ("stopping", "stopped")
JobKey = tuple[int, datetime]


def failure_reason(exc: BaseException) -> str:
    """What a failed trial records: the exception's type and message (the type alone when it has none)."""
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class TrialLost(Exception):
    """The trial was finished elsewhere while this worker ran it: failed as lost by another worker (this one was too
    slow to send heartbeats; its parameters were re-enqueued), or its study deleted. Nothing more is written."""


class StopRequested(Exception):
    """The study was asked to stop; the running trial ends (FAIL in Optuna, reason recorded, claim and summary
    ``interrupted``) and its slot is freed."""


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
    created_at: datetime
    confirm_top: int = 1

    @property
    def key(self) -> JobKey:
        """This job and no other: a study deleted and created again under its name (or under a job id the
        database hands out again) is another job."""
        return (self.id, self.created_at)

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
            created_at=job.created_at,
            confirm_top=job.confirm_top,
        )


def task_table(report: EpochReport) -> dict[str, dict[str, Any]]:
    """Per-task final numbers kept on every trial: validation loss, metric, loss weight, sigma, and every series
    the strategy reported by name."""
    return {
        name: {"val_loss": t.val_loss, "metric": t.metric, "weight": t.weight, "sigma": t.sigma, "series": t.series}
        for name, t in report.tasks.items()
    }


@dataclass
class TrialRunner:
    """The Optuna objective for one claimed slot of a job.

    The trial is held by the batched storage: its parameters, configuration and per-epoch intermediate values
    reach the database in a few transactions (start, one per epoch, the end), not one commit per call.
    """

    url: str
    job: JobInfo
    problem: Problem
    space: SearchSpace
    claim_id: int
    rdb: WorkerStorage
    study_id: int
    device: str | None = None
    prune_steps: frozenset[int] | None = None
    recorder: TrialRecorder | None = None
    trial_id: int | None = None  # the storage's id of the trial it runs, once called
    prunable: bool = True
    #: Each task's metric direction as the study recorded it; read at the first rung of a ``dominated`` study.
    directions: dict[str, str] | None = None

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        self.trial_id = trial_id = self.rdb.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)
        self.recorder = TrialRecorder(
            self.url,
            self.rdb,
            job_id=self.job.id,
            job_created_at=self.job.created_at,
            claim_id=self.claim_id,
            trial_id=trial_id,
            trial_number=trial.number,
        )
        # The trial's final state (told by the worker after this returns) is written by the recorder, with the
        # claim closed and the summary: a slot is never counted without its trial or the other way round.
        self.rdb.hold(trial_id, self.study_id, finisher=self.recorder.finish)
        # The baseline runs all its epochs: every study compares its best trial with it. Pareto studies are pruned
        # by mtl-tune's own rule only (``_dominance.py``): Optuna's pruners cannot prune them.
        self.prunable = (self.job.objective != "pareto" or self.job.pruner == "dominated") and not trial.user_attrs.get(
            storage.BASELINE_ATTR
        )
        last: list[EpochReport] = []
        try:
            config = suggest_config(trial, self.space, self.problem, epochs=self.job.epochs, seed=self.job.seed)
            trial.set_user_attr("config", config.model_dump(mode="json"))
            self.recorder.start()  # the parameters and configuration, queued before training starts
            result = train(
                self.problem,
                config,
                device=self.device,
                on_epoch_end=lambda r: self._epoch(trial, r, last),
                evaluate_test=False,  # trials select on validation; only confirmation runs read the test split
            )
            self.recorder.flush()  # every epoch written, or the trial fails with the write's error
        except (optuna.TrialPruned, TrialLost):
            raise
        except BaseException as exc:  # every failure says why, an interrupt (SIGTERM, Ctrl-C) included
            trial.set_user_attr("fail_reason", failure_reason(exc))
            if isinstance(exc, KeyboardInterrupt | StopRequested):  # not the trial's failure: recorded interrupted
                trial.set_user_attr(INTERRUPTED_ATTR, True)
            raise
        finally:
            if last:
                trial.set_user_attr("tasks", task_table(last[0]))
        if self.job.objective == "pareto":
            return [t.metric for t in result.final.tasks.values()]
        return result.objective

    @property
    def lost(self) -> bool:
        """The trial was finished elsewhere (failed as lost by another worker) while this worker ran it."""
        return self.recorder is not None and self.recorder.lost

    @property
    def recorded(self) -> bool:
        """Its final state was written with its claim and summary."""
        return self.recorder is not None and self.recorder.finished

    def _epoch(self, trial: optuna.Trial, report: EpochReport, last: list[EpochReport]) -> None:
        last[:] = [report]
        step = report.epoch + 1  # epochs trained so far: the pruners' resource
        if self.job.objective != "pareto":  # Optuna keeps intermediate values for single-objective studies only
            trial.report(report.objective, step)
        rows = [
            {
                "task": name,
                "train_loss": t.train_loss,
                "val_loss": t.val_loss,
                "metric": t.metric,
                "weight": t.weight,
                "series": t.series,
            }
            for name, t in report.tasks.items()
        ]
        # One transaction per epoch, queued: every task's numbers and Optuna's intermediate value (with whatever else
        # the trial wrote since), and the stop flag. The claim's heartbeat comes from the worker's heartbeat thread.
        assert self.recorder is not None
        self._check(trial, self.recorder.epoch(report.epoch, rows))
        if not (self.prunable and (self.prune_steps is None or step in self.prune_steps)):
            return
        if self.job.objective == "pareto":
            reason = self._dominated(trial, report)
        else:
            reason = f"pruned after epoch {step}" if trial.should_prune() else None
        if reason is not None:
            self.recorder.flush()  # its epochs written, or it fails with the write's error, before it is pruned
            raise optuna.TrialPruned(reason)

    def _dominated(self, trial: optuna.Trial, report: EpochReport) -> str | None:
        """The ``dominated`` rule at a rung: pruned when at least ``MIN_DOMINATING`` finished trials of the study
        had better per-task validation metrics after the same epoch (each task by its own direction)."""
        if self.directions is None:
            recorded = task_metrics(trial.study)
            self.directions = {
                t.name: recorded[t.name][1] if t.name in recorded else t.metric_def.direction
                for t in self.problem.tasks
            }
        vector = {name: t.metric for name, t in report.tasks.items()}
        with storage.session_scope(self.url) as session:
            finished = rung_vectors(session, self.job.id, report.epoch)
        count = dominated_by(vector, finished, self.directions)
        if count >= MIN_DOMINATING:
            return f"pruned after epoch {report.epoch + 1}: dominated by {count} finished trials"
        return None

    def _check(self, trial: optuna.Trial, outcome: EpochOutcome | None) -> None:
        """Stop when the trial was failed by another worker or the study was asked to stop, as the latest
        committed epoch transaction read them (``TrialRecorder.epoch``)."""
        if outcome is None:
            return
        if not outcome.trial_running:
            raise TrialLost(f"trial {trial.number} of {self.job.study_name} was finished elsewhere or deleted")
        if outcome.job_status is None or outcome.job_status in STOPPING:
            raise StopRequested(f"study {self.job.study_name!r} was asked to stop")
