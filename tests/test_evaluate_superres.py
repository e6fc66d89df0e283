"""evaluate's superres task: the instrument's degradation, the bicubic baseline, the head, and the stage end to end."""

from __future__ import annotations


import mlflow
import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from dlfm.sources import load_dataset
from dlfm.data.dataset import normalize_images
from dlfm.errors import ConfigError
from dlfm.evaluation import TASKS, EvaluateConfig, run_grid
from dlfm.evaluation import superres
from dlfm.models import create_encoder
from dlfm.models.heads import FrozenEncoder, SuperResolutionHead, SuperResolutionNet
from dlfm.simulation import PRESETS

from conftest import checksum

SR_METRICS = {"test/psnr", "test/ssim", "test/bicubic_psnr", "test/bicubic_ssim", "test/bicubic_affine_psnr",
              "test/bicubic_affine_ssim"}


@pytest.fixture(scope="module")
def sr_data(tiny_classification_dir):
    return TASKS["superres"].load(load_dataset(tiny_classification_dir), "tiny-sr")


def sr_config(**changes) -> EvaluateConfig:
    base = dict(tasks="superres", budgets="8", seeds="0", epochs=1, min_steps=3, batch_size=8, device="cpu", precision="fp32")
    return EvaluateConfig(**{**base, **changes})


def test_degradation_sums_4x4_blocks_and_adds_the_presets_noise_at_the_coarse_pixel():
    preset = PRESETS["model_ii"]
    flux = np.random.default_rng(0).uniform(0.0, 0.5, size=(3, 1, 64, 64)).astype(np.float32)  # e-/s per 0.101″ pixel
    coarse = superres.area_downsample(flux)
    assert coarse.shape == (3, 1, 16, 16)
    assert coarse[1, 0, 2, 3] == pytest.approx(flux[1, 0, 8:12, 12:16].sum(dtype=np.float64))  # flux conserved
    low = superres.low_res_instrument(preset.instrument)
    assert (low.num_pix, low.pixel_scale) == (16, pytest.approx(0.404))
    assert (low.exposure_time, low.read_noise, low.sky_brightness) == (565.0, 4.2, 22.35)  # the same camera
    observed = superres.degrade(flux, preset, np.random.default_rng(1))
    assert observed.shape == (3, 1, 16, 16) and observed.dtype == np.float32
    from lenstronomy.SimulationAPI.observation_api import SingleBand

    sigma = np.sqrt(SingleBand(**low.kwargs_single_band()).background_noise**2 + coarse / 2260.0)  # T = 4 × 565 s
    pulls = (observed - coarse) / sigma
    assert abs(pulls.mean()) < 0.15 and pulls.std() == pytest.approx(1.0, abs=0.1)  # 768 draws: sd of the sd ≈ 0.026


def test_the_background_poisson_model_scales_its_background_rms_with_the_pixel_side():
    preset = PRESETS["model_i"]  # 0.01 counts/s per 0.05″ pixel; sky-limited: rms ∝ √area = pixel side
    low = superres.low_res_instrument(preset.instrument)
    assert low.background_rms == pytest.approx(4 * preset.instrument.background_rms) and low.pixel_scale == pytest.approx(0.2)
    observed = superres.degrade(np.zeros((4, 1, 64, 64), np.float32), preset, np.random.default_rng(0))  # no source: background only
    assert observed.shape == (4, 1, 16, 16) and observed.std() == pytest.approx(low.background_rms, rel=0.1)


def test_degradation_is_deterministic_per_seed_and_split(tiny_classification_dir):
    dataset = load_dataset(tiny_classification_dir)
    flux, preset = dataset.images[dataset.indices("test")], PRESETS["model_ii"]
    first = superres.degrade_split(flux, preset, 1, "test")
    assert first.shape == (len(flux), 1, 64, 64) and first.min() >= 0.0 and first.max() <= 1.0
    assert np.array_equal(first, superres.degrade_split(flux, preset, 1, "test"))
    assert not np.array_equal(first, superres.degrade_split(flux, preset, 2, "test"))
    assert not np.array_equal(first, superres.degrade_split(flux, preset, 1, "train"))


