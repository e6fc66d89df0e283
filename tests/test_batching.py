"""batch_size=auto and channels_last: the CPU keeps today's batch; CUDA gets the measured table's."""

from __future__ import annotations

import mlflow
import pytest
import torch

from dlfm.errors import ConfigError
from dlfm.models import list_encoders
from dlfm.training.batching import CPU_BATCH, auto_batch_size, channels_last_pays
from dlfm.training.config import TrainConfig
from dlfm.training.context import SplitTensors


@pytest.mark.parametrize("encoder", list_encoders())
@pytest.mark.parametrize("side", [64, 150])
def test_auto_off_cuda_is_the_old_default_for_every_encoder(encoder, side):
    config = TrainConfig(objective="multitask", encoder=encoder)
    train = SplitTensors(torch.zeros(20000, 1, side, side), torch.zeros(20000, dtype=torch.long))
    for device in ("cpu", "mps"):
        assert config.with_batch_resolved(device, train).batch_size == CPU_BATCH == 64


def test_auto_on_cuda_follows_the_table_the_image_and_the_data():
    assert auto_batch_size("cnn", 64, "cuda", 20000) == 1024  # measured: 1024 keeps the card busy, 256 does not
    assert auto_batch_size("vit", 64, "cuda", 20000) == 256  # measured: 512 bought nothing over 256
    assert auto_batch_size("cnn", 150, "cuda", 20000) == 128  # 1024 x (64/150)^2 = 186: the same activation memory
    assert auto_batch_size("cnn", 64, "cuda", 15000) == 512  # at least 16 steps an epoch
    assert auto_batch_size("cnn", 64, "cuda", 1500) == 64  # the demo's dataset: never below the CPU batch


def test_channels_last_only_where_measured_to_pay():
    assert channels_last_pays("cpu", 64) and channels_last_pays("cpu", 0)
    assert not channels_last_pays("cuda", 256) and channels_last_pays("cuda", 1024)
    assert not channels_last_pays("mps", 4096)


def test_batch_size_param_is_a_number_or_auto():
    assert TrainConfig(objective="multitask").batch_size == "auto"
    assert TrainConfig(objective="multitask", batch_size="256").batch_size == 256  # params arrive as strings
    TrainConfig(objective="multitask").validate()
    for bad in ("abc", "0", 0, -4):
        with pytest.raises(ConfigError, match="batch_size must be a positive integer or auto"):
            TrainConfig(objective="multitask", batch_size=bad).validate()


def test_a_cpu_run_logs_auto_and_the_batch_it_resolved_to(tracking_uri, tiny_classification_dir):
    from dlfm.stages.train import run_training_stage

    config = TrainConfig(objective="supervised", dataset=str(tiny_classification_dir), encoder="conv4", epochs=1, device="cpu")
    params = mlflow.MlflowClient().get_run(run_training_stage(config, progress=False)["run_id"]).data.params
    assert params["batch_size"] == "auto" and params["batch_size_resolved"] == "64"
