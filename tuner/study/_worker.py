"""The worker loop: find a job that needs trials, claim a slot, run one trial, repeat.

Any number of workers, on any machines that reach the same database, share a job: each slot is claimed in a
transaction (no overshoot), a failed trial frees its slot, and a worker killed mid-trial leaves a claim whose
heartbeat goes stale; another worker then marks the claim lost, fails that trial with the reason and re-enqueues
its parameters. With no trial to run, a worker runs confirmation runs (``storage.confirmations``).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

import optuna
import sqlalchemy.exc
from optuna.trial import TrialState
from sqlalchemy.orm import Session

import storage
from storage.claims import INTERRUPTED, INTERRUPTED_ATTR
from storage.confirmations import (
    RunClaim,
    claim_run,
    confirmation_work,
    finish_run,
    pending_confirmations,
    queue_runs,
    release_run,
    run_heartbeat,
)
from storage.epochs import LostTrial, claim_state, find_lost_trials, record_finished, record_lost
from tuner.problems import Problem, available_problems, broken_problems, create_problem
from tuner.study._confirm import candidates, run_confirmation
from tuner.study._samplers import compare_sampler, make_pruner, make_sampler, prune_steps
from tuner.study._space import SearchSpace
from tuner.study._trial import JobInfo, JobKey, StopRequested, TrialLost, TrialRunner, failure_reason

if TYPE_CHECKING:
    from storage._worker_storage import WorkerStorage

log = logging.getLogger("mtl_tune.worker")

DB_ERRORS = (storage.StorageError, sqlalchemy.exc.DBAPIError, optuna.exceptions.StorageInternalError)
MAX_CONSECUTIVE_FAILURES = 10
TELL_ATTEMPTS, TELL_RETRY_SECONDS = 3, 0.5
# A trial (and its slot) whose worker has been silent for GRACE_SECONDS is considered dead.
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60


class UnreadableStudy(Exception):
    """A job's study cannot be read (its Optuna study is gone); the job is failed, the worker goes on."""


@dataclass
class WorkerSettings:
    url: str
    study_name: str | None = None
    device: str | None = None
    max_trials: int | None = None
    exit_when_idle: bool = False
    poll_seconds: float = 2.0
    heartbeat_seconds: int = HEARTBEAT_SECONDS
    grace_seconds: int = GRACE_SECONDS
    deadline: float | None = None  # wall-clock time after which no new trial starts
    worker_index: int = 0
    confirm_only: bool = False  # confirmation runs only, no trials


