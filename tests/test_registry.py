"""The dlfm-encoder registry: register, promote by alias, history, the --if-better gate, loading by stage."""

from __future__ import annotations

import ast
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml

from conftest import REPO, run_script
from dlfm.errors import RegistryError
from dlfm.models import create_encoder
from dlfm.tracking import registry, stage_run
from dlfm.tracking.registry import MODEL_NAME


def register(objective="multitask", val_auc=0.7, seed=0) -> str:
    """A conv4 encoder registered from a real (tiny) run with val/macro_auc logged."""
    import torch

    torch.manual_seed(seed)
    encoder = create_encoder("conv4")
    with stage_run(objective, f"{objective}-test", "registry-test", system_metrics=False) as run_id:
        metrics = {"val/macro_auc": val_auc, "val/accuracy": 0.5, "test/macro_auc": val_auc - 0.01, "test/accuracy": 0.5}
        mlflow.log_metrics(metrics)
        return registry.register_encoder_version(encoder, 64, objective, metrics, "f" * 64, run_id)


def aliases() -> dict[str, str]:
    return {alias: str(v) for alias, v in mlflow.MlflowClient().get_registered_model(MODEL_NAME).aliases.items()}


def test_new_version_is_a_candidate_with_tags_and_description(tracking_uri):
    version = register()
    info = registry.get_version(version)
    assert info.aliases == ["candidate"]
    for tag in ("objective", "encoder", "dataset_digest", "source_run_id", "val/macro_auc", "val/accuracy",
                "test/macro_auc", "test/accuracy"):
        assert tag in info.tags
    assert info.tags["encoder"] == "conv4" and info.tags["objective"] == "multitask"
    description = mlflow.MlflowClient().get_model_version(MODEL_NAME, version).description
    assert "multitask" in description and "val/macro_auc 0.7000" in description


def test_promote_and_load_by_stage_with_pyfunc(tracking_uri):
    version = register()
    outcome = registry.promote(version, "production")
    assert outcome.promoted and aliases()["production"] == version
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@production")
    embeddings = model.predict(np.random.rand(5, 1, 64, 64).astype(np.float32))
    assert embeddings.shape == (5, 128)
    assert model.metadata.signature is not None
    encoder = registry.load_registered_encoder(f"models:/{MODEL_NAME}@production")
    assert encoder.embed_dim == 128


def test_registered_model_loads_no_pickle(tracking_uri, tmp_path):
    version = register()
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}/{version}", dst_path=str(tmp_path)))
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    assert mlmodel["flavors"]["python_function"]["loader_module"] == "dlfm.tracking.pyfunc_encoder"
    assert not list(local.rglob("*.pkl")) and "python_model" not in mlmodel["flavors"]["python_function"]
    requirements = (local / "requirements.txt").read_text()
    assert "torch==" in requirements and "mlflow==" in requirements


def test_every_torch_load_in_the_package_is_weights_only():
    for path in (REPO / "dlfm").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "load" and \
                    getattr(node.func.value, "id", "") == "torch":
                keywords = {k.arg: k.value for k in node.keywords}
                assert "weights_only" in keywords and keywords["weights_only"].value is True, f"{path}:{node.lineno}"


def test_history_records_every_promotion(tracking_uri):
    first, second = register(seed=0), register(seed=1)
    registry.promote(first, "production", reason="first")
    registry.promote(second, "production", reason="second")
    history = registry.promotion_history("production")
    assert [(h["version"], h["previous_version"], h["reason"]) for h in history] == [(first, "", "first"), (second, first, "second")]
    assert all(h["user"] and h["time"] for h in history)


def test_history_records_the_mlflow_user_when_there_is_one(tracking_uri, monkeypatch):
    import getpass

    version = register()
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ana-mlflow")
    registry.promote(version, "staging")
    [record] = registry.promotion_history("staging")
    assert record["user"].startswith("ana-mlflow") and getpass.getuser() in record["user"]


def test_registering_the_same_thing_twice_gives_one_version(tracking_uri):
    encoder = create_encoder("conv4")
    with stage_run("tune", "tune-test", "registry-test", system_metrics=False) as run_id:
        first = registry.register_encoder_version(encoder, 64, "multitask", {}, "f" * 64, run_id, once_for="trial-run:abc")
        again = registry.register_encoder_version(encoder, 64, "multitask", {}, "f" * 64, run_id, once_for="trial-run:abc")
        other = registry.register_encoder_version(encoder, 64, "multitask", {}, "f" * 64, run_id, once_for="trial-run:def")
    assert again == first and other != first
    assert registry.versions_tagged(registry.ONCE_TAG, "trial-run:abc") == [first]


