"""The benchmarks that exercise the training step still run: a few steps each on the CPU (timings are not checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={"PYTHONPATH": str(ROOT), "COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_gpu_check_s_cpu_smoke_run_reports_gradnorm_s_error_from_the_views() -> None:
    out = _bench("gpu_check.py", "--device", "cpu", "--steps", "2", "--warmup", "1", "--problems", "toy10")
    gradnorm = next(line for line in out.splitlines() if "│ gradnorm " in line)
    cells = [cell.strip() for cell in gradnorm.split("│")[1:-1]]
    assert cells[-1] == "views", gradnorm
    assert float(cells[-2]) < 1e-5, gradnorm  # the relative error against one autograd call per task


def test_the_step_time_benchmark_times_every_strategy_asked_for() -> None:
    args = ("--problems", "toy2", "--strategies", "gradnorm,upgrad", "--rounds", "1", "--steps", "1", "--warmup", "1")
    out = _bench("strategy_step_time.py", *args, "--markdown")
    rows = [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ") and "x (" in line]
    assert rows == ["equal", "gradnorm", "upgrad"], out
