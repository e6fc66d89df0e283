"""Device and precision resolved once (dlfm/training/runtime.py): auto picks bf16 only where the hardware has it."""

from __future__ import annotations

import math

import mlflow
import numpy as np
import pytest
import torch

from dlfm.errors import ConfigError
from dlfm.training import TrainConfig, fit
from dlfm.training.runtime import autocast_for, cpu_flags, cpu_has_bf16, make_runtime, resolve_precision

from test_training import CLASSES, random_splits

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)
SAPPHIRE_RAPIDS = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"})
COOPER_LAKE = frozenset({"avx2", "avx512f", "avx512_bf16"})
ICE_LAKE = frozenset({"avx2", "avx512f", "avx512_vnni"})  # AVX-512 without bf16: emulated, slower than fp32
ZEN2 = frozenset({"avx2", "fma"})


@pytest.mark.parametrize("flags, expected", [
    (SAPPHIRE_RAPIDS, "bf16"), (COOPER_LAKE, "bf16"), (ICE_LAKE, "fp32"), (ZEN2, "fp32"), (frozenset(), "fp32"),
])
def test_auto_on_a_cpu_picks_bf16_only_with_amx_or_avx512_bf16(flags, expected):
    assert resolve_precision("auto", CPU, flags=flags) == expected
    assert cpu_has_bf16(flags) == (expected == "bf16")


@pytest.mark.parametrize("flags", [SAPPHIRE_RAPIDS, ZEN2])
def test_explicit_precision_wins_on_a_cpu(flags):
    assert resolve_precision("fp32", CPU, flags=flags) == "fp32"
    assert resolve_precision("bf16", CPU, flags=flags) == "bf16"  # honoured (emulated) even without the flags


def test_auto_on_cuda_follows_the_gpu():
    assert resolve_precision("auto", CUDA, cuda_bf16=True) == "bf16"
    assert resolve_precision("auto", CUDA, cuda_bf16=False) == "fp16"  # pre-Ampere: fp16 with a GradScaler
    assert resolve_precision("fp32", CUDA, cuda_bf16=True) == "fp32"
    with pytest.raises(ConfigError, match="no bf16"):
        resolve_precision("bf16", CUDA, cuda_bf16=False)


def test_auto_on_mps_stays_fp32():
    assert resolve_precision("auto", torch.device("mps"), flags=SAPPHIRE_RAPIDS) == "fp32"


def test_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown precision 'fp8'"):
        resolve_precision("fp8", CPU, flags=ZEN2)
    with pytest.raises(ConfigError, match="unknown precision"):
        TrainConfig(objective="supervised", precision="half").validate()


def test_cpu_flags_are_read_from_the_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Xeon\nflags\t\t: fpu avx2 amx_bf16 avx512_bf16\n\nprocessor\t: 1\n")
    assert cpu_flags(str(cpuinfo)) == {"fpu", "avx2", "amx_bf16", "avx512_bf16"}
    assert cpu_flags(str(tmp_path / "absent")) == frozenset()


def test_autocast_runs_the_matmul_in_the_resolved_dtype():
    layer = torch.nn.Linear(4, 4)
    with autocast_for(CPU, "bf16")():
        assert layer(torch.rand(2, 4)).dtype == torch.bfloat16
    with autocast_for(CPU, "fp32")():
        assert layer(torch.rand(2, 4)).dtype == torch.float32


def test_runtime_resolves_the_precision_once():
    runtime = make_runtime("cpu", "bf16")
    assert runtime.amp_dtype == "bf16" and not runtime.scaler.is_enabled()
    assert make_runtime("cpu", "fp32").amp_dtype == "fp32"


@pytest.mark.parametrize("objective", ["multitask", "mae"])
def test_a_tiny_bf16_fit_on_the_cpu_gives_finite_metrics(objective):
    config = TrainConfig(objective=objective, encoder="conv4", epochs=2, batch_size=8, device="cpu", precision="bf16")
    result = fit(config, random_splits(), CLASSES, progress=False, runtime=make_runtime("cpu", "bf16"))
    assert all(math.isfinite(v) for epoch in result.history for v in epoch.values())
    assert all(math.isfinite(v) for v in result.final_metrics.values())
    assert result.val.embeddings.dtype == "float32"  # downstream code never sees bf16 arrays
    # and they are fp32 values, not bf16 ones widened: the probe reads what an fp32 encoder gives
    images = random_splits()["val"].images
    with torch.no_grad():
        fp32 = result.model.encoder.eval()(images).numpy()
        with autocast_for(CPU, "bf16")():
            bf16 = result.model.encoder(images).float().numpy()
    assert not np.allclose(fp32, bf16, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.val.embeddings, fp32, rtol=1e-4, atol=1e-5)
    assert next(result.model.parameters()).dtype == torch.float32  # autocast keeps fp32 master weights


def test_the_training_stage_tags_the_precision_it_resolved(tracking_uri, tiny_classification_dir):
    from dlfm.stages.train import run_training_stage

    config = TrainConfig(objective="supervised", dataset=str(tiny_classification_dir), encoder="conv4", epochs=1,
                         batch_size=8, device="cpu", precision="bf16")
    run = mlflow.MlflowClient().get_run(run_training_stage(config, progress=False)["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["precision"] == "bf16" and run.data.tags["dlfm.precision"] == "bf16"
    assert run.data.tags["dlfm.data_placement"] == "host"  # the CPU reads the splits where they are
    assert math.isfinite(run.data.metrics["val/macro_auc"])
