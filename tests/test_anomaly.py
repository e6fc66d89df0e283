"""Anomaly scores: the corpus density, AUROC per kind, and the tracked stage on a registered encoder."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
import torch

from dlfm.anomaly import ANOMALY_KINDS, AnomalyConfig, CorpusDensity, auroc, summarise, table_markdown
from dlfm.errors import ConfigError
from dlfm.models import create_encoder
from dlfm.simulation import PRESETS
from dlfm.tracking import registry, stage_run


def test_knn_score_is_the_mean_distance_to_the_k_nearest_standardised_corpus_points():
    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(50, 4)) * [1.0, 2.0, 3.0, 4.0]
    points = rng.normal(size=(7, 4))
    density = CorpusDensity.fit(corpus)
    standardised_corpus = (corpus - corpus.mean(0)) / corpus.std(0)
    standardised_points = (points - corpus.mean(0)) / corpus.std(0)
    distances = np.linalg.norm(standardised_points[:, None] - standardised_corpus[None], axis=2)
    expected = np.sort(distances, axis=1)[:, :3].mean(axis=1)
    np.testing.assert_allclose(density.knn_score(points, k=3, chunk=2), expected, rtol=1e-9)


def test_scores_separate_a_shifted_population_and_not_the_same_one():
    rng = np.random.default_rng(1)
    density = CorpusDensity.fit(rng.normal(size=(400, 16)))
    normal, same, shifted = rng.normal(size=(200, 16)), rng.normal(size=(200, 16)), rng.normal(size=(200, 16)) + 1.5
    for score in ("knn", "gaussian"):
        assert auroc(density.scores(normal, 5)[score], density.scores(shifted, 5)[score]) > 0.95
        assert abs(auroc(density.scores(normal, 5)[score], density.scores(same, 5)[score]) - 0.5) < 0.1


def test_a_constant_embedding_dimension_does_not_divide_by_zero():
    corpus = np.c_[np.random.default_rng(2).normal(size=(30, 3)), np.ones(30)]
    scores = CorpusDensity.fit(corpus).scores(corpus[:5], 2)
    assert all(np.isfinite(values).all() for values in scores.values())


@pytest.mark.parametrize(("objective", "encoder_name"), [("autoencoder", "conv4"), ("mae", "conv4"), ("mae", "vit_tiny_p4"),
                                                        ("multitask", "conv4")])
def test_a_saved_decoder_reloads_and_scores_each_image_by_its_objectives_reconstruction_part(tmp_path, objective, encoder_name):
    from dlfm.evaluation.embedding import reconstruction_errors
    from dlfm.models.composite import build_model
    from dlfm.models.serialization import load_reconstructor, save_encoder
    from dlfm.training.evaluate import EVAL_MASK_SEED
    from dlfm.training.objectives import Objective

    torch.manual_seed(0)
    model = build_model(objective, encoder_name, num_classes=3).eval()
    patch = model.encoder.patch_size if encoder_name.startswith("vit") else 8
    masking = {"mask_ratio": 0.75, "patch_size": patch} if objective == "mae" else {}
    model.decoder.set_baseline(torch.rand(1, 1, 32, 32))
    torch.nn.init.normal_(list(model.decoder.parameters())[-2], std=0.1)  # a decoder that is not the zero-residual start
    save_encoder(model.encoder, tmp_path, 32, objective, decoder=model.decoder, masking=masking)
    loaded = load_reconstructor(tmp_path)
    assert loaded.objective == objective and loaded.masking == masking
    images = torch.rand(6, 1, 32, 32)
    kind = "vit" if encoder_name.startswith("vit") else "cnn"
    loss = Objective(objective, kind=kind, **masking)
    mask = loss.make_mask(images, torch.Generator().manual_seed(EVAL_MASK_SEED))
    with torch.no_grad():
        expected_batch = loss.reconstruction_error(model(images, mask).reconstruction, images, mask)
        per_image = loss.per_image_error(loaded.model(images, mask).reconstruction, images, mask)
    # Every image hides exactly as many pixels, so the batch loss is the mean of the per-image errors.
    assert per_image.shape == (6,) and float(per_image.mean()) == pytest.approx(float(expected_batch), rel=1e-5)
    scored = reconstruction_errors(loaded, images.numpy(), torch.device("cpu"), batch_size=4)
    np.testing.assert_allclose(scored, per_image.numpy(), rtol=1e-5)


def test_an_encoder_saved_without_a_decoder_has_no_reconstruction_score(tmp_path):
    from dlfm.models.serialization import load_reconstructor, save_encoder

    save_encoder(create_encoder("conv4"), tmp_path, 64, "supervised")
    assert load_reconstructor(tmp_path) is None


def test_the_table_gets_a_reconstruction_column_only_when_scored():
    both = summarise({("wide_psf", "knn"): [0.9], ("wide_psf", "gaussian"): [0.8], ("wide_psf", "reconstruction"): [0.7]})
    assert table_markdown(both).splitlines()[0] == ("| anomaly kind | AUROC (knn) | AUROC (gaussian) | AUROC (reconstruction) "
                                                    "| seeds |")
    assert "reconstruction" not in table_markdown(both[:2])


def test_summary_rows_and_table():
    rows = summarise({("wide_psf", "knn"): [0.9, 1.0], ("wide_psf", "gaussian"): [0.8, 0.8]})
    assert rows[0] == {"kind": "wide_psf", "score": "knn", "auroc_mean": pytest.approx(0.95),
                       "auroc_sd": pytest.approx(np.std([0.9, 1.0], ddof=1)), "n_seeds": 2}
    assert "| wide_psf | 0.950 ± 0.071 | 0.800 ± 0.000 | 2 |" in table_markdown(rows)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("kinds", "wide_psf,vortex", "unknown anomaly kind 'vortex'; kinds are long_vortex, heavy_subhalos, wide_psf"),
    ("k", 0, "k must be a positive integer"),
    ("corpus_n_train", 5, "k=5 needs more corpus images than corpus_n_train=5"),
    ("seeds", "0,0", "seeds must be distinct"),
    ("encoder_uri", "runs:/abc/encoder", "models:/dlfm-encoder/<version>"),
])
def test_bad_params_are_one_line(field, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        AnomalyConfig(**{field: value}).validate()
    assert "\n" not in str(info.value)


def test_every_kind_is_a_model_ii_variant_off_in_one_named_way():
    base = PRESETS["model_ii"]
    for kind, preset_name in ANOMALY_KINDS.items():
        preset = PRESETS[preset_name]
        assert preset.image_size == base.image_size and preset.lens == base.lens and preset.source == base.source, kind
        differs = [name for name in ("instrument", "cdm", "vortex") if getattr(preset, name) != getattr(base, name)]
        assert len(differs) == 1, (kind, differs)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["autoencoder", "supervised"])
def test_stage_logs_aurocs_table_scores_and_a_figure_per_kind(tracking_uri, tmp_path, monkeypatch, tiny_classification_dir,
                                                              objective, capsys):
    from dlfm.models.composite import build_model
    from dlfm.stages.anomaly import run_anomaly_stage

    monkeypatch.chdir(tmp_path)  # presets are simulated into ./data
    torch.manual_seed(0)
    model = build_model(objective, "conv4", num_classes=3)
    with stage_run(objective, f"{objective}-test", "anomaly-test", system_metrics=False) as run_id:
        version = registry.register_encoder_version(model.encoder, 64, objective, {"val/macro_auc": 0.7},
                                                    "d" * 64, run_id, decoder=model.decoder)
    registry.promote(version, "production")
    config = AnomalyConfig(corpus=str(tiny_classification_dir), corpus_n_train=24, n_images=6, k=3, seeds="0,1",
                           experiment_name="anomaly-test")
    summary = run_anomaly_stage(config)
    client = mlflow.MlflowClient()
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["dlfm.stage"] == "anomaly"
    assert run.data.tags["dlfm.encoder_version"] == version
    scored = ("knn", "gaussian", "reconstruction") if objective == "autoencoder" else ("knn", "gaussian")
    for kind in ANOMALY_KINDS:
        for score in scored:
            assert 0.0 <= run.data.metrics[f"auroc_{score}/{kind}"] <= 1.0
    assert ("auroc_reconstruction/wide_psf" in run.data.metrics) == (objective == "autoencoder")
    assert ("holds no decoder" in capsys.readouterr().out) == (objective == "supervised")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"anomaly_table.md", "anomaly_scores.csv", "anomaly.json"} <= artifacts
    assert {f"figures/anomaly_{kind}.png" for kind in ANOMALY_KINDS} <= artifacts
    scores = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/anomaly_scores.csv").splitlines()
    assert scores[0] == "seed,set,image," + ",".join(scored) and len(scores) == 1 + 2 * 4 * 6
    assert "held out from the reference" in run.data.tags["dlfm.anomaly.normal"]  # the reference's own test split
    assert summary["markdown"].startswith(f"Reference (what normal is): dataset {tiny_classification_dir}")
    table = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/anomaly_table.md")
    assert ("AUROC (reconstruction)" in table) == (objective == "autoencoder")


def test_normal_images_come_from_the_references_own_distribution(tiny_classification_dir):
    """By default "normal" is the corpus's own held-out split (or its preset drawn afresh), and the words name both."""
    from dlfm.sources import load_dataset
    from dlfm.stages.anomaly import describe_sets, normal_test_images

    corpus = load_dataset(tiny_classification_dir)
    config = AnomalyConfig(corpus=str(tiny_classification_dir), corpus_n_train=24, n_images=5, k=3)
    assert config.normal == "corpus"
    normal = normal_test_images(config, corpus, 2000, lambda size: None)
    assert np.array_equal(normal, corpus.get_images("test")[:5])  # held out from the train split the density is fitted on
    reference, normal_from = describe_sets(config, corpus)
    assert "its train split" in reference and "held out from the reference" in normal_from
    _, other = describe_sets(AnomalyConfig(corpus="pretrain", normal="model_ii"), corpus)
    assert "not the reference's distribution" in other
    _, same = describe_sets(AnomalyConfig(corpus="pretrain"), corpus)
    assert same.startswith("preset pretrain simulated at seed 2000 + s")
