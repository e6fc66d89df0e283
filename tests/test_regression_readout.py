"""Regression on any dataset: the simulator's lens targets keep their derived parameters; an imported set's
numeric CSV columns are learned and reported one MAE each (evaluate and transfer, in process)."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from dlfm.cli import main
from dlfm.sources import load_dataset
from dlfm.errors import DatasetError
from dlfm.evaluation import TASKS, EvaluateConfig, run_grid, summary
from dlfm.evaluation.regression import COLUMN_UNIT, LENS, REPORTED, mae_per_parameter
from dlfm.models import create_encoder
from dlfm.stages.evaluate import run_evaluate_stage
from dlfm.stages.transfer import run_transfer_stage
from dlfm.transfer import TransferConfig

SIZE = 64  # the registered conv4's image size
N = 40


def _import_lenses(tmp_path, capsys, columns: dict[str, np.ndarray], seed: int = 0):
    """40 random images whose brightness scales with ``scale`` and a CSV of ``columns``, imported without labels."""
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.5, 2.0, N)
    np.save(tmp_path / "images.npy", (rng.random((N, SIZE, SIZE)) * scale[:, None, None]).astype(np.float32))
    table = pd.DataFrame({name: values(scale, rng) if callable(values) else values for name, values in columns.items()})
    table.to_csv(tmp_path / "params.csv", index=False)
    out = tmp_path / "data" / "lenses"
    try:
        main(["dataset", "import", str(tmp_path / "images.npy"), "--params", str(tmp_path / "params.csv"), "--out", str(out)])
    except SystemExit as exit_info:
        assert exit_info.code == 0, capsys.readouterr().err
    numeric = ", ".join(name for name in table.columns if table[name].dtype.kind == "f")
    assert f"regress its columns {numeric}: mlflow run . -e evaluate" in capsys.readouterr().out
    return out, table


# theta_E follows brightness; sigma_v is noise; `survey` is text (not a target)
REAL = {"theta_E": lambda scale, rng: 0.8 + 0.4 * scale, "sigma_v": lambda scale, rng: rng.normal(250.0, 30.0, N),
        "survey": ["hsc"] * N}



def test_an_imported_csv_is_regressed_on_its_own_columns(tmp_path, capsys):
    lenses, table = _import_lenses(tmp_path, capsys, REAL)
    dataset = load_dataset(lenses)
    data = TASKS["regression"].load(dataset, str(lenses))
    assert data.readout.kind == "columns" and data.readout.reported == ("theta_E", "sigma_v")  # the text column is not a target
    assert data.readout.unit_label("sigma_v") == COLUMN_UNIT and data.readout.units == {}
    truth = {s: dataset.get_params(s)[["theta_E", "sigma_v"]].to_numpy() for s in ("train", "test")}
    np.testing.assert_array_equal(data.test.targets, truth["test"])
    baseline = np.abs(truth["test"] - truth["train"].mean(axis=0)).mean(axis=0)  # MAE of predicting the train mean
    assert [data.baseline["test/mae_theta_E"], data.baseline["test/mae_sigma_v"]] == pytest.approx(baseline)

    config = EvaluateConfig(tasks="regression", budgets="all", seeds="0", arms="pretrained-frozen,random-frozen", epochs=2,
                            min_steps=2)
    torch.manual_seed(0)
    results = run_grid(config, {"regression": data}, create_encoder("conv4"), torch.device("cpu"))
    assert len(results) == 2
    for result in results:
        assert set(result.metrics) == {"test/mae_theta_E", "test/mae_sigma_v", "test/rel_mae"}
        ratios = [result.metrics[f"test/mae_{c}"] / data.baseline[f"test/mae_{c}"] for c in ("theta_E", "sigma_v")]
        assert np.isfinite(result.metrics["test/rel_mae"]) and result.metrics["test/rel_mae"] == pytest.approx(np.mean(ratios))


def test_evaluate_and_transfer_stages_report_the_csv_columns(production_version, tmp_path, capsys):
    lenses, _ = _import_lenses(tmp_path, capsys, REAL)
    evaluated = run_evaluate_stage(EvaluateConfig(tasks="regression", regression_dataset=str(lenses), budgets="all", seeds="0",
                                                arms="pretrained-frozen,random-frozen", epochs=1, min_steps=1,
                                                experiment_name="regress-test"))
    client = mlflow.MlflowClient()
    parent = client.get_run(evaluated["run_id"])
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 2
    for child in children:
        assert {"test/mae_theta_E", "test/mae_sigma_v"} <= set(child.data.metrics)
        assert not any(f"test/mae_{name}" in child.data.metrics for name in ("q", "phi", "e1"))
        assert np.isfinite(child.data.metrics["test/rel_mae"])
    assert f"| theta_E ({COLUMN_UNIT}) |" in evaluated["markdown"] and f"| sigma_v ({COLUMN_UNIT}) |" in evaluated["markdown"]
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert "figures/label_efficiency_regression.png" in figures

    transfer = run_transfer_stage(TransferConfig(dataset=str(lenses), epochs=1, seeds="0", experiment_name="regress-test"))
    assert [row["parameter"] for row in transfer["table"]] == ["theta_E", "sigma_v"]
    assert f"| sigma_v ({COLUMN_UNIT}) |" in transfer["transfer_markdown"]
    metrics = client.get_run(transfer["run_id"]).data.metrics
    assert {"test/mae_theta_E_pretrained", "test/mae_ratio_sigma_v"} <= set(metrics)


@pytest.mark.parametrize("columns, message", [
    ({"theta_E": lambda scale, rng: scale, "sigma_v [km/s]": lambda scale, rng: rng.normal(size=N)},
     "target column 'sigma_v [km/s]' has characters metric names refuse"),
])
def test_columns_that_cannot_be_regressed_are_one_line_naming_them(tmp_path, capsys, columns, message):
    lenses, _ = _import_lenses(tmp_path, capsys, columns)
    with pytest.raises(DatasetError) as error:
        TASKS["regression"].load(load_dataset(lenses), str(lenses))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_target_with_no_spread_is_refused_at_import_in_one_line(tmp_path, capsys):
    with pytest.raises(AssertionError) as refused:  # _import_lenses asserts the import exits 0
        _import_lenses(tmp_path, capsys, {"theta_E": lambda scale, rng: scale, "z_lens": np.full(N, 0.5)})
    message = str(refused.value).splitlines()[0]
    assert message.startswith("dlfm: error:") and "column 'z_lens' is 0.5 for every image" in message
    assert not (tmp_path / "data" / "lenses").exists()


def test_a_simulated_regression_preset_keeps_the_lens_parameters(tiny_regression_dir):
    data = TASKS["regression"].load(load_dataset(tiny_regression_dir), "tiny-reg")
    assert data.readout is LENS and data.readout.reported == REPORTED and len(REPORTED) == 11
    train, test = data.train.targets, data.test.targets
    assert data.baseline == mae_per_parameter(np.repeat(train.mean(0, keepdims=True), len(test), 0), test, "test")
    config = EvaluateConfig(tasks="regression", budgets="all", seeds="0", arms="pretrained-frozen", epochs=1, min_steps=1)
    [result] = run_grid(config, {"regression": data}, create_encoder("conv4"), torch.device("cpu"))
    assert set(result.metrics) <= {f"test/mae_{name}" for name in REPORTED} | {"test/rel_mae"}
    assert {f"test/mae_{name}" for name in data.readout.averaged} <= set(result.metrics)
    text = summary.markdown(summary.aggregate([result]), [], data)  # the per-parameter table, units from the readout
    assert "| theta_E (arcsec) |" in text and "| psi_ext (rad), derived, lenses with gamma_ext > 0.02 |" in text
    assert text.count(" (dimensionless) |") == 4 and "| ellipticity (dimensionless), derived |" in text
    assert "test/rel_mae is the mean over the 7 independent targets" in text


def test_rel_mae_averages_only_the_independent_targets():
    """The 7 lens columns count once each: |e|, φ, |γ| and ψ are reported apart and never enter the mean."""
    from dlfm.evaluation.regression import DERIVED, TARGETS

    assert LENS.averaged == TARGETS and LENS.derived == DERIVED and "q" not in REPORTED
    metrics = {f"test/mae_{name}": 1.0 for name in TARGETS} | {f"test/mae_{name}": 100.0 for name in DERIVED}
    baseline = {f"test/mae_{name}": 2.0 for name in REPORTED}
    assert LENS.rel_mae(metrics, baseline) == pytest.approx(0.5)  # the derived 100s would give 0.5 · 7/11 + 50 · 4/11


def test_an_angle_is_scored_only_where_its_modulus_is_above_the_floor():
    from dlfm.evaluation.regression import ELLIPTICITY_FLOOR

    true = np.zeros((2, 7))
    true[0, 3] = 0.2  # |e| = 0.2: φ = 0, defined
    true[1, 3] = ELLIPTICITY_FLOOR / 10  # |e| ~ 0: φ undefined, left out
    predicted = true.copy()
    predicted[:, 4] = true[:, 3]  # e2 = e1: φ = π/8 for both
    metrics = mae_per_parameter(predicted, true, "test")
    assert metrics["test/mae_phi"] == pytest.approx(np.pi / 8)  # the defined lens only
    assert "test/mae_psi_ext" not in metrics  # no test lens has |γ| above its floor
