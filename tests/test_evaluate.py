"""The evaluate stage: label budgets, arms, the shared loop, verdicts, and the tracked entry point."""

from __future__ import annotations

import math

import mlflow
import numpy as np
import pytest
import torch

from conftest import checksum, mlflow_run, REPO, run_script
from dlfm.sources import load_dataset
from dlfm.evaluation import TASKS, EmbeddingCache, EvaluateConfig, draw_subset, run_grid, verdict
from dlfm.evaluation.grid import Encoders, plan
from dlfm.models import create_encoder


@pytest.fixture(scope="module")
def tiny_tasks(tiny_classification_dir, tiny_regression_dir):
    return {"classification": TASKS["classification"].load(load_dataset(tiny_classification_dir), "tiny-cls"),
            "regression": TASKS["regression"].load(load_dataset(tiny_regression_dir), "tiny-reg")}


def test_verdict_says_better_or_worse_only_when_the_95_ci_excludes_zero():
    from scipy.stats import t

    # paired differences 0.06, 0.05, 0.07: mean 0.06, sd 0.01, 95 % CI 0.06 ± t(2) · 0.01/√3 = [0.035, 0.085]
    clear = verdict([0.86, 0.85, 0.87], [0.80, 0.80, 0.80], higher_is_better=True)
    half = t.ppf(0.975, 2) * 0.01 / math.sqrt(3)
    assert clear.word == "better" and clear.n_seeds == 3
    assert (clear.ci_low, clear.ci_high) == pytest.approx((0.06 - half, 0.06 + half))
    assert verdict([0.74, 0.75, 0.73], [0.80, 0.80, 0.80], higher_is_better=True).word == "worse"
    noisy = verdict([0.90, 0.70, 0.85], [0.80, 0.80, 0.80], higher_is_better=True)  # diffs 0.1, -0.1, 0.05
    assert noisy.word == "too few seeds to tell" and noisy.difference == pytest.approx(0.05 / 3)
    assert noisy.ci_low < 0 < noisy.ci_high and "includes 0" in noisy.reason
    # |mean| > sd (the old rule's "better") but the interval over 3 seeds still includes 0 ...
    diffs = [0.0, 0.06, 0.07]
    marginal = verdict(diffs, [0.0] * 3, higher_is_better=True)
    assert abs(marginal.difference) > marginal.sd and marginal.word == "too few seeds to tell"
    # ... while the same spread over 12 seeds excludes it
    assert verdict(diffs * 4, [0.0] * 12, higher_is_better=True).word == "better"
    # lower is better (MAE): a smaller error is "better"
    assert verdict([0.5, 0.52, 0.49], [0.7, 0.7, 0.71], higher_is_better=False).word == "better"
    one_seed = verdict([0.9], [0.5], higher_is_better=True)
    assert one_seed.word == "too few seeds to tell" and math.isnan(one_seed.sd) and math.isnan(one_seed.ci_low)
    assert one_seed.reason == "one seed: no interval"


def test_budgets_draw_one_stratified_nested_subset_shared_by_every_arm(tiny_tasks):
    config = EvaluateConfig(budgets="2,5,all", seeds="0,1")
    subsets = {}
    for cell, index in plan(config, tiny_tasks):
        subsets.setdefault((cell.task, cell.budget, cell.seed), []).append((cell.arm, tuple(index)))
    for (task, budget, seed), by_arm in subsets.items():
        assert sorted(arm for arm, _ in by_arm) == sorted(config.arm_list)
        assert len({index for _, index in by_arm}) == 1, "every arm must train on the same labels"
    labels = tiny_tasks["classification"].train.targets
    five = draw_subset(5, 0, labels=labels)
    assert np.bincount(labels[five]).tolist() == [5, 5, 5]
    assert set(draw_subset(2, 0, labels=labels)) <= set(five)  # nested
    assert not np.array_equal(five, draw_subset(5, 1, labels=labels))  # a new draw per seed
    assert len(draw_subset(5, 0, n=24)) == 5 and len(draw_subset("all", 0, n=24)) == 24


