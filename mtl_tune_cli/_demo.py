"""The demo study ``mtl-tune serve --demo`` launches on a database without studies."""

from __future__ import annotations

from mtl_tune_cli._common import console

DEMO_STUDY = "demo-gradnorm-toy"
#: The demo's strategies: loss-based ones and two aggregators whose step stays within about twice equal's (a cvxpy
#: solve per step, as CAGrad and Nash-MTL make, would slow a first look down).
DEMO_STRATEGIES = ["equal", "static", "uncertainty", "gradnorm", "dwa", "famo", "imtl-l", "upgrad", "pcgrad"]


def launch_demo(url: str) -> None:
    """A first start gets a study to watch; later starts reuse the database as it is."""
    import storage
    from tuner.study import StudySpec, create_study

    with storage.session_scope(url) as session:
        if storage.list_jobs(session):
            return
    spec = StudySpec(
        name=DEMO_STUDY,
        problem="gradnorm-toy",
        n_trials=40,
        epochs=10,
        sampler="tpe",
        space={"strategy": DEMO_STRATEGIES},
    )
    create_study(url, spec, source="cli")
    console.print(f"launched the demo study {DEMO_STUDY} (gradnorm-toy, 40 trials)")
