"""Issues 12 and 21: the objectives table, the masked-image objective (SparK with CNNs, MAE with ViTs), the stride-8
decoder and the pretraining corpus."""

from __future__ import annotations

import hashlib
import os

import mlflow
import numpy as np
import pytest
import torch

from conftest import REPO, run_script
from dlfm.errors import ConfigError
from dlfm.models import build_model, create_encoder, list_encoders
from dlfm.models.encoders import RESNET_STEMS
from dlfm.models.encoders import ENCODERS
from dlfm.models.heads import DECODE_REDUCTION, Decoder, MaskedTokenDecoder, PatchMasker
from dlfm.objectives import MASKINGS, OBJECTIVES, PARTS
from dlfm.training import TrainConfig
from dlfm.training.objectives import Objective


@pytest.fixture(scope="module")
def tiny_pretrain_dir(tmp_path_factory):
    """A tiny pretrain corpus, simulated with its own seed (the model_ii fixture uses seed 1)."""
    from dlfm.simulation import SimulationConfig, simulate_dataset

    out = tmp_path_factory.mktemp("corpus")
    return simulate_dataset(SimulationConfig(preset="pretrain", n_train=24, n_val=12, n_test=12, seed=1000),
                            out_dir=out, workers=1, progress=False)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_each_table_row_builds_its_parts_and_logs_its_losses(name):
    spec = OBJECTIVES[name]
    model, objective = build_model(name, "conv4", 3), Objective(name)
    assert (model.head is not None) == spec.classifies and (model.decoder is not None) == spec.decodes
    images, labels = torch.rand(4, 1, 64, 64), torch.tensor([0, 1, 2, 0])
    mask = objective.make_mask(images, torch.Generator().manual_seed(0))
    assert (mask is not None) == spec.masks_input
    loss, parts = objective(model(images, mask), images, labels, mask)
    assert set(parts) == {PARTS[part] for part in spec.parts}
    assert torch.isfinite(loss)
    assert spec.monitor[1] in ("min", "max") and spec.monitor[0].startswith("val/")