def test_frozen_arms_never_update_encoders_and_embed_each_image_once(tiny_tasks):
    torch.manual_seed(0)
    pretrained = create_encoder("conv4")
    before = checksum(pretrained)
    config = EvaluateConfig(budgets="2,all", seeds="0,1", arms="pretrained-frozen,random-frozen", epochs=3, min_steps=3)
    cache = EmbeddingCache(torch.device("cpu"))
    results = run_grid(config, tiny_tasks, pretrained, torch.device("cpu"), cache=cache)
    assert checksum(pretrained) == before
    assert len(results) == 2 * 2 * 2 * 2
    for task, data in tiny_tasks.items():
        pool = len(data.train.targets) + len(data.test.targets)
        for key in ("pretrained", "random-0", "random-1"):  # once per encoder, not per budget or seed
            assert cache.embedded[(task, key)] == pool
    assert all(np.isfinite(list(r.metrics.values())).all() for r in results)


def test_scratch_and_random_start_from_another_init_and_finetune_moves_only_a_copy(tiny_tasks):
    torch.manual_seed(0)
    pretrained = create_encoder("conv4")
    before = checksum(pretrained)
    encoders = Encoders(pretrained)
    _, random0 = encoders.get("random", 0)
    assert encoders.get("random", 0)[1] is random0, "the random encoder is built once per seed"
    assert checksum(random0) != before and checksum(encoders.get("random", 1)[1]) not in (before, checksum(random0))
    config = EvaluateConfig(tasks="regression", budgets="all", seeds="0", arms="pretrained-finetune,scratch", epochs=1,
                            min_steps=1)
    results = run_grid(config, {"regression": tiny_tasks["regression"]}, pretrained, torch.device("cpu"))
    assert checksum(pretrained) == before  # fine-tuning trained a copy
    assert results[0].metrics != results[1].metrics