class Worker:
    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.trials_run = 0
        # Per job, keyed by ``JobInfo.key``: a study deleted and created again under its name is another job.
        self._failures: dict[JobKey, int] = {}
        self._samplers: dict[JobKey, optuna.samplers.BaseSampler] = {}
        self._studies: dict[JobKey, optuna.Study] = {}
        self._problems: dict[JobKey, Problem] = {}
        self._spaces: dict[JobKey, SearchSpace] = {}
        self._reaped_at = -math.inf
        self._current: JobInfo | None = None  # the job of the last trial, tried first for the next one
        # Jobs of problems this worker does not have (a plugin installed on other machines): left to the others.
        self._elsewhere: set[JobKey] = set()
        self._confirming: tuple[JobKey, Problem] | None = None  # the problem of the job last confirmed

    def run(self) -> int:
        """Loop until idle (with ``exit_when_idle``), ``max_trials``, the deadline, or SIGTERM/SIGINT."""
        s = self.settings
        storage.ensure_schema(s.url)
        with _sigterm_as_interrupt():
            while not self._done():
                try:
                    if not self._step() and s.exit_when_idle:
                        break
                except DB_ERRORS as exc:
                    # A restarted database or a dropped connection: wait and carry on; engines pre-ping and
                    # reconnect, and a trial that was cut off is failed as lost and retried.
                    log.warning("storage error, retrying in %.0f s: %s", s.poll_seconds, exc)
                    time.sleep(s.poll_seconds)
        return self.trials_run

    def _step(self) -> bool:
        """Run one trial if any study needs one; False when there is no work.

        After a trial the worker tries the same job's next slot straight away; only when that job has none left
        (done, stopped, or every slot taken) does it look for work again, reaping dead workers' claims first.
        """
        s = self.settings
        if self._current is not None and time.monotonic() - self._reaped_at >= s.heartbeat_seconds:
            self._reap()  # a worker busy with one job still fails the trials dead workers left in any other
        job, self._current = (None if s.confirm_only else self._current or self._next_job()), None
        if job is None:
            if self._confirm():  # no trial to run: a confirmation run, when one waits
                return True
            if s.exit_when_idle and not self._study_active():
                return False
            time.sleep(s.poll_seconds)
            return True
        if not self._readable(job):
            return True
        claim = storage.claim_slot(s.url, study_name=job.study_name, worker=self.name, grace_seconds=s.grace_seconds)
        if claim is not None:
            self._run_trial(job, claim)
            self._current = job
        return True

    def _done(self) -> bool:
        s = self.settings
        if s.max_trials is not None and self.trials_run >= s.max_trials:
            return True
        return s.deadline is not None and time.time() >= s.deadline

    def _study_active(self) -> bool:
        """Whether the named study may still need this worker: other workers' trials can fail and free slots, and
        its confirmation may wait to be queued or have runs other workers still hold."""
        name = self.settings.study_name
        if name is None:
            return False
        with storage.session_scope(self.settings.url) as session:
            job = storage.find_job(session, name)
            if job is None:
                return False
            trials = job.status in storage.ACTIVE_STATUSES and not self.settings.confirm_only
            return trials or confirmation_work(session, study_name=name)

    def _confirm(self) -> bool:
        """Queue the confirmations asked for, then run one confirmation run; False when there was none to run."""
        s = self.settings
        with storage.session_scope(s.url) as session:
            pending = [JobInfo.of(job) for job in pending_confirmations(session, study_name=s.study_name)]
        for job in pending:
            if job.key not in self._elsewhere and job.problem in available_problems():
                self._queue_confirmation(job)
        claim = claim_run(s.url, worker=self.name, grace_seconds=s.grace_seconds, study_name=s.study_name)
        if claim is None:
            return False
        self._run_confirmation(claim)
        return True

    def _queue_confirmation(self, job: JobInfo) -> None:
        """Choose the configurations to confirm (Optuna's trials are read here, never written) and queue their
        runs; a study that cannot be read is left as it is (its trials' own checks fail it)."""
        try:
            study = optuna.load_study(study_name=job.study_name, storage=storage.optuna_storage(self.settings.url))
            chosen = candidates(
                study, self._confirm_problem(job), objective=job.objective, top=job.confirm_top, epochs=job.epochs,
                seed=job.seed,
            )  # fmt: skip
        except DB_ERRORS:
            raise
        except Exception as exc:
            log.warning("study %s: its confirmation cannot be queued: %s", job.study_name, failure_reason(exc))
            return
        queued = queue_runs(self.settings.url, job_id=job.id, candidates=chosen)
        if queued is not None:
            log.info("study %s: %d confirmation runs of %d configurations queued", job.study_name, queued, len(chosen))

    def _confirm_problem(self, job: JobInfo) -> Problem:
        """The problem of the job being confirmed; one kept at a time, so memory stays bounded."""
        if self._confirming is None or self._confirming[0] != job.key:
            self._confirming = (job.key, create_problem(job.problem, job.problem_options))
        return self._confirming[1]

    def _run_confirmation(self, claim: RunClaim) -> None:
        """Train the run's configuration with its seed and record its held-out metrics (or why it failed)."""
        s = self.settings
        with storage.session_scope(s.url) as session:
            job = storage.find_job(session, claim.study_name)
            info = JobInfo.of(job) if job is not None else None
        if info is None:
            return  # deleted with its runs
        started = time.monotonic()
        split, results, reason = None, None, None
        try:
            with _heartbeats(s.url, s.heartbeat_seconds, lambda sn: run_heartbeat(sn, claim.id, self.name)):
                split, results = run_confirmation(self._confirm_problem(info), claim.config, device=s.device)
        except KeyboardInterrupt:
            with suppress(*DB_ERRORS), storage.session_scope(s.url) as session:
                release_run(session, claim.id, worker=self.name)
            raise
        except Exception as exc:
            reason = failure_reason(exc)
            log.warning("confirmation run of trial %d of %s failed", claim.trial_number, info.study_name, exc_info=True)
        with storage.session_scope(s.url) as session:
            finish_run(session, claim.id, worker=self.name, split=split, results=results, fail_reason=reason)
        log.info(
            "study %s confirmation of trial %d seed %d %s %.1f s", info.study_name, claim.trial_number, claim.seed,
            "failed" if reason else f"on {split}", time.monotonic() - started,
        )  # fmt: skip

    def _reap(self) -> None:
        """Claims of workers that died (kill -9, out of memory, lost machine) are marked lost, so stop requests
        settle and a study whose trials keep killing their workers is failed; their trials, still running in
        Optuna, are failed (with the reason) and retried, whatever the state of their study."""
        self._reaped_at = time.monotonic()
        with storage.session_scope(self.settings.url) as session:
            storage.reap_stale_claims(session, grace_seconds=self.settings.grace_seconds)
        for lost in find_lost_trials(self.settings.url):
            self._fail_lost_trial(lost)

    def _fail_lost_trial(self, lost: LostTrial) -> None:
        rdb = self._rdb()
        reason = (
            f"lost: its worker stopped sending heartbeats for {self.settings.grace_seconds} s (killed, out of memory?)"
        )
        try:
            rdb.set_trial_user_attr(lost.trial_id, "fail_reason", reason)
            trial = rdb.get_trial(lost.trial_id)
            with storage.session_scope(self.settings.url) as session:  # first: failing the trial ends the search
                record_lost(session, job_id=lost.job_id, trial=trial)
            rdb.set_trial_state_values(lost.trial_id, TrialState.FAIL)
        except (ValueError, KeyError, optuna.exceptions.UpdateFinishedTrialError):
            return  # failed by another worker meanwhile, or its study deleted
        log.warning("trial %d of %s %s; retrying it", lost.number, lost.study_name, reason)
        trial.user_attrs.pop("fail_reason")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=storage.MAX_RETRY)
        with suppress(KeyError):  # the study deleted meanwhile
            retry(optuna.load_study(study_name=lost.study_name, storage=rdb), trial)

    def _next_job(self) -> JobInfo | None:
        self._reap()
        with storage.session_scope(self.settings.url) as session:
            jobs = storage.jobs_needing_trials(
                session, study_name=self.settings.study_name, grace_seconds=self.settings.grace_seconds
            )
            needed = [info for info in map(JobInfo.of, jobs) if info.key not in self._elsewhere]
        # What this worker kept of jobs that need no trials now (done, stopped, deleted) goes: its memory stays
        # bounded however many studies it serves. A job that needs trials again is read again.
        self._forget_jobs(set(self._studies) - {info.key for info in needed})
        return needed[0] if needed else None

    def _readable(self, job: JobInfo) -> bool:
        """Whether this worker can read the job's study, problem, space, sampler and pruner.

        One it cannot (its Optuna study deleted, options its problem refuses) is marked failed with the reason, and
        the worker goes on with other jobs; a storage error is left to the retry loop. A problem that is not
        registered here (or whose plugin is broken here) may be installed on other workers: this worker leaves the
        job to them and says so once. A job read before is readable: what it needs is kept (``_study``,
        ``_problem``, ``_space``), and looking the problem up again costs a scan of the installed plugins.
        """
        if job.key in self._studies and job.key in self._problems and job.key in self._spaces:
            return True
        if job.problem not in available_problems():
            self._elsewhere.add(job.key)
            log.warning(
                "study %s: problem %r is not available on this worker (%s); leaving the study to workers that have it",
                job.study_name,
                job.problem,
                ", ".join(f"{b.name}: {b.error}" for b in broken_problems() if b.name == job.problem)
                or "not installed",
            )
            return False
        try:
            self._study(job)
            self._problem(job)
            self._space(job)
        except DB_ERRORS:
            raise
        except Exception as exc:
            reason = str(exc) if isinstance(exc, UnreadableStudy) else f"{type(exc).__name__}: {exc}"
            log.warning("study %s cannot be run and is marked failed: %s", job.study_name, reason)
            with storage.session_scope(self.settings.url) as session, suppress(storage.StudyNotFound):
                storage.set_status(session, job.study_name, "failed", error=f"worker {self.name}: {reason}")
            return False
        return True

    def _run_trial(self, job: JobInfo, claim_id: int) -> None:
        """Ask, train, tell: Optuna's ask-and-tell interface, with the heartbeats sent by this worker.

        From the claim on, whatever ends the run (an interrupt included, wherever it lands) leaves no claim and no
        trial running: before ``ask`` the slot is given back at once, after it the trial is told FAIL."""
        s = self.settings
        trial: optuna.Trial | None = None
        runner: TrialRunner | None = None
        finished: optuna.trial.FrozenTrial | None = None
        started = time.monotonic()
        try:
            study, rdb = self._study(job), self._rdb()
            if job.objective == "compare":
                study.sampler = compare_sampler(study, self._sampler(job), self._space(job).strategy_names)
            runner = TrialRunner(
                s.url,
                job,
                self._problem(job),
                self._space(job),
                claim_id,
                rdb,
                rdb.get_study_id_from_name(job.study_name),  # remembered by the storage
                s.device,
                prune_steps(job.pruner, epochs=job.epochs, objective=job.objective),
            )
            trial = study.ask()
            with _heartbeats(s.url, s.heartbeat_seconds, lambda session: storage.heartbeat(session, claim_id)):
                finished = self._train_and_tell(study, trial, runner)
        except BaseException as exc:
            interrupted = isinstance(exc, KeyboardInterrupt)
            if trial is None or interrupted:  # no trial to run, or an interrupt: the slot is given back now
                if trial is not None:
                    _tell_interrupted(study, trial)  # its finisher closes the claim and writes the summary
                with suppress(*DB_ERRORS), storage.session_scope(s.url) as session:
                    storage.finish_claim(
                        session, claim_id, state=INTERRUPTED if interrupted else "failed", missing_ok=True
                    )
                raise
            assert runner is not None  # made before the trial was asked for
            if isinstance(exc, TrialLost):  # seen at an epoch's end
                log.warning("%s", exc)
            elif isinstance(exc, ValueError | KeyError | optuna.exceptions.UpdateFinishedTrialError) and runner.lost:
                # Seen only when telling it: Optuna refuses to tell a trial that is no longer running.
                log.warning("trial %s of %s was finished elsewhere or deleted", trial.number, job.study_name)
            else:
                raise
        finally:
            if runner is not None and runner.trial_id is not None:
                runner.rdb.release(runner.trial_id)
            if runner is not None and runner.recorder is not None:
                runner.recorder.drain()  # nothing of the trial left queued, whatever ended it
        assert runner is not None and trial is not None  # the trial ran
        self.trials_run += 1
        _log_trial(job, trial, finished, time.monotonic() - started)
        self._record(job, claim_id, finished, recorded=runner.recorded)

    @staticmethod
    def _train_and_tell(study: optuna.Study, trial: optuna.Trial, runner: TrialRunner) -> optuna.trial.FrozenTrial:
        """What ``study.optimize`` does for one trial: pruned and failed trials are told so and errors are logged
        (an interrupt is left to ``_run_trial``, which tells the trial FAIL wherever it lands)."""
        try:
            values = runner(trial)
        except optuna.TrialPruned:
            return _tell(study, trial, runner, state=TrialState.PRUNED)
        except TrialLost:
            raise  # its owner is whoever finished it: nothing to tell
        except Exception as exc:
            if isinstance(exc, StopRequested):  # the user's request, not a failure: no traceback
                log.info("trial %d of %s interrupted: the study was asked to stop", trial.number, study.study_name)
            else:
                log.warning("trial %d of %s failed", trial.number, study.study_name, exc_info=True)
            failed = _tell(study, trial, runner, state=TrialState.FAIL)
            _retry_baseline(study, trial)
            return failed
        return _tell(study, trial, runner, values)

    def _rdb(self) -> WorkerStorage:
        return storage.worker_storage(self.settings.url)

    def _problem(self, job: JobInfo) -> Problem:
        """One problem instance per job, so its data is built or read once, not once per trial."""
        if job.key not in self._problems:
            self._problems[job.key] = create_problem(job.problem, job.problem_options)
        return self._problems[job.key]

    def _space(self, job: JobInfo) -> SearchSpace:
        if job.key not in self._spaces:
            self._spaces[job.key] = SearchSpace.model_validate(job.space or {})
        return self._spaces[job.key]

    def _study(self, job: JobInfo) -> optuna.Study:
        """Loaded once per job: its sampler's state then advances from trial to trial."""
        if job.key not in self._studies:
            self._forget_other_jobs_named(job)
            sampler, rdb = self._sampler(job), self._rdb()
            rdb.forget_study(job.study_name)  # what the storage remembers of an earlier study of that name
            pruner = make_pruner(job.pruner, epochs=job.epochs, objective=job.objective)
            try:
                study = optuna.load_study(study_name=job.study_name, storage=rdb, sampler=sampler, pruner=pruner)
            except KeyError:  # Optuna's "Record does not exist."
                raise UnreadableStudy(f"the Optuna storage has no study named {job.study_name!r}") from None
            self._studies[job.key] = study
        return self._studies[job.key]

    def _forget_other_jobs_named(self, job: JobInfo) -> None:
        """Drop what this worker kept of deleted jobs of the same name (and of the same job id)."""
        others = {k for k in self._studies if k != job.key and k[0] == job.id}
        others |= {k for k, study in self._studies.items() if study.study_name == job.study_name and k != job.key}
        self._forget_jobs(others)

    def _forget_jobs(self, keys: set[JobKey]) -> None:
        for key in keys:
            study = self._studies.pop(key, None)
            if study is not None:
                self._rdb().forget_study(study.study_name)  # the finished trials it read
            for kept in (self._failures, self._samplers, self._problems, self._spaces):
                kept.pop(key, None)

    def _sampler(self, job: JobInfo) -> optuna.samplers.BaseSampler:
        """One sampler per job for the worker's lifetime, so its random state advances from trial to trial.

        The seed mixes in the worker's index and the trials already recorded, so parallel workers and a resumed
        study do not repeat earlier suggestions, while one worker on a fresh study stays reproducible.
        """
        if job.key not in self._samplers:
            with storage.session_scope(self.settings.url) as session:
                recorded = sum(storage.claim_counts(session, job.study_name).values())
            seed = job.seed + 7919 * self.settings.worker_index + recorded
            self._samplers[job.key] = make_sampler(job.sampler, seed=seed, objective=job.objective)
        return self._samplers[job.key]

    def _record(self, job: JobInfo, claim_id: int, trial: optuna.trial.FrozenTrial | None, *, recorded: bool) -> None:
        """A trial told through its recorder had its claim closed and its summary written with its final state;
        any other (lost to another worker, or told before its recorder existed) is recorded here.

        Failures in a row are counted for ``MAX_CONSECUTIVE_FAILURES``: a finished trial resets the count, an
        interrupted one (a stop request) leaves it as it was."""
        state = claim_state(trial)
        failures = self._failures.get(job.key, 0)
        if state != INTERRUPTED:
            failures = failures + 1 if state == "failed" else 0
        self._failures[job.key] = failures
        fail_job = state == "failed" and failures >= MAX_CONSECUTIVE_FAILURES
        if recorded and not fail_job:
            return
        with storage.session_scope(self.settings.url) as session:
            if not recorded and trial is not None:
                record_finished(session, job_id=job.id, claim_id=claim_id, trial=trial)
            elif not recorded:
                storage.finish_claim(session, claim_id, state=state, missing_ok=True)
            if fail_job:
                self._fail_job(session, job, failures, trial)

    @staticmethod
    def _fail_job(session: Session, job: JobInfo, failures: int, trial: optuna.trial.FrozenTrial | None) -> None:
        """A job whose trials only fail (a broken problem) would otherwise be retried forever.

        Stop requests need nothing here: ``finish_claim`` turns a stopping job stopped with its last claim.
        """
        if trial is None:
            reason = (
                "the trial was failed elsewhere (lost to another worker: this one missed its heartbeats) or deleted"
            )
        else:
            reason = trial.user_attrs.get("fail_reason") or f"trial {trial.number} ended {trial.state.name.lower()}"
        storage.set_status(
            session, job.study_name, "failed", error=f"{failures} consecutive trials failed; last: {reason}"
        )


