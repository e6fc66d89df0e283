"""benchmarks/gpu_throughput.py runs: its CPU smoke mode prints one row per objective and rung."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_gpu_benchmark_smoke_mode_runs_on_the_cpu(tmp_path):
    out = tmp_path / "rows.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "benchmarks/gpu_throughput.py", "--device", "cpu", "--tiny", "--objectives",
                           "multitask", "--no-compile", "--json", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [row["rung"] for row in rows] == ["before", "+placement", "+no-sync", "+channels_last", "+no-sync", "+channels_last"]
    assert [row["objective"] for row in rows[4:]] == ["mae/vit_tiny"] * 2  # the ViT-MAE rung (issue 27)
    assert all(row["img_per_s"] > 0 and row["placement"] == "host" for row in rows)
    assert "| multitask | 4 | +no-sync | host |" in done.stdout
    assert "evaluate grid: skipped" in done.stdout