@pytest.mark.parametrize("ratio,patch", [(0.6, 8), (0.75, 8), (0.5, 4)])
def test_mask_hides_exactly_the_requested_ratio_of_whole_patches(ratio, patch):
    images = torch.rand(16, 1, 64, 64)
    mask = PatchMasker(patch, ratio)(images, torch.Generator().manual_seed(0))
    n_patches = (64 // patch) ** 2
    per_image = mask.mean(dim=(1, 2, 3))
    assert torch.allclose(per_image, torch.full((16,), round(n_patches * ratio) / n_patches))
    cells = mask.unfold(2, patch, patch).unfold(3, patch, patch)  # (B, 1, rows, cols, patch, patch)
    assert torch.equal(cells.amax(dim=(-1, -2)), cells.amin(dim=(-1, -2)))  # every cell all hidden or all visible
    assert not torch.equal(mask[0], mask[1])  # a fresh mask per image


def test_masked_loss_ignores_visible_patches():
    model, objective = build_model("mae", "conv4", 3), Objective("mae", patch_size=8, mask_ratio=0.6)
    images, labels = torch.rand(2, 1, 64, 64), torch.zeros(2, dtype=torch.long)
    mask = objective.make_mask(images, torch.Generator().manual_seed(0))
    output = model(images, mask)
    loss, _ = objective(output, images, labels, mask)
    visible_changed = output._replace(reconstruction=output.reconstruction + 5.0 * (1 - mask))
    assert torch.equal(objective(visible_changed, images, labels, mask)[0], loss)
    hidden_changed = output._replace(reconstruction=output.reconstruction + 5.0 * mask)
    assert objective(hidden_changed, images, labels, mask)[0] > loss


def test_reconstruction_starts_at_the_mean_image_without_input_shortcut():
    model = build_model("autoencoder", "conv4", 3).eval()
    mean_image = torch.rand(1, 1, 64, 64)
    model.decoder.set_baseline(mean_image)
    with torch.no_grad():  # the residual's last layer starts at zero: exactly the mean-image predictor
        assert torch.equal(model(torch.rand(2, 1, 64, 64)).reconstruction, mean_image.expand(2, 1, 64, 64))


def test_masked_input_hides_the_pixels_from_the_encoder():
    model = build_model("mae", "conv4", 3).eval()
    torch.nn.init.normal_(model.decoder.net[-1].weight)  # a trained-like residual, not the zero start
    images = torch.rand(2, 1, 64, 64)
    mask = PatchMasker(8, 0.6)(images, torch.Generator().manual_seed(1))
    noisy = images + 10.0 * mask * torch.rand_like(images)  # differs from `images` on hidden pixels only
    with torch.no_grad():
        assert torch.equal(model(images, mask).reconstruction, model(noisy, mask).reconstruction)


@pytest.mark.parametrize("encoder,kwargs", [("conv4", {}), ("vit_tiny", {}), ("vit_tiny_p4", {})]
                         + [("resnet18", {"stem": stem}) for stem in RESNET_STEMS])
def test_decoders_read_a_stride_8_map(encoder, kwargs):
    assert encoder in list_encoders()
    model = build_model("autoencoder", encoder, 3, kwargs).eval()
    assert model.decoder.reduction == DECODE_REDUCTION
    images = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        levels = model.encoder.forward_levels(images)
        assert torch.equal(levels[-1], model.encoder.forward_features(images))  # the pooled embedding is unchanged
    assert [(m.shape[1], 64 // m.shape[-1]) for m in levels] == [tuple(level) for level in model.encoder.levels]
    assert create_encoder(encoder, **kwargs).embed_dim == levels[-1].shape[1]


@pytest.mark.parametrize("encoder,decoder", [("conv4", Decoder), ("vit_tiny", MaskedTokenDecoder)])
def test_the_way_to_mask_follows_the_encoder_kind(encoder, decoder):
    kind = ENCODERS[encoder].kind
    assert isinstance(build_model("mae", encoder, 3).decoder, decoder)
    assert isinstance(build_model("autoencoder", encoder, 3).decoder, Decoder)  # only the masking objective changes
    metric = PARTS[MASKINGS[kind].part]
    assert TrainConfig(objective="mae", encoder=encoder).monitor == (f"val/{metric}", "min")
    objective = Objective("mae", kind=kind)
    images = torch.rand(2, 1, 64, 64)
    mask = objective.make_mask(images, torch.Generator().manual_seed(0))
    _, parts = objective(build_model("mae", encoder, 3)(images, mask), images, torch.zeros(2, dtype=torch.long), mask)
    assert set(parts) == {metric}


def test_vit_mae_encoder_sees_only_the_visible_tokens():
    model = build_model("mae", "vit_tiny", 3).eval()
    seen = []
    model.encoder.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    images = torch.rand(2, 1, 64, 64)
    mask = PatchMasker(8, 0.75)(images, torch.Generator().manual_seed(1))
    noisy = images + 10.0 * mask * torch.rand_like(images)  # differs from `images` on hidden pixels only
    with torch.no_grad():
        assert torch.equal(model(images, mask).embedding, model(noisy, mask).embedding)
        model.encoder(images)  # the embedding for probes and heads sees every token
    assert seen == [(2, 16, 192), (2, 16, 192), (2, 64, 192)]  # 25% of the 8x8 tokens kept, then all 64


def test_vit_mae_loss_is_mse_of_normalised_pixels_on_hidden_patches_only():
    model, objective = build_model("mae", "vit_tiny", 3), Objective("mae", patch_size=8, mask_ratio=0.75, kind="vit")
    images, labels = torch.rand(2, 1, 64, 64), torch.zeros(2, dtype=torch.long)
    mask = objective.make_mask(images, torch.Generator().manual_seed(0))
    output = model(images, mask)
    loss, _ = objective(output, images, labels, mask)

    def patches(x):  # MAE's patchify: (B, L, p*p)
        return x.unfold(2, 8, 8).unfold(3, 8, 8).reshape(2, 64, 64)

    target, hidden = patches(images), patches(mask)[..., 0]
    mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True, unbiased=False)
    normalised_target = (target - mean) / (var + 1e-6) ** 0.5
    prediction = (patches(output.reconstruction) - mean) / (var + 1e-6) ** 0.5  # the decoder's normalised output
    per_patch = ((prediction - normalised_target) ** 2).mean(-1)
    assert torch.allclose(loss, (per_patch * hidden).sum() / hidden.sum(), rtol=1e-4)
    visible_changed = output._replace(reconstruction=output.reconstruction + 5.0 * (1 - mask))
    assert torch.equal(objective(visible_changed, images, labels, mask)[0], loss)


def test_vit_mae_takes_a_high_mask_ratio_of_whole_tokens():
    TrainConfig(objective="mae", encoder="vit_small", mask_ratio=0.95).validate()
    TrainConfig(objective="mae", encoder="vit_tiny_p4", patch_size=4).validate()
    with pytest.raises(ConfigError, match=r"mask_ratio must be in \[0.5, 0.95\] with a vit encoder"):
        TrainConfig(objective="mae", encoder="vit_tiny", mask_ratio=0.3).validate()
    with pytest.raises(ConfigError, match="patch_size must be its token size 4"):
        TrainConfig(objective="mae", encoder="vit_tiny_p4").validate()
    TrainConfig(objective="mae", encoder="conv4", mask_ratio=0.3).validate()  # SparK with a CNN: as before


def test_pretrain_dataset_is_refused_for_objectives_that_read_labels():
    with pytest.raises(ConfigError, match="pretrain_dataset applies to the self-supervised objectives"):
        TrainConfig(objective="supervised", pretrain_dataset="pretrain").validate()
    with pytest.raises(ConfigError, match="mask_ratio"):
        TrainConfig(objective="mae", mask_ratio=1.0).validate()
    TrainConfig(objective="mae", pretrain_dataset="pretrain").validate()


def test_pretrain_corpus_varies_the_lens_and_mixes_the_classes(tiny_pretrain_dir):
    from dlfm.sources import load_dataset
    from dlfm.simulation.presets import PRESETS

    dataset = load_dataset(tiny_pretrain_dir)
    priors, source = PRESETS["pretrain"].lens_priors, PRESETS["pretrain"].source_priors
    for split in ("train", "val", "test"):
        assert set(dataset.get_params(split)["class_name"]) == {"no_sub", "cdm", "axion"}
    params = dataset.get_params("train")
    for column, (low, high) in (("theta_E", priors.theta_E), ("q", priors.q), ("gamma_ext", priors.gamma_ext),
                                ("src_R", source.R_sersic), ("src_mag", source.magnitude)):
        assert params[column].between(low, high).all(), column
        assert params[column].nunique() == len(params), f"{column} is not drawn per image"


def test_pretraining_and_evaluation_sets_share_no_image(tiny_pretrain_dir, tiny_classification_dir):
    from dlfm.sources import load_dataset

    corpus, evaluation = load_dataset(tiny_pretrain_dir), load_dataset(tiny_classification_dir)
    assert corpus.digest != evaluation.digest

    def hashes(dataset):
        return {hashlib.sha256(image.tobytes()).hexdigest() for split in ("train", "val", "test") for image in dataset.get_images(split)}

    assert not hashes(corpus) & hashes(evaluation)


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
def test_mae_through_mlflow_run_pretrains_on_the_corpus_and_registers(tracking_uri, tiny_pretrain_dir, tiny_classification_dir, tmp_path):
    result = run_script(["-m", "mlflow", "run", str(REPO), "-e", "mae", "--env-manager", "local", "--experiment-name", "mae-test",
                         "-P", f"dataset={tiny_classification_dir}", "-P", f"pretrain_dataset={tiny_pretrain_dir}",
                         "-P", "encoder=conv4", "-P", "epochs=2", "-P", "batch_size=8", "-P", "mask_ratio=0.75"],
                        cwd=tmp_path, env_extra={"PATH": f"{REPO / '.venv' / 'bin'}:" + os.environ["PATH"]})
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow.MlflowClient()
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.`dlfm.stage` = 'mae'")
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for name in ("val/masked_mse", "val/masked_mse_mean_image", "val/masked_mse_vs_mean_image", "val/macro_auc",
                 "test/accuracy", "train/masked_mse", "train/loss_mae"):
        assert name in metrics, name
    assert "val/recon_mse" not in metrics  # a different quantity gets a different name
    assert run.data.params["mask_ratio"] == "0.75"
    contexts = {i.tags[0].value: i.dataset.digest for i in run.inputs.dataset_inputs}
    assert set(contexts) == {"pretraining", "probe"} and contexts["pretraining"] != contexts["probe"]
    version = client.get_model_version("dlfm-encoder", run.data.tags["dlfm.registered_version"])
    assert version.tags["objective"] == "mae"
    assert version.tags["dataset_digest"] == run.data.tags["dlfm.pretrain_dataset_digest"]
    # label provenance: no label reached the weights; the probe's set is recorded (evaluate refuses to score on it)
    assert (version.tags["dlfm.label_count"], version.tags["dlfm.label_selection"]) == ("0", "none")
    assert version.tags["dlfm.probe_dataset_digest"] == run.data.tags["dlfm.dataset_digest"] != version.tags["dataset_digest"]
    figures = {f.path for f in client.list_artifacts(run.info.run_id, "figures")}
    assert "figures/reconstructions.png" in figures


@pytest.mark.slow  # about 4 min on the loaded 2-core box: run by make test, not make test-fast
def test_vit_mae_through_mlflow_run_logs_the_normalised_loss_and_registers(tracking_uri, tiny_classification_dir, tmp_path):
    result = run_script(["-m", "mlflow", "run", str(REPO), "-e", "mae", "--env-manager", "local", "--experiment-name", "vit-mae",
                         "-P", f"dataset={tiny_classification_dir}", "-P", "encoder=vit_tiny", "-P", "epochs=1",
                         "-P", "batch_size=8", "-P", "mask_ratio=0.9"],
                        cwd=tmp_path, env_extra={"PATH": f"{REPO / '.venv' / 'bin'}:" + os.environ["PATH"]})
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow.MlflowClient()
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.`dlfm.stage` = 'mae'")
    assert run.info.status == "FINISHED" and run.data.params["encoder"] == "vit_tiny"
    for name in ("val/masked_norm_mse", "val/masked_norm_mse_vs_mean_image", "val/macro_auc", "train/masked_norm_mse",
                 "train/lr", "val_epoch/masked_norm_mse_vs_position_mean", "val/masked_norm_mse_vs_position_mean",
                 "test/masked_norm_mse_vs_position_mean"):  # issue 27: the schedule, and the position-only baseline
        assert name in run.data.metrics, name
    # MAE's rule: the peak lr is the base 1.5e-4 per 256 images x the batch; the decoder is MAE's 512 x 8
    assert float(run.data.params["lr_effective"]) == pytest.approx(1.5e-4 * 8 / 256)
    assert (run.data.params["decoder_dim"], run.data.params["decoder_depth"]) == ("512", "8")
    version = client.get_model_version("dlfm-encoder", run.data.tags["dlfm.registered_version"])
    assert version.tags["objective"] == "mae"