def _tell_interrupted(study: optuna.Study, trial: optuna.Trial) -> None:
    """Ctrl-C or SIGTERM leaves the trial FAIL, marked interrupted, not RUNNING (nothing when it was told already)."""
    with suppress(ValueError, optuna.exceptions.UpdateFinishedTrialError):
        trial.set_user_attr(INTERRUPTED_ATTR, True)  # also when the interrupt came after training
        study.tell(trial, state=TrialState.FAIL)
        _retry_baseline(study, trial)


def _retry_baseline(study: optuna.Study, trial: optuna.Trial) -> None:
    """A failed baseline is queued again, as its study's first trial was: every study compares with it."""
    if trial.user_attrs.get(storage.BASELINE_ATTR):
        study.enqueue_trial({}, user_attrs={storage.BASELINE_ATTR: True})


def _log_trial(job: JobInfo, trial: optuna.Trial, finished: optuna.trial.FrozenTrial | None, seconds: float) -> None:
    """One line per trial: its number, the state it ended in, its objective and how long it took."""
    state = finished.state.name.lower() if finished is not None else "lost"
    values = finished.values if finished is not None else None
    objective = ", ".join(f"{v:.6g}" for v in values) if values else "-"
    log.info("study %s trial %d %s objective %s %.1f s", job.study_name, trial.number, state, objective, seconds)


