"""`main` chains every step as nested project runs and reuses finished identical steps."""

from __future__ import annotations

import mlflow

import pytest

from conftest import REPO, run_script
from test_docs_results import check_page_of_the_newest_main_run
from dlfm.objectives import OBJECTIVES

TINY = ["--n_train", "12", "--n_val", "6", "--n_test", "6", "--regression_n_train", "24", "--regression_n_val", "12",
        "--regression_n_test", "12", "--pretrain_n_train", "12", "--pretrain_n_val", "6", "--pretrain_n_test", "6",
        "--encoder", "conv4", "--epochs", "1", "--batch_size", "8", "--eval_n_train", "12",
        "--eval_n_test", "6", "--eval_budgets", "2,all", "--eval_arms", "pretrained-frozen,random-frozen,pretrained-finetune,scratch",
        "--eval_finetune_budgets", "", "--eval_epochs", "1", "--eval_min_steps", "1", "--seeds", "0,1", "--workers", "1", "--experiment_name", "main-test",
        "--spread_pretrain_seeds", "2000"]
PROBED = [name for name, spec in OBJECTIVES.items() if spec.probed]


@pytest.mark.slow  # two real pipelines (the second reuses every step) and the results page: ≈ 4 min on 2 cores
def test_main_runs_every_step_then_reuses_them(tracking_uri, tmp_path):
    # MLFLOW_EXPERIMENT_NAME: as a shell with the .venv activated exports it (its steps once failed on it)
    env = {"PATH": f"{REPO / '.venv' / 'bin'}:" + __import__("os").environ["PATH"], "MLFLOW_EXPERIMENT_NAME": "deeplense-fm"}
    first = run_script([str(REPO / "pipelines/main.py"), *TINY], cwd=tmp_path, env_extra=env, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    for entry in ("simulate", *OBJECTIVES, "evaluate"):
        assert f"[main] {entry}: ran" in first.stdout
    assert "# dlfm main pipeline report" in first.stdout
    report = (tmp_path / "reports" / "latest" / "report.md").read_text()
    assert "| autoencoder |" in report and "| theta_E (arcsec) |" in report and "pretrained-finetune − scratch" in report
    assert (tmp_path / "reports" / "latest" / "figures" / "label_efficiency.png").is_file()

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("main-test")
    runs_before = client.search_runs([experiment.experiment_id], max_results=1000)
    [parent] = [r for r in runs_before if r.data.tags.get("dlfm.stage") == "main"]
    steps = [r for r in runs_before if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    # four simulations (model_ii, regression, the pretraining corpus, the held-out model_ii set), every objective,
    # evaluate; then for the second corpus its simulation, the label-free objectives and evaluate
    assert len(steps) == 4 + len(OBJECTIVES) + 1 + 1 + len(PROBED) + 1 and all(r.info.status == "FINISHED" for r in steps)
    promoted = parent.data.tags["dlfm.promoted_version"]
    assert str(mlflow.MlflowClient().get_model_version_by_alias("dlfm-encoder", "production").version) == promoted
    labelled_steps = {k[len("dlfm.step."):]: client.get_run(v) for k, v in parent.data.tags.items() if k.startswith("dlfm.step.")}
    evaluate = labelled_steps["evaluate"]
    assert evaluate.data.tags["dlfm.encoder_version"] == promoted  # main evaluates the encoder it promoted
    # By default only the label-free objectives compete: the evaluated encoder saw no label, and the report says
    # which rows did.
    assert parent.data.tags["dlfm.best_stage"] in ("autoencoder", "mae")
    assert evaluate.data.tags["dlfm.encoder_saw_labels"] == "false" and evaluate.data.tags["dlfm.encoder_label_count"] == "0"
    assert "| supervised (labelled upper bound) |" in report and "saw labels" not in report
    # The parent explains itself: summary metrics (its charts are not empty with the children collapsed), a description.
    assert parent.data.metrics["promoted_version"] == float(promoted)
    assert {f"{objective}/val_macro_auc" for objective in OBJECTIVES} <= set(parent.data.metrics)
    assert {f"{objective}/val_probe_macro_auc" for objective in OBJECTIVES} <= set(parent.data.metrics)
    assert "val/probe_macro_auc" in parent.data.tags["dlfm.promotion_rule"] and "Rule: " in report
    assert any(name.startswith("evaluate/") for name in parent.data.metrics)
    assert "version" in parent.data.tags["mlflow.note.content"]
    assert all(r.data.tags.get("mlflow.note.content") for r in steps)  # every step run has a description
    assert "experiment_name" not in parent.data.params  # the run's experiment is its own attribute, not a claim

    # The second corpus: the promoted objective's version pretrained on it is evaluated with the same params, and the
    # report, the parent's metrics and tags and corpus_spread.json give each number per corpus and over corpora.
    best = parent.data.tags["dlfm.best_stage"]
    again = labelled_steps[f"{best}-corpus-2000"]
    assert again.data.params["pretrain_dataset"] == labelled_steps["simulate-pretrain-corpus-2000"].data.tags["dlfm.dataset_dir"]
    assert again.data.params["pretrain_dataset"] != labelled_steps[best].data.params["pretrain_dataset"]
    assert labelled_steps["simulate-pretrain-corpus-2000"].data.params["seed"] == "2000"
    second_evaluate = labelled_steps["evaluate-corpus-2000"]
    assert second_evaluate.data.tags["dlfm.encoder_version"] == again.data.tags["dlfm.registered_version"] != promoted
    assert second_evaluate.data.params["budgets"] == evaluate.data.params["budgets"]
    spread = mlflow.artifacts.load_dict(f"runs:/{parent.info.run_id}/corpus_spread.json")
    assert [d["pretrain_seed"] for d in spread["draws"]] == [1000, 2000] and spread["objective"] == best
    key = "classification/2/pretrained-frozen-vs-random-frozen"
    differences = [evaluate.data.metrics[f"verdict_diff/{key}"], second_evaluate.data.metrics[f"verdict_diff/{key}"]]
    assert [d["verdicts"][key] for d in spread["draws"]] == differences
    for d in spread["draws"]:  # evaluate's per-seed differences, from which the interval over seeds is drawn
        assert sorted(d["seed_differences"][key]) == ["0", "1"]
        assert sum(d["seed_differences"][key].values()) / 2 == pytest.approx(d["verdicts"][key])
    mean = parent.data.metrics[f"corpora/verdict_diff_{key.replace('/', '_')}_mean"]
    assert mean == pytest.approx(sum(differences) / 2)
    assert parent.data.tags[f"dlfm.corpus_verdict.{key}"] in ("better", "worse", "too few corpora to tell",
                                                               "too few seeds to tell")
    assert f"corpora/verdict_diff_{key.replace('/', '_')}_seed_low" in parent.data.metrics
    assert "## Over pretraining corpora" in report and "| corpus 1000 | corpus 2000 |" in report
    assert (tmp_path / "reports" / "latest" / "figures" / "corpus_spread.png").is_file()
    assert "figures/corpus_spread.png" in report
    assert f"| {best} val/probe_macro_auc | {labelled_steps[best].data.metrics['val/probe_macro_auc']:.4f} | " \
           f"{again.data.metrics['val/probe_macro_auc']:.4f} |" in report

    # An empty -P value (eval_finetune_budgets, the demo's) is stored as '' by `mlflow run`; evaluate was never reused.
    assert evaluate.data.params["finetune_budgets"] == "''"
    second = run_script([str(REPO / "pipelines/main.py"), *TINY], cwd=tmp_path, env_extra=env, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    for entry in ("simulate", *OBJECTIVES, "evaluate"):
        assert f"[main] {entry}: reused" in second.stdout
    runs_after = client.search_runs([experiment.experiment_id], max_results=1000)
    assert len(runs_after) == len(runs_before) + 1  # only the new main parent
    assert len(client.search_model_versions("name='dlfm-encoder'")) == len(OBJECTIVES) + len(PROBED)
    # The results page, rendered from this store (one pipeline for both: it is the suite's slowest fixture).
    check_page_of_the_newest_main_run(tmp_path, "main-test")


def register(objective: str, metrics: dict[str, float]) -> str:
    import torch

    from dlfm.models import create_encoder
    from dlfm.tracking import registry, stage_run

    torch.manual_seed(0)
    with stage_run(objective, f"{objective}-test", "main-promotion-test", system_metrics=False) as run_id:
        return registry.register_encoder_version(create_encoder("conv4"), 64, objective, metrics, "d" * 64, run_id)


def test_promotion_ranks_on_the_probe_and_evaluates_this_runs_version(tracking_uri):
    from dlfm.stages.main import PROMOTION_METRIC, best_candidate, promote_best
    from dlfm.tracking import registry

    assert PROMOTION_METRIC == "val/probe_macro_auc"
    older = register("autoencoder", {"val/macro_auc": 0.99, "val/probe_macro_auc": 0.99})  # an earlier run's, in production
    registry.promote(older, "production")
    # A supervised head's AUC (0.95) would win on val/macro_auc; on the probe, the autoencoder does.
    rows = [{"stage": "supervised", "version": register("supervised", {"val/macro_auc": 0.95, "val/probe_macro_auc": 0.60}),
             "val/macro_auc": 0.95, "val/probe_macro_auc": 0.60},
            {"stage": "autoencoder", "version": register("autoencoder", {"val/macro_auc": 0.80, "val/probe_macro_auc": 0.80}),
             "val/macro_auc": 0.80, "val/probe_macro_auc": 0.80}]
    assert best_candidate(rows)["stage"] == "autoencoder"
    best, outcome = promote_best(rows, "production", "run-x")
    # The gate keeps the better older holder; this run's best still goes to staging, and it is what main evaluates.
    assert best["version"] == rows[1]["version"] and not outcome.promoted
    assert registry.version_for_stage("production") == older
    assert registry.version_for_stage("staging") == best["version"] != older


def test_promotion_without_the_probe_metric_is_one_clear_error():
    from dlfm.errors import RegistryError
    from dlfm.stages.main import best_candidate

    with pytest.raises(RegistryError, match=r"no candidate of this run among promote_from \(supervised\) logged "
                                            "val/probe_macro_auc"):
        best_candidate([{"stage": "supervised", "version": "3", "val/macro_auc": 0.9}], ["supervised"])


@pytest.mark.parametrize("encoder, patch", [("vit_tiny_p4", 4), ("vit_small_p4", 4), ("vit_tiny", 8), ("conv4", None)])
def test_main_gives_the_mae_step_a_vits_token_size_as_its_patch(encoder, patch, tracking_uri, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from dlfm.errors import RegistryError
    from dlfm.stages import main
    from dlfm.training.config import TrainConfig

    configs = main.MainConfig(encoder=encoder, report_dir=str(tmp_path / "report")).step_configs()
    for config in configs:
        config.validate()  # vit_tiny_p4 failed here: mae got TrainConfig's 8-px patch, not its 4-px tokens
    [mae] = [c for c in configs if getattr(c, "objective", "") == "mae"]
    assert mae.patch_size == (patch or TrainConfig(objective="mae").patch_size)

    launched = []  # the steps run_main_stage launches, without running them

    def run_step(root, entry, params, experiment, version):
        launched.append((entry, params))
        tags = {"dlfm.dataset_dir": str(tmp_path), "dlfm.registered_version": ""}
        return SimpleNamespace(info=SimpleNamespace(run_id="0123456789"), data=SimpleNamespace(tags=tags, metrics={})), False

    monkeypatch.setattr(main.steps, "run_step", run_step)
    with pytest.raises(RegistryError):  # no candidate logged the promotion metric: the fake steps logged nothing
        main.run_main_stage(main.MainConfig(encoder=encoder, report_dir=str(tmp_path / "report"), experiment_name="p4"))
    params = {entry: p for entry, p in launched if entry in OBJECTIVES}
    assert params["mae"].get("patch_size") == patch
    assert all("patch_size" not in p for entry, p in params.items() if entry != "mae")


def test_the_summary_table_shows_the_mae_objectives_normalised_pixel_metric():
    from dlfm.stages.main import SUMMARY_METRICS

    assert "test/masked_norm_mse_vs_mean_image" in SUMMARY_METRICS  # what a ViT's mae logs (normalised pixels)


def test_main_promotes_a_self_supervised_version_by_default(tracking_uri):
    from dlfm.objectives import self_supervised_objectives
    from dlfm.stages.main import MainConfig, best_candidate, labelled

    assert MainConfig().promote_from == ",".join(self_supervised_objectives())  # the default is the label-free rows
    rows = [{"stage": "supervised", "version": "1", "val/probe_macro_auc": 0.99},
            {"stage": "multitask", "version": "2", "val/probe_macro_auc": 0.98},
            {"stage": "mae", "version": "3", "val/probe_macro_auc": 0.70},
            {"stage": "autoencoder", "version": "4", "val/probe_macro_auc": 0.60}]
    assert best_candidate(rows)["stage"] == "mae"  # the labelled rows score higher, and do not compete
    assert best_candidate(rows, MainConfig(promote_from="mae,supervised").promote_from_list)["stage"] == "supervised"
    assert labelled("supervised") and labelled("tune") and not labelled("mae")


@pytest.mark.parametrize("value", ["", "mae,imagenet", "mae,mae"])
def test_a_bad_promote_from_is_refused(value):
    from dlfm.errors import ConfigError
    from dlfm.stages.main import MainConfig

    with pytest.raises(ConfigError, match="promote_from must be"):
        MainConfig(promote_from=value).validate()

