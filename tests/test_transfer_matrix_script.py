"""benchmarks/transfer_matrix.sh hands MIN_STEPS to every evaluate call (the fine-tune arms' loop; frozen arms fit a
converged probe), and PIXEL_SCALE and PRETRAIN_SEED to every pretraining call. Run with stand-in ``python`` and ``dlfm`` commands that
record their arguments, so no training happens."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from conftest import REPO

SCRIPT = REPO / "benchmarks" / "transfer_matrix.sh"


def script_calls(tmp_path, entry_point: str = "evaluate", **env) -> list[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for name in ("python", "dlfm"):  # `python -c …` prints the version the script promotes
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n[ "$1" = "-c" ] && echo 1\nexit 0\n')
        shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    environment = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": str(tmp_path / "out"),
                   "SOURCES": "pretrain_multi", "TARGETS": "model_i", **env}
    subprocess.run(["bash", str(SCRIPT)], env=environment, check=True, capture_output=True, timeout=60)
    return [line for line in log.read_text().splitlines() if f"pipelines/{entry_point}.py" in line]


@pytest.mark.parametrize("env, steps", [({}, "50"), ({"MIN_STEPS": "1000"}, "1000")])
def test_every_evaluate_call_gets_min_steps(tmp_path, env, steps):
    calls = script_calls(tmp_path, **env)
    assert calls and all(f"--min_steps {steps} " in call for call in calls)



@pytest.mark.parametrize("env, expected", [({}, "--pixel_scale auto .*--seed 0 "),
                                           ({"PIXEL_SCALE": "0.101", "PRETRAIN_SEED": "2"}, "--pixel_scale 0.101 .*--seed 2 ")])
def test_every_pretraining_call_gets_the_pixel_scale_and_seed(tmp_path, env, expected):
    import re

    calls = script_calls(tmp_path, "autoencoder", **env)
    assert calls and all(re.search(expected, call) for call in calls)