def _tell(
    study: optuna.Study, trial: optuna.Trial, runner: TrialRunner, *args: Any, **kwargs: Any
) -> optuna.trial.FrozenTrial:
    """``study.tell``, tried again after a storage error: the outcome is known here, and a dropped connection
    (the database restarted, the connection killed) is replaced by the next attempt. Telling twice is safe: the
    final state is written only while the trial runs, and a finished claim never changes; one whose final state
    was written before the error (a read after it failed) is done."""
    for attempt in range(1, TELL_ATTEMPTS + 1):
        try:
            return study.tell(trial, *args, **kwargs)
        except DB_ERRORS as exc:
            if runner.recorded and runner.trial_id is not None:
                return runner.rdb.get_trial(runner.trial_id)
            if attempt == TELL_ATTEMPTS:
                raise
            log.warning("telling trial %d failed (%s); trying again", trial.number, exc)
            time.sleep(TELL_RETRY_SECONDS * attempt)
    raise AssertionError("unreachable")


@contextmanager
def _heartbeats(url: str, every: float, beat_once: Callable[[Session], None]) -> Iterator[None]:
    """Keep a claim (of a trial slot or a confirmation run) alive while a long epoch runs, so no other worker takes
    it or fails its trial as lost."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            try:
                with storage.session_scope(url) as session:
                    beat_once(session)
            except storage.StorageError as exc:
                log.warning("heartbeat failed: %s", exc)

    thread = threading.Thread(target=beat, name="mtl-tune-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM, and SIGHUP (a closed terminal) unless the worker's parent ignores it for it, end the worker like
    Ctrl-C: the running trial is told FAIL and its claim is released."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signums = [signal.SIGTERM]
    if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signums.append(signal.SIGHUP)
    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, earlier in previous.items():
            signal.signal(signum, earlier)
