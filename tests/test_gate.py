"""main's promotion gate compares one quantity: the candidate and the holder scored again on one probe set, with the
val split's noise (dlfm.evaluation.probe_score, dlfm.stages.main.gate_evidence), and `dlfm registry promote --probe-set`."""

from __future__ import annotations

import mlflow
import pytest


def register_probed(dataset, probe_auc: float, seed: int) -> str:
    """A conv4 "autoencoder" version whose val/probe_macro_auc was (said to be) measured on ``dataset``."""
    import torch

    from dlfm.models import create_encoder
    from dlfm.tracking import registry, stage_run

    torch.manual_seed(seed)
    with stage_run("autoencoder", "autoencoder-test", "main-gate-test", system_metrics=False) as run_id:
        return registry.register_encoder_version(create_encoder("conv4"), 64, "autoencoder", {"val/probe_macro_auc": probe_auc},
                                                 "e" * 64, run_id, labels=registry.label_tags("autoencoder", dataset))


def test_the_gate_scores_a_holder_of_another_probe_set_again(tracking_uri, tiny_classification_dir, tmp_path):
    from dlfm.simulation import SimulationConfig, simulate_dataset
    from dlfm.sources.resolve import load_dataset
    from dlfm.stages.main import PROMOTION_METRIC, gate_evidence, promote_best
    from dlfm.tracking import registry

    this_set = load_dataset(tiny_classification_dir)
    other_dir = simulate_dataset(SimulationConfig(preset="model_ii", n_train=24, n_val=12, n_test=12, seed=7),
                                 out_dir=tmp_path / "other", workers=1, progress=False)
    # The holder logged 0.99 on another run's probe set: as logged it would keep production against anything here.
    holder = register_probed(load_dataset(other_dir), 0.99, seed=0)
    registry.promote(holder, "production")
    candidate = register_probed(this_set, 0.995, seed=1)
    assert "probe set" in registry.probe_mismatch(registry.get_version(candidate), registry.get_version(holder), PROMOTION_METRIC)

    # Without a new score the gate compares nothing, and keeps the holder with one line saying why.
    kept = registry.promote(candidate, "production", if_better=PROMOTION_METRIC)
    assert not kept.promoted and "not one quantity" in kept.message and registry.version_for_stage("production") == holder

    # main scores both on its probe set: the holder's 0.99 was another set's; the candidate's logged 0.995 is replaced too.
    evidence = gate_evidence(candidate, "production", str(tiny_classification_dir), seed=0, device="cpu")
    assert set(evidence.rescored) == {holder, candidate} and evidence.n_val == 12
    low, high = evidence.interval
    difference = evidence.rescored[candidate] - evidence.rescored[holder]
    assert low <= difference <= high and "95 % paired bootstrap interval" in evidence.sentence()
    assert evidence.metrics()["gate/difference"] == pytest.approx(difference)
    rows = [{"stage": "autoencoder", "version": candidate, PROMOTION_METRIC: 0.995}]
    _, outcome = promote_best(rows, "production", "run-x", rescored=evidence.rescored)
    assert outcome.promoted == (difference > 0) and registry.version_for_stage("production") == (candidate if difference > 0 else holder)

    # Forced: the holder reads lower on this set, so the gate promotes on the rescored numbers, and says so.
    registry.promote(holder, "production")
    _, outcome = promote_best(rows, "production", "run-y", rescored={holder: 0.5, candidate: 0.6})
    assert outcome.promoted and "scored again" in outcome.message and registry.version_for_stage("production") == candidate
    last = registry.promotion_history("production")[-1]
    assert "0.6000 beats 0.5000 (scored again on this probe set)" in last["reason"]

    # The holder itself, or no holder: nothing is scored.
    assert gate_evidence(candidate, "production", str(tiny_classification_dir), 0, "cpu").rescored == {}
    assert gate_evidence(candidate, "nobody-holds-this", str(tiny_classification_dir), 0, "cpu").rescored == {}


def test_a_probe_of_another_method_is_not_compared(tracking_uri, tiny_classification_dir):
    from dlfm.sources.resolve import load_dataset
    from dlfm.stages.main import PROMOTION_METRIC
    from dlfm.tracking import registry

    dataset = load_dataset(tiny_classification_dir)
    older = register_probed(dataset, 0.9, seed=0)
    mlflow.MlflowClient().delete_model_version_tag(registry.MODEL_NAME, older, registry.PROBE_METHOD_TAG)  # before the tag
    newer = register_probed(dataset, 0.95, seed=1)
    why = registry.probe_mismatch(registry.get_version(newer), registry.get_version(older), PROMOTION_METRIC)
    assert "did not record" in why and "probe set" not in why
    assert registry.probe_mismatch(registry.get_version(newer), registry.get_version(older), "val/macro_auc") == ""