def test_the_bicubic_baseline_is_skimage_on_the_same_arrays(sr_data):
    test = sr_data.test
    assert test.images.shape == test.targets.shape == (12, 1, 64, 64)
    # Input and target through one map (the low-resolution image's min-max), not each normalised on its own.
    blocks = superres.area_downsample(test.targets) / superres.SCALE**2
    assert test.images.min() >= 0.0 and test.images.max() <= 1.0 and blocks.mean() > 0.0
    assert not np.array_equal(test.targets, normalize_images(test.targets))  # not normalised on its own any more
    psnr = np.mean([peak_signal_noise_ratio(t[0].astype(np.float64), p[0].astype(np.float64), data_range=1.0)
                    for p, t in zip(test.images, test.targets)])
    ssim = np.mean([structural_similarity(t[0].astype(np.float64), p[0].astype(np.float64), data_range=1.0)
                    for p, t in zip(test.images, test.targets)])
    assert {k: v for k, v in sr_data.baseline.items() if "affine" not in k} == {
        "test/bicubic_psnr": pytest.approx(psnr, abs=1e-9), "test/bicubic_ssim": pytest.approx(ssim, abs=1e-9)}
    assert 10.0 < psnr < 60.0 and 0.0 < ssim < 1.0


@pytest.mark.parametrize("name", ["conv4", "resnet18", "vit_tiny_p4"])
def test_an_untrained_head_returns_the_bicubic_image(name):
    encoder = create_encoder(name)
    net = SuperResolutionNet(FrozenEncoder(encoder), SuperResolutionHead(encoder.levels))
    upsampled = torch.rand(2, 1, 64, 64)
    assert torch.equal(net(upsampled), upsampled)


def test_frozen_arm_leaves_the_encoder_unchanged_and_every_cell_logs_psnr_ssim_and_bicubic(sr_data):
    torch.manual_seed(0)
    pretrained = create_encoder("resnet18")  # BatchNorm: a train-mode forward would move its running statistics
    before = checksum(pretrained)
    results = run_grid(sr_config(arms="pretrained-frozen,random-frozen,pretrained-finetune"), {"superres": sr_data},
                       pretrained, torch.device("cpu"))
    assert checksum(pretrained) == before
    assert [r.cell.arm for r in results] == ["pretrained-frozen", "random-frozen", "pretrained-finetune"]
    for result in results:
        assert set(result.metrics) == SR_METRICS and np.isfinite(list(result.metrics.values())).all()
        assert result.metrics["test/bicubic_psnr"] == sr_data.baseline["test/bicubic_psnr"]
        assert result.metrics["test/psnr"] != result.metrics["test/bicubic_psnr"]  # the head trained
        assert result.predictions.shape == (12, 2)  # per-image PSNR and SSIM, not 64-px images
        assert result.predictions[:, 0].mean() == pytest.approx(result.metrics["test/psnr"], rel=1e-5)


def test_every_arm_runs_under_bf16_autocast_and_the_bicubic_base_stays_fp32(sr_data):
    from dlfm.training.runtime import autocast_for

    autocast = autocast_for(torch.device("cpu"), "bf16")
    encoder = create_encoder("conv4")
    net = SuperResolutionNet(FrozenEncoder(encoder), SuperResolutionHead(encoder.levels)).eval()
    upsampled = torch.rand(2, 1, 64, 64)
    with autocast():
        out = net(upsampled)
    assert out.dtype == torch.float32 and torch.equal(out, upsampled)  # a bf16 residual never rounds the bicubic image
    torch.manual_seed(0)
    results = run_grid(sr_config(precision="bf16"), {"superres": sr_data}, encoder, torch.device("cpu"), autocast=autocast)
    assert len(results) == 4 and all(np.isfinite(list(r.metrics.values())).all() for r in results)


def test_a_dataset_without_a_preset_is_refused_in_one_line(tiny_classification_dir):
    dataset = load_dataset(tiny_classification_dir)
    dataset.manifest = {k: v for k, v in dataset.manifest.items() if k != "preset"}
    with pytest.raises(ConfigError, match=r"^superres_dataset 'mine' names no simulation preset"):
        TASKS["superres"].load(dataset, "mine")


def test_images_that_do_not_divide_by_4_are_refused_naming_the_field(tiny_classification_dir):
    from dataclasses import replace

    dataset = load_dataset(tiny_classification_dir)
    odd = replace(dataset, images=np.zeros((len(dataset), 1, 30, 30), np.float32))
    with pytest.raises(ConfigError, match=r"^superres_dataset 'odd' has 30-px images, which do not divide by 4"):
        TASKS["superres"].load(odd, "odd")


def test_unknown_task_lists_superres():
    with pytest.raises(ConfigError, match=r"unknown task 'segmentation'; tasks are classification, regression, superres$"):
        EvaluateConfig(tasks="segmentation").validate()