@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
def test_tiny_grid_through_mlflow_run(production_version, tracking_uri, tmp_path, tiny_classification_dir, tiny_regression_dir):
    params = {"classification_dataset": tiny_classification_dir, "regression_dataset": tiny_regression_dir,
              "budgets": "2,all", "seeds": "0,1", "epochs": "1", "min_steps": "2", "batch_size": "8"}
    done = mlflow_run("evaluate", params, "eval-test", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("eval-test")
    runs = client.search_runs([experiment.experiment_id], max_results=500)
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["dlfm.encoder_version"] == production_version
    assert parent.data.tags["dlfm.encoder_uri"] == f"models:/dlfm-encoder/{production_version}"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 * 2 * 4 * 2 and all(c.info.status == "FINISHED" for c in children)
    filtered = client.search_runs([experiment.experiment_id], "tags.`dlfm.task` = 'classification' and "
                                  "tags.`dlfm.arm` = 'scratch' and tags.`dlfm.budget` = '2'")
    assert sorted(r.data.tags["dlfm.seed"] for r in filtered) == ["0", "1"]
    assert all("test/macro_auc" in r.data.metrics for r in filtered)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)} | {
        a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert {"evaluation.md", "evaluation_summary.csv", "evaluation_cells.csv", "figures/label_efficiency.png",
            "figures/label_efficiency_regression.png"} <= artifacts
    verdicts = {k: v for k, v in parent.data.tags.items() if k.startswith("dlfm.verdict.")}
    assert len(verdicts) == 2 * 2 * 2 and set(verdicts.values()) <= {"better", "too few seeds to tell", "worse",
                                                                     "too few test images to tell"}


def test_budget_larger_than_the_pool_is_one_error_line(production_version, tmp_path, tiny_classification_dir):
    done = run_script([str(REPO / "pipelines/evaluate.py"), "--tasks", "classification", "--classification_dataset",
                       str(tiny_classification_dir), "--budgets", "400", "--experiment_name", "eval-bad"], cwd=tmp_path)
    assert done.returncode == 2
    assert [line for line in done.stderr.splitlines() if "Traceback" in line or line.startswith("dlfm:")] == [
        f"dlfm: error: budget 400 exceeds the 8 labelled images per class in the train split of "
        f"classification_dataset={str(tiny_classification_dir)!r}; lower it, use 'all', or simulate more (sim_n_train)"]
    [run] = mlflow.MlflowClient().search_runs([mlflow.MlflowClient().get_experiment_by_name("eval-bad").experiment_id])
    assert run.info.status == "FAILED" and "budget 400" in run.data.tags["dlfm.error"]


@pytest.mark.parametrize("field, value, message", [
    ("budgets", "25,abc", "budgets must be positive integers or 'all'"),
    ("budgets", "0", "budgets must be positive integers or 'all'"),
    ("budgets", "25,25", "distinct"),
    ("arms", "pretrained-frozen,imagenet", "unknown arm 'imagenet'"),
    ("tasks", "segmentation", "unknown task 'segmentation'"),
    ("seeds", "0,x", "seeds must be comma-separated integers"),
    ("encoder_lr", 0.0, "encoder_lr must be a positive number"),
    ("encoder_uri", "runs:/abc/encoder", "models:/dlfm-encoder/<version>"),
    ("finetune_budgets", "50", "finetune_budgets must be among budgets"),
])
def test_bad_params_name_the_problem(field, value, message):
    from dlfm.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        EvaluateConfig(**{field: value}).validate()


def test_budgets_parse_ascending_with_all_last():
    assert EvaluateConfig(budgets="400,all,25,100").budget_list == [25, 100, 400, "all"]


def test_markdown_states_each_verdict_with_its_interval():
    from dlfm.evaluation import summary
    from dlfm.evaluation.grid import Cell, CellResult

    results = []
    for seed, (finetune, scratch) in enumerate([(0.86, 0.80), (0.85, 0.80), (0.87, 0.80)]):
        for arm, auc in (("pretrained-finetune", finetune), ("scratch", scratch)):
            results.append(CellResult(Cell("classification", 100, arm, seed, 300, 100), {"test/macro_auc": auc}, [], None))
    [line] = [v["sentence"] for v in summary.verdicts(results)]
    assert line == ("classification, 100 labelled images per class (100): pretrained-finetune − scratch = +0.060 "
                    "test/macro_auc, 95% CI [+0.035, +0.085] over 3 seeds → better (the 95% CI excludes 0)")
    text = summary.markdown(summary.aggregate(results), summary.verdicts(results))
    assert "| 100 (100) | 0.860 ± 0.010 | 0.800 ± 0.000 |" in text
    assert "better/worse only when the interval excludes 0, else too few seeds to tell" in text
    two_seeds = [r for r in results if r.cell.seed < 2]  # diffs 0.06, 0.05: t(1) = 12.7 makes the interval [−0.008, +0.119]
    [row] = summary.verdicts(two_seeds)
    assert row["sentence"].endswith("over 2 seeds → too few seeds to tell (within noise: the 95% CI includes 0)")


def test_same_subset_budgets_are_found_from_the_pool_sizes():
    from dlfm.evaluation.grid import same_subset_budgets

    # sim_n_train=1200: 400 per class, so 400 and all draw the same labels; 25 and 100 do not
    assert same_subset_budgets([25, 100, 400, "all"], (400, 400, 400)) == {"all": 400}
    assert same_subset_budgets([25, 100, 400, "all"], (450, 400, 400)) == {}  # 400 leaves 50 of the first class out
    assert same_subset_budgets([10, 50, 600, "all"], (600,)) == {"all": 600}
    assert same_subset_budgets([5, 8, "all"], (8, 8, 8)) == {"all": 8}


def test_identical_label_subsets_run_once_and_are_reported_under_both_budgets(tiny_tasks):
    from dlfm.evaluation import summary

    torch.manual_seed(0)
    config = EvaluateConfig(tasks="classification", budgets="2,8,all", seeds="0,1", arms="pretrained-frozen,random-frozen",
                            epochs=1, min_steps=2)
    ran = []
    results = run_grid(config, {"classification": tiny_tasks["classification"]}, create_encoder("conv4"), torch.device("cpu"),
                       on_cell=lambda cell, compute: ran.append(cell) or compute())
    assert sorted({c.budget for c in ran}, key=str) == [2, 8]  # 8 per class is the whole pool: "all" is not run again
    assert len(ran) == 2 * 2 * 2 and len(results) == 3 * 2 * 2
    by_key = {(r.cell.budget, r.cell.arm, r.cell.seed): r for r in results}
    for arm in config.arm_list:
        for seed in (0, 1):
            twin = by_key[("all", arm, seed)]
            assert twin.metrics == by_key[(8, arm, seed)].metrics and twin.cell.same_labels_as == 8
    rows = summary.verdicts(results, {"classification": tiny_tasks["classification"]})
    assert [v["budget"] for v in rows] == ["2", "8"]  # one verdict per distinct label subset: none repeated for "all"
    assert "(8) (also budget all: the same labels)" in rows[1]["sentence"]
    for v in rows:  # the test-image bootstrap interval beside the seed interval, and the word honours both
        assert v["boot_low"] <= v["boot_high"] and "test-image bootstrap 95% CI" in v["sentence"]
        assert v["verdict"] in ("better", "worse", summary.TOO_FEW, summary.TOO_FEW_IMAGES)
        if not v["boot_low"] <= 0 <= v["boot_high"] and not v["ci_low"] <= 0 <= v["ci_high"]:
            assert v["verdict"] in ("better", "worse")
    text = summary.markdown(summary.aggregate(results), rows)
    assert "| 8 (8) |" in text and "| 8 (all) |" in text
    assert "conditional on this one encoder version" in text  # the report says what the intervals cover
    assert "Budget all draws the same labels as budget 8: its cells ran once and are reported under both." in text


def test_every_arm_runs_under_bf16_autocast_with_finite_metrics(tiny_tasks):
    from dlfm.training.runtime import autocast_for

    torch.manual_seed(0)
    config = EvaluateConfig(tasks="classification", budgets="2", seeds="0", epochs=1, min_steps=2, precision="bf16")
    config.validate()
    seen = []

    def autocast():  # the Runtime's factory, counted: every forward pass of every arm goes through it
        seen.append(1)
        return autocast_for(torch.device("cpu"), "bf16")()

    tasks = {"classification": tiny_tasks["classification"]}
    results = run_grid(config, tasks, create_encoder("conv4"), torch.device("cpu"), autocast=autocast)
    assert len(results) == 4 and seen
    assert all(np.isfinite(list(r.metrics.values())).all() for r in results)
    assert all(r.predictions.dtype == np.float32 for r in results)


def test_unknown_precision_is_refused():
    with pytest.raises(Exception, match="unknown precision 'fp16'"):
        EvaluateConfig(precision="fp16").validate()


def test_finetune_budgets_limit_only_the_fine_tune_arms(tiny_tasks):
    config = EvaluateConfig(budgets="2,5,all", finetune_budgets="5", seeds="0,1")
    config.validate()
    arms_at = {}
    for cell, _ in plan(config, tiny_tasks):
        arms_at.setdefault((cell.task, cell.budget), set()).add(cell.arm)
    frozen = {"pretrained-frozen", "random-frozen"}
    for task in tiny_tasks:
        assert arms_at[(task, 2)] == arms_at[(task, "all")] == frozen
        assert arms_at[(task, 5)] == set(config.arm_list)
    assert EvaluateConfig(budgets="2,all").finetune_budget_list == [2, "all"]  # empty: every budget


def test_markdown_shows_a_dash_for_an_arm_absent_at_the_largest_budget():
    from dlfm.evaluation import summary
    from dlfm.evaluation.grid import Cell, CellResult

    results = [CellResult(Cell("regression", budget, arm, seed, 24, 24), {"test/rel_mae": 0.9 + 0.01 * seed}, [], None)
               for seed in (0, 1) for budget, arms in ((2, ("pretrained-frozen", "pretrained-finetune")), ("all", ("pretrained-frozen",)))
               for arm in arms]
    text = summary.markdown(summary.aggregate(results), summary.verdicts(results))
    assert "| 24 (all) | 0.905 ± 0.007 | — |" in text and "### regression per parameter at 24 labelled images (all)" in text


def register_supervised(labelled) -> str:
    """A conv4 encoder registered as a supervised one trained on ``labelled``'s labels."""
    from dlfm.tracking import registry, stage_run

    torch.manual_seed(0)
    with stage_run("supervised", "supervised-test", "evaluate-labels", system_metrics=False) as run_id:
        return registry.register_encoder_version(create_encoder("conv4"), 64, "supervised", {}, labelled.digest, run_id,
                                                 labels=registry.label_tags("supervised", labelled))


def test_a_supervised_encoders_evaluation_says_it_saw_labels(tracking_uri, tiny_classification_dir, tiny_regression_dir):
    from dlfm.stages.evaluate import run_evaluate_stage

    # Trained on the regression set's "labels" stand-in: any labelled set other than the one evaluated.
    version = register_supervised(load_dataset(tiny_regression_dir))
    out = run_evaluate_stage(EvaluateConfig(encoder_uri=f"models:/dlfm-encoder/{version}", tasks="classification",
                                            classification_dataset=str(tiny_classification_dir), budgets="2", seeds="0",
                                            arms="pretrained-frozen,random-frozen", epochs=1, min_steps=1, batch_size=8,
                                            device="cpu", experiment_name="evaluate-labels"))
    tags = mlflow.MlflowClient().get_run(out["run_id"]).data.tags
    assert tags["dlfm.encoder_saw_labels"] == "true" and tags["dlfm.encoder_label_count"] == "24"
    assert out["markdown"].splitlines()[2].startswith("**This encoder saw labels:** version")


def test_evaluating_on_the_encoders_own_training_set_is_refused(tracking_uri, tmp_path, tiny_classification_dir):
    # In-process: the refusal is logic; that a ConfigError reaches the user as one line and exit 2 through
    # pipelines/evaluate.py is test_budget_larger_than_the_pool_is_one_error_line's subprocess.
    from dlfm.errors import ConfigError
    from dlfm.stages.evaluate import run_evaluate_stage

    version = register_supervised(load_dataset(tiny_classification_dir))
    config = EvaluateConfig(encoder_uri=f"models:/dlfm-encoder/{version}", tasks="classification",
                            classification_dataset=str(tiny_classification_dir), budgets="2", experiment_name="eval-own")
    with pytest.raises(ConfigError) as refused:
        run_evaluate_stage(config)
    message = str(refused.value)
    assert len(message.splitlines()) == 1 and message.startswith("classification dataset") and "trained or probed on" in message


def test_the_bootstrap_headline_is_the_macro_auc_of_the_drawn_images(tiny_tasks):
    """ClassificationTask.headline_on (rank form) equals classification_metrics' sklearn macro AUC on the same draw."""
    from dlfm.training.metrics import classification_metrics

    data = tiny_tasks["classification"]
    rng = np.random.default_rng(3)
    probs = rng.random((len(data.test.targets), 3)).round(1)  # rounded: ties, which both must rank the same way
    for _ in range(5):
        index = TASKS["classification"].resample(data, rng)
        expected = classification_metrics(probs[index], data.test.targets[index], data.class_names, "test")["test/macro_auc"]
        assert TASKS["classification"].headline_on(probs, data, index) == pytest.approx(expected, abs=1e-12)
        assert np.array_equal(np.bincount(data.test.targets[index]), np.bincount(data.test.targets))  # stratified
