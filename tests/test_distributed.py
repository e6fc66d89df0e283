"""torchrun DDP on the CPU (gloo): one FINISHED run from rank 0, metrics averaged across ranks."""

from __future__ import annotations

import os
import socket

import mlflow
import pytest
import torch
import torch.multiprocessing as mp

from conftest import REPO, run_script
from dlfm.errors import ConfigError
from dlfm.training import distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _average_on_rank(rank: int, port: int, results) -> None:
    from dlfm.training.epoch import average_across_ranks
    from dlfm.training.runtime import Runtime

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    runtime = Runtime(torch.device("cpu"), None, None, "off", rank=rank, world_size=2)
    local = {"train/loss": 1.0 + 2.0 * rank, "train/loss_cls": 10.0 * (rank + 1)}
    results[rank] = average_across_ranks(local, runtime)
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
def test_metrics_are_the_mean_across_ranks():
    results = mp.Manager().dict()
    mp.spawn(_average_on_rank, args=(_free_port(), results), nprocs=2)
    assert results[0] == results[1] == {"train/loss": 2.0, "train/loss_cls": 15.0}


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
def test_two_gloo_processes_give_one_finished_run(tracking_uri, tiny_classification_dir, tmp_path):
    args = [str(REPO / "pipelines/multitask.py"), "--dataset", str(tiny_classification_dir), "--encoder", "conv4",
            "--epochs", "2", "--batch_size", "4", "--device", "cpu", "--nproc", "2", "--experiment_name", "ddp"]
    result = run_script(args, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow.MlflowClient()
    [run] = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["dlfm.world_size"] == "2" and run.data.params["nproc"] == "2"
    history = client.get_metric_history(run.info.run_id, "train/loss_multitask")
    assert [m.step for m in history] == [1, 2]
    assert len(client.search_model_versions("name='dlfm-encoder'")) == 1


def test_more_processes_than_gpus_is_refused():
    with pytest.raises(ConfigError, match="CUDA device"):
        distributed.check_nproc(torch.cuda.device_count() + 1, "cuda")