@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
def test_the_evaluate_stage_runs_superres_end_to_end(production_version, tracking_uri, tiny_classification_dir):
    from dlfm.stages.evaluate import run_evaluate_stage

    config = sr_config(superres_dataset=str(tiny_classification_dir), budgets="4,all", seeds="0,1",
                       arms="pretrained-frozen,random-frozen", experiment_name="sr-test")
    summary = run_evaluate_stage(config)
    client = mlflow.MlflowClient()
    children = client.search_runs([client.get_run(summary["run_id"]).info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{summary['run_id']}'")
    assert len(children) == 2 * 2 * 2 and all(c.info.status == "FINISHED" for c in children)
    assert all(SR_METRICS <= set(c.data.metrics) and c.data.tags["dlfm.task"] == "superres" for c in children)
    parent = client.get_run(summary["run_id"])
    assert {"test/psnr/pretrained-frozen/4", "test/psnr/random-frozen/all"} <= set(parent.data.metrics)
    verdicts = {k: v for k, v in parent.data.tags.items() if k.startswith("dlfm.verdict.superres/")}
    assert {k for k in verdicts if k.endswith("-vs-random-frozen")} == {
        "dlfm.verdict.superres/4/pretrained-frozen-vs-random-frozen", "dlfm.verdict.superres/all/pretrained-frozen-vs-random-frozen"}
    # and each arm at each budget against the stronger baseline (bicubic, or bicubic with the train-fitted affine map)
    against = {k.rsplit("-vs-", 1)[1] for k in verdicts if not k.endswith("-vs-random-frozen")}
    assert len(verdicts) == 2 + 2 * 2 and len(against) == 1 and against <= {"bicubic", "bicubic-affine"}
    assert "## superres: test/psnr (higher is better)" in summary["markdown"]
    assert "test/bicubic_psnr:" in summary["markdown"] and "test/ssim:" in summary["markdown"]
    artifacts = {a.path for a in client.list_artifacts(summary["run_id"], "figures")}
    assert "figures/label_efficiency.png" in artifacts


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
def test_mlflow_run_evaluate_with_tasks_superres(production_version, tracking_uri, tmp_path, tiny_classification_dir):
    from conftest import mlflow_run

    params = {"tasks": "superres", "superres_dataset": tiny_classification_dir, "budgets": "4", "seeds": "0",
              "arms": "pretrained-frozen,scratch", "epochs": "1", "min_steps": "2", "batch_size": "8", "device": "cpu"}
    done = mlflow_run("evaluate", params, "sr-run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow.MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("sr-run").experiment_id])
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.data.params["superres_dataset"] == str(tiny_classification_dir)
    assert sorted(c.data.tags["dlfm.arm"] for c in children) == ["pretrained-frozen", "scratch"]
    assert all(SR_METRICS <= set(c.data.metrics) for c in children)


def test_the_affine_baseline_beats_plain_bicubic_on_simulated_data(tiny_classification_dir):
    """One global a·x + b fitted on train is free for any head, so it is a baseline of its own: on held-out model_ii
    images it scores above plain bicubic, and the verdicts compare heads with the stronger of the two."""
    from dlfm.simulation import SimulationConfig, simulate_dataset

    data = TASKS["superres"].load(load_dataset(tiny_classification_dir), "tiny-sr")
    a, b = superres.fit_affine(data.train.images, data.train.targets)
    assert (a, b) != (1.0, 0.0)
    assert data.baseline["test/bicubic_affine_psnr"] > data.baseline["test/bicubic_psnr"]
    x = np.random.default_rng(0).random((4, 1, 8, 8))
    assert superres.fit_affine(x, 2 * x + 0.5) == (pytest.approx(2.0), pytest.approx(0.5))  # recovers an exact map


def test_superres_verdicts_compare_each_arm_with_the_stronger_baseline():
    from dlfm.evaluation.grid import Cell, CellResult
    from dlfm.evaluation.summary import verdicts

    base = {"test/bicubic_psnr": 20.0, "test/bicubic_affine_psnr": 25.0}
    results = [CellResult(Cell("superres", 8, "pretrained-frozen", seed, 8, 8), {"test/psnr": 26.0 + seed * 0.1, **base}, [],
                          np.zeros(1)) for seed in (0, 1, 2)]
    [row] = verdicts(results)
    assert row["control"] == "bicubic-affine" and row["difference"] == pytest.approx(1.1) and row["verdict"] == "better"