def test_the_later_of_two_racing_registrations_deletes_itself(tracking_uri, monkeypatch):
    """Two tune workers finish one study at once: both pass the first check, both register; one version stays."""
    encoder = create_encoder("conv4")
    from dlfm.tracking import registration

    real = registry.versions_tagged
    with stage_run("tune", "tune-test", "registry-test", system_metrics=False) as run_id:
        first = registry.register_encoder_version(encoder, 64, "multitask", {}, "f" * 64, run_id, once_for="trial-run:abc")
        checks = iter([[]])  # the racing worker's first look finds nothing yet
        monkeypatch.setattr(registration, "versions_tagged", lambda key, value: next(checks, None) or real(key, value))
        racer = registry.register_encoder_version(encoder, 64, "multitask", {}, "f" * 64, run_id, once_for="trial-run:abc")
    assert racer == first
    assert [v.version for v in registry.list_versions()] == [first] and aliases() == {"candidate": first}


def test_a_model_tag_written_by_a_racing_process_is_not_an_error(tracking_uri, monkeypatch):
    """Both processes see the model's tags missing; the loser's insert fails on the winner's identical row."""
    from mlflow.entities.model_registry import RegisteredModel
    from mlflow.exceptions import MlflowException

    register()
    real_get = mlflow.MlflowClient.get_registered_model
    stale = RegisteredModel(MODEL_NAME, description=real_get(mlflow.MlflowClient(), MODEL_NAME).description)  # no tags yet
    views = iter([stale])  # the first read is the view the racing process had before the other one wrote
    monkeypatch.setattr(mlflow.MlflowClient, "get_registered_model", lambda self, name: next(views, None) or real_get(self, name))

    def lose_the_insert(self, name, key, value):
        raise MlflowException("UNIQUE constraint failed: registered_model_tags.workspace, registered_model_tags.key")

    monkeypatch.setattr(mlflow.MlflowClient, "set_registered_model_tag", lose_the_insert)
    registry.describe_registered_model()  # the values it wanted are there: no error


def test_if_better_gate_both_ways(tracking_uri):
    good, worse, best = register(val_auc=0.8, seed=0), register(val_auc=0.6, seed=1), register(val_auc=0.9, seed=2)
    registry.promote(good, "production")
    refused = registry.promote(worse, "production", if_better="val/macro_auc")
    assert not refused.promoted and "does not beat" in refused.message
    assert aliases()["production"] == good
    accepted = registry.promote(best, "production", if_better="val/macro_auc")
    assert accepted.promoted and aliases()["production"] == best
    assert len(registry.promotion_history("production")) == 2


def test_failed_if_better_leaves_every_alias_as_it_was(tracking_uri):
    first, second = register(val_auc=0.8, seed=0), register(val_auc=0.6, seed=1)
    registry.promote(first, "staging")
    before = aliases()
    with pytest.raises(RegistryError, match="no metric"):
        registry.promote(second, "staging", if_better="val/not_a_metric")
    registry.promote(second, "staging", if_better="val/macro_auc")
    assert aliases() == before


def test_alias_moved_by_hand_in_the_ui_does_not_break_anything(tracking_uri):
    first, second = register(seed=0), register(seed=1)
    registry.promote(first, "production")
    mlflow.MlflowClient().set_registered_model_alias(MODEL_NAME, "production", second)  # what the UI does
    assert registry.version_for_stage("production") == second
    outcome = registry.promote(first, "production")
    assert outcome.previous == second
    assert registry.promotion_history()[-1]["previous_version"] == second


