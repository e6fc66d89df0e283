"""benchmarks/gpu_report.sh --cpu-smoke: the one-call GPU report's whole flow at toy size on the CPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("## Commit and hardware", "## Parts", "## Commands", "## Throughput", "## Does ViT-MAE learn?",
            "## The user's multitask command",
            "## Evaluate grid", "## Transfer matrix: one row", "## Anchor side by side")
PARTS = ("throughput", "throughput-mae", "throughput-vit", "vit-mae-learns", "multitask", "multitask-gpu-size", "grid-data", "grid-w1", "grid-w2",
         "transfer-row", "anchor", "multitask-compile")


@pytest.mark.slow  # a dozen mlflow runs: minutes on two cores
def test_the_cpu_smoke_run_writes_every_section_and_a_status_per_part(tmp_path):
    env = {key: value for key, value in os.environ.items()
           if key not in ("OUT", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")}
    # ~4 min on two idle cores; the budget leaves room for a box shared with other jobs
    env.update(PYTHONPATH=str(REPO), PATH=f"{Path(sys.executable).parent}:{env['PATH']}", GPU_REPORT_BUDGET="1500")
    done = subprocess.run(["bash", "benchmarks/gpu_report.sh", "--cpu-smoke", "--out", str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    reports = list((tmp_path / "docs" / "results").glob("gpu-*.md"))
    assert len(reports) == 1 and re.fullmatch(r"gpu-\d{4}-\d{2}-\d{2}\.md", reports[0].name)
    text = reports[0].read_text()
    positions = [text.find(section) for section in SECTIONS]
    assert -1 not in positions and positions == sorted(positions), positions  # every section, in order
    assert "- hardware: " in text and "- commit: " in text
    parts = text[text.find("## Parts"):text.find("## Commands")]
    statuses = dict(re.findall(r"^\| ([\w-]+) \| (ok|timed out at \d+ s|failed \(exit \d+[^|]*|skipped: [^|]+) \|", parts, re.M))
    assert set(statuses) == set(PARTS), statuses  # each part reports a status, none is lost
    for part in ("throughput", "throughput-mae", "vit-mae-learns", "multitask", "grid-data", "grid-w1", "grid-w2"):
        assert statuses[part] == "ok", (part, statuses[part], (tmp_path / "logs" / f"{part}.log").read_text()[-2000:])
    assert "| gpu-report-multitask | FINISHED |" in text
    assert re.search(r"^\| 2 \| ok \| \d+ \| (\d+) of \1 \| FINISHED \|", text, re.M)  # workers=2 finished every cell
    assert "[multitask] mlflow run . -e multitask" in text  # the commands are in the report


def test_an_unknown_argument_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run(["bash", "benchmarks/gpu_report.sh", "--bogus"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().startswith("dlfm: error:") and len(done.stderr.splitlines()) == 1
