"""The demo study ``mtl-tune serve --demo`` launches on a database without studies.

It has to show, within a few minutes on a laptop's CPU, what tuning is for: a multi-task problem where the default
configuration (the study's baseline) is clearly beaten on held-out data, importances that single out the knobs that
matter, and curves worth watching. multi-digits trained for 4 epochs instead of its 10 is such a problem: its
default learning rates suit the longer budget, so at 4 epochs the baseline is under-trained and the study finds
learning rates several times larger (on the test split, accuracy of the left and right digits 0.76 and 0.79 for the
baseline, 0.91 and 0.89 for the best trial; about two minutes for the 30 trials with one worker on two busy cores).
The median pruner stops the hopeless trials while leaving about half complete, enough for the importances to put
the learning rates far above the choice of strategy. The same study from the command line:

    mtl-tune study run --problem multi-digits --epochs 4 --trials 30 --pruner median \
        --space demo-space.yaml --workers 1        # demo-space.yaml: strategy: [equal, uncertainty, ...]
"""

from __future__ import annotations

from mtl_tune_cli._common import console

DEMO_STUDY = "demo-multi-digits"
DEMO_PROBLEM = "multi-digits"
DEMO_EPOCHS = 4
DEMO_TRIALS = 30
DEMO_PRUNER = "median"
#: Four loss-based strategies and one gradient aggregator (UPGrad, whose step costs about twice equal's): few enough
#: for 30 trials to show which works. Learning rates keep the problem's default ranges, a decade either side of its
#: defaults, sampled log-uniformly.
DEMO_STRATEGIES = ["equal", "uncertainty", "gradnorm", "dwa", "upgrad"]


def launch_demo(url: str) -> None:
    """A first start gets a study to watch; later starts reuse the database as it is."""
    import storage
    from tuner.study import StudySpec, create_study

    with storage.session_scope(url) as session:
        if storage.list_jobs(session):
            return
    spec = StudySpec(
        name=DEMO_STUDY,
        problem=DEMO_PROBLEM,
        n_trials=DEMO_TRIALS,
        epochs=DEMO_EPOCHS,
        sampler="tpe",
        pruner=DEMO_PRUNER,
        space={"strategy": DEMO_STRATEGIES},
    )
    create_study(url, spec, source="cli")
    console.print(
        f"launched the demo study {DEMO_STUDY} ({DEMO_PROBLEM}, {DEMO_TRIALS} trials of {DEMO_EPOCHS} epochs)"
    )