@pytest.mark.parametrize("call,match", [
    (lambda: registry.promote("999", "production"), "no version '999'"),
    (lambda: registry.version_for_run("0" * 32), "registered no"),
    (lambda: registry.resolve_encoder_uri("qa"), "existing stages"),
    (lambda: registry.promote("1", "Prod!"), "invalid stage"),
])
def test_registry_errors_are_clear(call, match, tracking_uri):
    register()
    with pytest.raises(RegistryError, match=match):
        call()


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
def test_registry_cli_list_promote_history(tracking_uri, tmp_path):
    version = register()
    promote = run_script(["-m", "dlfm.cli", "registry", "promote", version, "--stage", "staging"], cwd=tmp_path)
    assert promote.returncode == 0 and f"promoted version {version} to staging" in promote.stdout
    listing = run_script(["-m", "dlfm.cli", "registry", "list"], cwd=tmp_path).stdout
    assert "candidate,staging" in listing and "multitask" in listing and "conv4" in listing
    history = run_script(["-m", "dlfm.cli", "registry", "history"], cwd=tmp_path).stdout
    assert "staging" in history and version in history
    missing = run_script(["-m", "dlfm.cli", "registry", "promote", "42", "--stage", "production"], cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr and "no version '42'" in missing.stderr


def test_registry_cli_in_process(tracking_uri, capsys):
    """The fast lane's twin of the subprocess CLI test: same commands through dlfm.cli.main."""
    from dlfm.cli import main

    version = register()
    main(["registry", "promote", version, "--stage", "staging"])
    assert f"promoted version {version} to staging" in capsys.readouterr().out
    main(["registry", "list"])
    listing = capsys.readouterr().out
    assert "candidate,staging" in listing and "val/probe_macro_auc" in listing.splitlines()[0]  # the number main ranks on
    assert "f" * 12 in listing.splitlines()[2]  # the dataset digest tells main's spread versions apart
    with pytest.raises(SystemExit) as exit_info:
        main(["registry", "promote", "42", "--stage", "production"])
    assert exit_info.value.code == 2 and "no version '42'" in capsys.readouterr().err


def test_pyfunc_normalises_raw_flux_and_refuses_a_wrong_shape_in_one_line(tracking_uri):
    from dlfm.data.dataset import normalize_images

    version = register()
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{version}")
    raw = np.random.default_rng(0).gamma(2.0, 40.0, size=(3, 1, 64, 64)).astype(np.float32) + 5.0  # counts, not [0, 1]
    # The model owns its preprocessing: raw flux and the training loaders' normalised images embed alike.
    np.testing.assert_allclose(model.predict(raw), model.predict(normalize_images(raw)), rtol=1e-5, atol=1e-5)
    # Any size the encoder takes embeds (one version across instruments, issue 22); one it cannot take is one line.
    assert model.predict(np.random.default_rng(1).random((2, 1, 150, 150), dtype=np.float32)).shape == (2, 128)
    for shape, expected in (((2, 1, 4, 4), "needs images of at least"), ((2, 1, 32, 48), "square images shaped (N, 1, S, S)")):
        with pytest.raises(Exception) as refused:
            model.predict(np.zeros(shape, dtype=np.float32))
        message = str(refused.value)
        assert expected in message and str(shape) in message and len(message) < 400  # no dump of the array
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}/{version}"))
    assert (local / "serving_input_example.json").exists()  # serving and the UI show a sample payload
    assert "raw" in mlflow.MlflowClient().get_model_version(MODEL_NAME, version).description
    assert "raw flux" in mlflow.MlflowClient().get_registered_model(MODEL_NAME).description


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
def test_mlflow_models_serve_works_from_outside_the_repo(tracking_uri, tmp_path):
    """`mlflow models serve -m models:/dlfm-encoder@production --env-manager local` from a folder without dlfm."""
    import json
    import os
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    from conftest import free_port, spawn_process_group, stop_process_group, wait_for_http

    registry.promote(register(), "production")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_RUN_ID")}
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    # The installed dlfm is the one under test (the venv's editable install may point at another checkout):
    # the carried copy is checked against it (docs/security.md), and must be what loads.
    env["PYTHONPATH"] = str(REPO)
    probe = subprocess.run([sys.executable, "-c", "import mlflow, sys; m = mlflow.pyfunc.load_model('models:/dlfm-encoder@production'); "
                            "print(sys.modules['dlfm'].__file__)"], cwd=outside, env=env, capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert "/code/dlfm/" in probe.stdout, probe.stdout
    port = free_port()
    mlflow_cli = str(Path(sys.executable).with_name("mlflow"))
    server = spawn_process_group([mlflow_cli, "models", "serve", "-m", "models:/dlfm-encoder@production", "--env-manager",
                                  "local", "-p", str(port), "-h", "127.0.0.1"], cwd=outside, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", server, 180, "mlflow models serve")

        def invoke(payload: dict):
            request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(payload).encode(),
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        local = Path(mlflow.artifacts.download_artifacts("models:/dlfm-encoder@production"))
        status, body = invoke(json.loads((local / "serving_input_example.json").read_text()))
        assert status == 200 and np.asarray(body["predictions"]).shape == (2, 128)
        status, body = invoke({"inputs": np.random.default_rng(0).random((1, 1, 48, 48)).tolist()})
        assert status == 200 and np.asarray(body["predictions"]).shape == (1, 128)  # any size the encoder takes (issue 22)
        status, body = invoke({"inputs": np.zeros((1, 1, 4, 4)).tolist()})
        # The scoring server prefixes MLflow's summary of the payload (numpy's "..." repr); the reason is one line.
        assert status == 400 and len(body["message"]) < 2000, body["message"][:3000]
        assert body["message"].splitlines()[-1].endswith(
            "cannot embed images of shape (1, 1, 4, 4): encoder 'conv4' needs images of at least 16 px a side, got 4 px")
    finally:
        stop_process_group(server)


class _Labelled:
    """A labelled dataset as label_tags reads it: a digest and split indices."""

    digest = "a" * 64

    def indices(self, split):
        return np.arange({"train": 120, "val": 30, "test": 30}[split])


def test_a_version_records_how_many_labels_of_which_dataset_its_training_read(tracking_uri):
    supervised = registry.label_tags("supervised", _Labelled())
    assert supervised[registry.LABEL_COUNT_TAG] == "120" and supervised[registry.LABEL_DIGEST_TAG] == "a" * 64
    assert supervised[registry.LABEL_SELECTION_TAG] == "30 val labels"  # its best epoch was chosen on val/macro_auc
    for objective in ("autoencoder", "mae"):  # probed on the set, trained on none of its labels
        tags = registry.label_tags(objective, _Labelled())
        assert (tags[registry.LABEL_COUNT_TAG], tags[registry.LABEL_SELECTION_TAG]) == ("0", "none")
        assert tags[registry.PROBE_DIGEST_TAG] == "a" * 64
    with stage_run("supervised", "supervised-test", "registry-test", system_metrics=False) as run_id:
        version = registry.register_encoder_version(create_encoder("conv4"), 64, "supervised", {}, "a" * 64, run_id,
                                                    labels=supervised)
    labels = registry.label_provenance(registry.get_version(version))
    assert labels.saw_labels and labels.label_count == "120" and "a" * 64 in labels.digests
    assert labels.sentence(version).startswith("**This encoder saw labels:**")
    # A version registered without the tags falls back on its objective: a multitask one saw an unknown number.
    old = registry.label_provenance(registry.VersionInfo("9", [], {"objective": "multitask"}, "", 0.0))
    assert old.saw_labels and old.label_count == "unknown"
    assert not registry.label_provenance(registry.VersionInfo("9", [], {"objective": "mae"}, "", 0.0)).saw_labels


def test_pyfunc_reads_images_of_another_pixel_scale_on_the_encoders_grid(tracking_uri):
    """An encoder pretrained at 0.101 arcsec/px (a multi-instrument corpus) serves Model I's 150-px 0.05 arcsec/px
    images on its own grid when the client says their scale, as evaluate reads a dataset."""
    import torch

    from dlfm.data.dataset import normalize_images
    from dlfm.data.resample import resample_images

    torch.manual_seed(0)
    encoder = create_encoder("conv4", pixel_scale=0.101).eval()
    with stage_run("autoencoder", "autoencoder-test", "registry-test", system_metrics=False) as run_id:
        version = registry.register_encoder_version(encoder, 74, "autoencoder", {"val/macro_auc": 0.7}, "f" * 64, run_id)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{version}")
    raw = np.random.default_rng(0).gamma(2.0, 40.0, size=(3, 1, 150, 150)).astype(np.float32)
    with torch.no_grad():
        on_grid = encoder(torch.from_numpy(resample_images(normalize_images(raw), 74))).numpy()
        as_given = encoder(torch.from_numpy(normalize_images(raw))).numpy()
    np.testing.assert_allclose(model.predict(raw, params={"pixel_scale": 0.05}), on_grid, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.predict(raw), as_given, rtol=1e-5, atol=1e-5)  # no scale given: as before
    assert not np.allclose(on_grid, as_given, atol=1e-3)  # the grid matters to this encoder
    np.testing.assert_allclose(model.predict(raw, params={"pixel_scale": 0.101}), as_given, rtol=1e-5, atol=1e-5)
    with pytest.raises(Exception, match="pixel_scale=-1.0 is negative"):
        model.predict(raw, params={"pixel_scale": -1.0})


def test_pyfunc_names_the_resampled_size_a_vit_cannot_take(tmp_path):
    from dlfm.models.serialization import save_encoder
    from dlfm.tracking.pyfunc_encoder import _load_pyfunc

    save_encoder(create_encoder("vit_tiny", pixel_scale=0.101), tmp_path, image_size=64, objective="mae")
    served = _load_pyfunc(str(tmp_path))
    with pytest.raises(Exception) as refused:  # 150 px at 0.05 arcsec/px is 74 px on the encoder's grid: no 8-px tokens
        served.predict(np.zeros((1, 1, 150, 150), dtype=np.float32), params={"pixel_scale": 0.05})
    assert "(1, 1, 150, 150) (resampled to 74 px)" in str(refused.value)
