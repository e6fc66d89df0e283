"""One encoder across instruments (issue 22): the pretrain_multi corpus on disk and the loop that batches each size apart."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dlfm.corpora import DEFAULT_MIX, MULTI_CORPORA, apportion, parse_mix
from dlfm.errors import ConfigError, DatasetError
from dlfm.simulation import PRESETS
from dlfm.simulation.multi import MultiCorpusConfig
from dlfm.training import TrainConfig, fit
from dlfm.training.batches import batch_indices, group_batches
from dlfm.training.context import MultiSizeSplit, SplitTensors


@pytest.fixture(scope="module")
def tiny_multi_dir(tmp_path_factory):
    """pretrain_multi with 3 images per instrument and split (Model I at 150 px is the slow one to render)."""
    from dlfm.simulation.multi import simulate_multi_corpus

    config = MultiCorpusConfig(n_train=9, n_val=9, n_test=9, seed=1000)
    return simulate_multi_corpus(config, out_dir=tmp_path_factory.mktemp("data"), workers=1, progress=False), config


def test_default_mix_is_equal_thirds_of_every_split_and_weights_are_shares():
    assert parse_mix(DEFAULT_MIX, "pretrain_multi") == pytest.approx({name: 1 / 3 for name in MULTI_CORPORA["pretrain_multi"]})
    assert parse_mix("model_ii=3,model_i=1,model_iii=0", "pretrain_multi") == {"model_i": 0.25, "model_ii": 0.75}
    assert apportion(10, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}) == {"a": 4, "b": 3, "c": 3}
    sizes = MultiCorpusConfig(n_train=100, n_val=10, n_test=10, mix="model_i=1,model_ii=2,model_iii=1").part_configs()
    assert {name: config.n_train for name, config in sizes.items()} == {"model_i": 25, "model_ii": 50, "model_iii": 25}
    assert {config.preset for config in sizes.values()} == set(MULTI_CORPORA["pretrain_multi"].values())
    assert len({config.seed for config in sizes.values()}) == 3  # no two instruments share a lens draw


@pytest.mark.parametrize(("mix", "message"), [
    ("model_iv=1", "unknown instrument 'model_iv' in mix"),
    ("model_i=-1", "mix weight of model_i must be a non-negative number"),
    ("model_i=0", "gives no instrument a positive weight"),
])
def test_a_bad_mix_is_one_line_before_any_work(mix, message):
    with pytest.raises(ConfigError, match=message) as info:
        TrainConfig(objective="autoencoder", pretrain_dataset="pretrain_multi", pretrain_mix=mix).validate()
    assert "\n" not in str(info.value)


def test_too_few_images_for_an_instruments_classes_is_refused():
    with pytest.raises(ConfigError, match="model_i gets 2 of the 6 val images"):
        MultiCorpusConfig(n_train=9, n_val=6, n_test=9).validate()


def test_the_corpus_keeps_each_instrument_at_its_native_size_with_its_label(tiny_multi_dir):
    from dlfm.sources import load_dataset
    from dlfm.data import split_tensors

    path, config = tiny_multi_dir
    dataset = load_dataset(path)
    expected = {name: PRESETS[preset].image_size for name, preset in MULTI_CORPORA["pretrain_multi"].items()}
    assert dict(zip(dataset.parts, dataset.image_sizes)) == expected == {"model_i": 150, "model_ii": 64, "model_iii": 64}
    manifest = json.loads((path / "manifest.json").read_text())
    assert [entry["file"] for entry in manifest["image_sets"]] == [f"images_{name}.npy" for name in expected]
    assert set(manifest["files"]) == {*(f"images_{name}.npy" for name in expected), "labels.npy", "params.csv"}
    assert manifest["config_digest"] == config.digest() and manifest["split_sizes"] == {"train": 9, "val": 9, "test": 9}
    params = dataset.get_params("train")
    assert params["instrument"].tolist() == ["model_i"] * 3 + ["model_ii"] * 3 + ["model_iii"] * 3
    train = split_tensors(dataset, "train")
    assert isinstance(train, MultiSizeSplit) and train.names == tuple(expected)
    assert [tuple(group.images.shape) for group in train.groups] == [(3, 1, 150, 150), (3, 1, 64, 64), (3, 1, 64, 64)]
    assert train.labels.tolist() == dataset.get_labels("train").tolist()
    assert all(float(group.images.max()) == pytest.approx(1.0) for group in train.groups)  # min-max normalised per image


def test_the_corpus_is_cached_by_digest_and_a_changed_byte_is_refused(tiny_multi_dir, tmp_path):
    import shutil

    from dlfm.sources import load_dataset
    from dlfm.simulation.multi import simulate_multi_corpus

    path, config = tiny_multi_dir
    assert simulate_multi_corpus(config, out_dir=path.parent, workers=1, progress=False) == path  # reused, not rebuilt
    copy = tmp_path / path.name
    shutil.copytree(path, copy)
    images = copy / "images_model_iii.npy"
    raw = bytearray(images.read_bytes())
    raw[-1] ^= 0xFF
    images.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=r"images_model_iii.npy sha256 mismatch"):
        load_dataset(copy)
    with pytest.raises(DatasetError, match="holds images of sizes"):
        load_dataset(path).get_images("train")


def test_batches_never_mix_sizes_cover_every_image_once_and_follow_the_seed():
    split = MultiSizeSplit((SplitTensors(torch.zeros(7, 1, 8, 8), torch.zeros(7, dtype=torch.long)),
                            SplitTensors(torch.zeros(5, 1, 12, 12), torch.zeros(5, dtype=torch.long))), ("a", "b"))
    order = group_batches(split, 3, torch.Generator().manual_seed(0))
    assert sorted(len(index) for _, index in order) == [1, 2, 3, 3, 3]
    for group in (0, 1):
        seen = torch.cat([index for g, index in order if g == group]).sort().values
        assert seen.tolist() == list(range(len(split.groups[group].labels)))
    again = group_batches(split, 3, torch.Generator().manual_seed(0))
    assert [(g, index.tolist()) for g, index in order] == [(g, index.tolist()) for g, index in again]
    groups_by_seed = {tuple(g for g, _ in group_batches(split, 3, torch.Generator().manual_seed(seed))) for seed in range(6)}
    assert len(groups_by_seed) > 1  # the order of sizes is shuffled too, not all of one size first
    single = SplitTensors(torch.zeros(7, 1, 8, 8), torch.zeros(7, dtype=torch.long))
    plain = batch_indices(7, 3, torch.Generator().manual_seed(0))
    assert [index.tolist() for _, index in group_batches(single, 3, torch.Generator().manual_seed(0))] == [i.tolist() for i in plain]


def _two_size_splits(sizes=(32, 48), n=6):
    generator = torch.Generator().manual_seed(0)

    def split():
        return MultiSizeSplit(tuple(SplitTensors(torch.rand(n, 1, s, s, generator=generator), torch.arange(n) % 3)
                                    for s in sizes), tuple(f"size{s}" for s in sizes))

    return {"train": split(), "val": split(), "test": split()}


@pytest.mark.parametrize(("objective", "encoder"), [("autoencoder", "conv4"), ("mae", "conv4"),
                                                    # the ViT cases take 15-30 s each on 2 cores: the slow lane
                                                    pytest.param("mae", "vit_tiny_p4", marks=pytest.mark.slow),
                                                    pytest.param("autoencoder", "vit_tiny_p4", marks=pytest.mark.slow)])
def test_fit_trains_on_two_image_sizes_with_the_decoder_and_masks_following_each_batch(objective, encoder):
    config = TrainConfig(objective=objective, encoder=encoder, epochs=1, batch_size=4, device="cpu", precision="fp32",
                         patch_size=4 if encoder.startswith("vit") else 8)
    result = fit(config, _two_size_splits(), ("no_sub", "cdm", "axion"), progress=False)
    recon = get_recon_metric(result.final_metrics)
    assert np.isfinite(result.final_metrics[recon]) and result.final_metrics[f"{recon}_mean_image"] > 0
    assert result.val.embeddings.shape == (12, result.model.encoder.embed_dim)  # both sizes embedded, in group order
    with torch.no_grad():
        for size in (32, 48):
            assert result.model(torch.rand(2, 1, size, size)).reconstruction.shape == (2, 1, size, size)


def get_recon_metric(metrics: dict) -> str:
    return next(name for name in ("val/recon_mse", "val/masked_mse", "val/masked_norm_mse") if name in metrics)


def test_a_vit_refuses_a_size_that_is_no_whole_number_of_tokens():
    from dlfm.models import create_encoder

    create_encoder("vit_tiny_p4").check_image_size(64)
    with pytest.raises(ConfigError, match="150 px is no multiple of 4") as info:
        create_encoder("vit_tiny_p4").check_image_size(150)
    assert "\n" not in str(info.value) and "pretrain_mix" in str(info.value)
    with pytest.raises(ConfigError, match="needs images of at least 8 px"):
        create_encoder("vit_tiny_p4").check_image_size(4)


@pytest.mark.slow
def test_autoencoder_stage_pretrains_on_pretrain_multi_and_registers_its_decoder(tracking_uri, tmp_path, tiny_classification_dir):
    import mlflow

    from dlfm.stages.train import run_training_stage
    from dlfm.tracking import registry

    config = TrainConfig(objective="autoencoder", encoder="conv4", dataset=str(tiny_classification_dir),
                         pretrain_dataset="pretrain_multi", pretrain_n_train=9, pretrain_n_val=9, pretrain_n_test=9,
                         epochs=1, batch_size=4, device="cpu", precision="fp32", experiment_name="multi-test")
    summary = run_training_stage(config, progress=False)
    run = mlflow.MlflowClient().get_run(summary["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["pretrain_mix"] == DEFAULT_MIX
    # pixel_scale=auto: the instruments' scales differ, so every image is read on the coarsest grid, Euclid's 0.101
    assert (run.data.params["pixel_scale"], run.data.params["pixel_scale_resolved"]) == ("auto", "0.101")
    assert run.data.tags["dlfm.grid.pretrain_dataset"].startswith("model_i: 74 px at 0.101 arcsec/px (resampled from 150 px")
    assert registry.load_registered_encoder(f"models:/dlfm-encoder/{summary['version']}").pixel_scale == 0.101
    assert np.isfinite(summary["metrics"]["test/recon_mse"]) and "test/probe_macro_auc" in summary["metrics"]
    reconstructor = registry.load_registered_reconstructor(f"models:/dlfm-encoder/{summary['version']}")
    assert reconstructor is not None and reconstructor.objective == "autoencoder"
    assert (tmp_path / "data").is_dir() and any(p.name.startswith("pretrain_multi-") for p in (tmp_path / "data").iterdir())


def test_pixel_scale_reads_every_instrument_on_one_grid(tiny_multi_dir):
    from dlfm.data import split_tensors
    from dlfm.data.resample import at_pixel_scale, describe_grid
    from dlfm.sources import load_dataset

    dataset = load_dataset(tiny_multi_dir[0])
    read = at_pixel_scale(dataset, 0.101)  # Euclid's grid: Model I 150 px at 0.05 -> 74, Model III 64 px at 0.08 -> 51
    assert dict(zip(read.parts, read.image_sizes)) == {"model_i": 74, "model_ii": 64, "model_iii": 51}
    assert [tuple(group.images.shape[1:]) for group in split_tensors(read, "train").groups] == [(1, 74, 74), (1, 64, 64), (1, 51, 51)]
    assert read.get_labels("train").tolist() == dataset.get_labels("train").tolist()
    assert describe_grid(read).startswith("model_i: 74 px at 0.101 arcsec/px (resampled from 150 px at 0.05); "
                                          "model_ii: 64 px at 0.101 arcsec/px (native grid)")
    assert dataset.image_sizes == (150, 64, 64)  # the corpus itself is unchanged


@pytest.mark.slow
def test_an_encoder_pretrained_at_one_pixel_scale_is_evaluated_at_it(tracking_uri, tmp_path, tiny_classification_dir):
    import mlflow

    from dlfm.evaluation import EvaluateConfig
    from dlfm.stages.evaluate import run_evaluate_stage
    from dlfm.stages.train import run_training_stage
    from dlfm.tracking import registry

    config = TrainConfig(objective="autoencoder", encoder="conv4", dataset=str(tiny_classification_dir),
                         pretrain_dataset="pretrain_multi", pretrain_n_train=9, pretrain_n_val=9, pretrain_n_test=9,
                         pixel_scale=0.101, epochs=1, batch_size=4, device="cpu", precision="fp32", experiment_name="multi-test")
    summary = run_training_stage(config, progress=False)
    client = mlflow.MlflowClient()
    tags = client.get_run(summary["run_id"]).data.tags
    assert tags["dlfm.grid.pretrain_dataset"].startswith("model_i: 74 px at 0.101 arcsec/px (resampled from 150 px")
    assert registry.load_registered_encoder(f"models:/dlfm-encoder/{summary['version']}").pixel_scale == 0.101

    evaluated = run_evaluate_stage(EvaluateConfig(encoder_uri=f"models:/dlfm-encoder/{summary['version']}",
                                                  tasks="classification", classification_dataset="model_i", sim_n_train=9,
                                                  sim_n_val=3, sim_n_test=9, budgets="all", seeds="0",
                                                  arms="pretrained-frozen,random-frozen", device="cpu", experiment_name="multi-test"))
    parent = client.get_run(evaluated["run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["dlfm.grid.classification"] == "74 px at 0.101 arcsec/px (resampled from 150 px at 0.05)"


@pytest.mark.slow
def test_a_vit_on_pretrain_multi_with_model_i_is_one_error_line(tracking_uri, tiny_classification_dir):
    from dlfm.stages.train import run_training_stage

    config = TrainConfig(objective="mae", encoder="vit_tiny", patch_size=8, dataset=str(tiny_classification_dir),
                         pretrain_dataset="pretrain_multi", pretrain_n_train=9, pretrain_n_val=9, pretrain_n_test=9,
                         epochs=1, device="cpu", experiment_name="multi-test")
    with pytest.raises(ConfigError, match="150 px is no multiple of 8"):  # and at 0.101 (auto) 74 px is none either
        run_training_stage(config, progress=False)
    without_model_i = TrainConfig(**{**config.to_dict(), "pretrain_mix": "model_i=0,model_ii=1,model_iii=1"})
    from dlfm.stages.train import check_corpus_sizes

    check_corpus_sizes(without_model_i)  # 64-px instruments only: a whole number of 8-px tokens
    # auto would read Model III at 0.101 (51 px, no whole number of tokens): it keeps native grids instead
    with pytest.raises(ConfigError, match="51 px is no multiple of 8"):
        check_corpus_sizes(TrainConfig(**{**without_model_i.to_dict(), "pixel_scale": 0.101}))


@pytest.mark.slow  # a real `mlflow run` process
def test_mlflow_run_autoencoder_pretrains_on_pretrain_multi(tracking_uri, tmp_path, tiny_classification_dir):
    import os

    import mlflow

    from conftest import REPO, run_script

    result = run_script(["-m", "mlflow", "run", str(REPO), "-e", "autoencoder", "--env-manager", "local",
                         "--experiment-name", "multi-run", "-P", f"dataset={tiny_classification_dir}",
                         "-P", "pretrain_dataset=pretrain_multi", "-P", "pretrain_mix=model_i=1,model_ii=1,model_iii=1",
                         "-P", "pretrain_n_train=9", "-P", "pretrain_n_val=9", "-P", "pretrain_n_test=9",
                         "-P", "encoder=conv4", "-P", "epochs=1", "-P", "batch_size=4", "-P", "device=cpu"], cwd=tmp_path,
                        env_extra={"PATH": f"{REPO / '.venv' / 'bin'}:{os.path.dirname(__import__('sys').executable)}:"
                                           + os.environ["PATH"]})
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow.MlflowClient()
    [run] = [r for r in client.search_runs([client.get_experiment_by_name("multi-run").experiment_id])
             if r.data.tags.get("dlfm.stage") == "autoencoder"]
    assert run.info.status == "FINISHED" and run.data.params["pretrain_dataset"] == "pretrain_multi"
    pretraining = [i.dataset for i in run.inputs.dataset_inputs if any(t.value == "pretraining" for t in i.tags)]
    assert len(pretraining) == 1 and "pretrain_multi-" in pretraining[0].source


@pytest.mark.slow  # a real process: the entry point's one-line error
def test_a_vit_on_model_i_sizes_is_one_dlfm_error_line_through_the_script(tracking_uri, tmp_path, tiny_classification_dir):
    from conftest import REPO, run_script

    result = run_script([str(REPO / "pipelines/mae.py"), "--dataset", str(tiny_classification_dir), "--encoder", "vit_tiny_p4",
                         "--patch_size", "4", "--pretrain_dataset", "pretrain_multi", "--pretrain_n_train", "9",
                         "--pretrain_n_val", "9", "--pretrain_n_test", "9", "--epochs", "1", "--device", "cpu"], cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("dlfm: error:")]
    assert len(errors) == 1 and "150 px is no multiple of 4" in errors[0], result.stderr[-2000:]
    assert not (tmp_path / "data").exists()  # refused before any image is simulated