def test_scoring_a_version_again_gives_the_probe_numbers_its_stage_logged(tracking_uri, tiny_classification_dir):
    """What the gate compares a candidate with is the candidate's own method: a stage's encoder, scored again on
    its probe set, reads what the stage logged (same grid, layout, embeddings, probe and folds)."""
    from dlfm.evaluation.probe_score import probe_scores
    from dlfm.sources.resolve import load_dataset
    from dlfm.stages.train import run_training_stage
    from dlfm.tracking import registry
    from dlfm.training import TrainConfig

    config = TrainConfig(objective="autoencoder", encoder="resnet18", dataset=str(tiny_classification_dir), epochs=1,
                         batch_size=8, device="cpu", seed=3, experiment_name="rescore-test")
    run = mlflow.MlflowClient().get_run(run_training_stage(config, progress=False)["run_id"])
    version = run.data.tags["dlfm.registered_version"]
    encoder = registry.load_registered_encoder(f"models:/{registry.MODEL_NAME}/{version}")
    scores = probe_scores(encoder, load_dataset(tiny_classification_dir), seed=3, device="cpu")
    assert "probe_penalty" in scores  # the chosen L2 strength is logged too
    assert scores == pytest.approx({name: run.data.metrics[name] for name in scores}, abs=1e-9)
    assert registry.get_version(version).tags[registry.PROBE_METHOD_TAG]  # the method travels with the version


def test_cli_promote_scores_both_on_a_probe_set_when_asked(tracking_uri, tiny_classification_dir, tmp_path, capsys):
    from dlfm.cli import main as cli
    from dlfm.simulation import SimulationConfig, simulate_dataset
    from dlfm.sources.resolve import load_dataset
    from dlfm.tracking import registry

    other_dir = simulate_dataset(SimulationConfig(preset="model_ii", n_train=24, n_val=12, n_test=12, seed=7),
                                 out_dir=tmp_path / "other", workers=1, progress=False)
    holder = register_probed(load_dataset(other_dir), 0.99, seed=0)
    registry.promote(holder, "production")
    candidate = register_probed(load_dataset(tiny_classification_dir), 0.995, seed=1)
    gate = ["registry", "promote", candidate, "--stage", "production", "--if-better", "val/probe_macro_auc"]
    with pytest.raises(SystemExit) as refused:
        cli(gate)
    out = capsys.readouterr().out
    assert refused.value.code == 1 and "not one quantity" in out and "--probe-set DATASET" in out
    try:
        cli([*gate, "--probe-set", str(tiny_classification_dir)])
        code = 0
    except SystemExit as stopped:
        code = stopped.code
    out = capsys.readouterr().out
    assert "95 % paired bootstrap interval" in out and "scored again on this probe set" in out
    assert (code == 0) == (registry.version_for_stage("production") == candidate)
    with pytest.raises(SystemExit) as bad:
        cli(["registry", "promote", candidate, "--stage", "production", "--probe-set", str(tiny_classification_dir)])
    assert bad.value.code == 2 and "pass --if-better val/probe_macro_auc with it" in capsys.readouterr().err


def test_beyond_noise_keeps_a_holder_the_candidate_beats_within_the_noise(tracking_uri, tiny_classification_dir, capsys):
    """gate=beyond_noise (main) and --beyond-noise (the CLI): a candidate that reads higher takes the stage only if
    the 95 % interval of its difference lies above 0; an unmeasured interval keeps the holder too."""
    from dlfm.cli import main as cli
    from dlfm.sources.resolve import load_dataset
    from dlfm.stages.main import PROMOTION_METRIC, MainConfig, promote_best
    from dlfm.tracking import registry

    dataset = load_dataset(tiny_classification_dir)
    holder = register_probed(dataset, 0.90, seed=0)
    registry.promote(holder, "production")
    candidate = register_probed(dataset, 0.95, seed=1)
    rows = [{"stage": "autoencoder", "version": candidate, PROMOTION_METRIC: 0.95}]
    scores = {holder: 0.90, candidate: 0.95}

    for interval, why in (((-0.02, 0.12), "reaches 0, so it is within the noise"), (None, "noise was not measured")):
        _, kept = promote_best(rows, "production", "run-x", rescored=scores, beyond_noise=True, interval=interval)
        assert not kept.promoted and why in kept.message and registry.version_for_stage("production") == holder
    _, the_default = promote_best(rows, "production", "run-y", rescored=scores, interval=(-0.02, 0.12))
    assert the_default.promoted  # gate=better: any positive difference, as before
    registry.promote(holder, "production")
    _, moved = promote_best(rows, "production", "run-z", rescored=scores, beyond_noise=True, interval=(0.01, 0.09))
    assert moved.promoted and registry.version_for_stage("production") == candidate
    assert "beyond the noise (95 % interval of the difference [+0.0100, +0.0900])" in registry.promotion_history("production")[-1]["reason"]

    with pytest.raises(Exception, match="unknown gate 'noisy'; choose one of better, beyond_noise"):
        MainConfig(gate="noisy").validate()
    with pytest.raises(SystemExit) as bad:
        cli(["registry", "promote", candidate, "--stage", "production", "--if-better", PROMOTION_METRIC, "--beyond-noise"])
    assert bad.value.code == 2 and "pass --probe-set DATASET" in capsys.readouterr().err
