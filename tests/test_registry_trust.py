"""Only dlfm-made versions of dlfm-encoder are promoted or loaded: no code runs from the registry."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pytest

from conftest import run_script
from dlfm.errors import RegistryError
from dlfm.models import create_encoder
from dlfm.tracking import registry, stage_run
from dlfm.tracking.registry import MODEL_NAME

MARKER_ENV = "DLFM_TEST_PWNED_MARKER"


class Hijack(mlflow.pyfunc.PythonModel):
    """A hand-registered cloudpickled model: loading it runs load_context, i.e. arbitrary code."""

    def load_context(self, context):
        Path(os.environ[MARKER_ENV]).write_text("code ran")

    def predict(self, context, model_input, params=None):
        return model_input


def _register_dlfm_version() -> str:
    with stage_run("multitask", "multitask-trust", "trust-test", system_metrics=False) as run_id:
        return registry.register_encoder_version(create_encoder("conv4"), 64, "multitask", {"val/macro_auc": 0.6}, "f" * 64, run_id)


def _register_foreign_version() -> str:
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="hijack", python_model=Hijack(), pip_requirements=["mlflow"])
    return str(mlflow.register_model(info.model_uri, MODEL_NAME).version)


def test_foreign_version_is_neither_promoted_nor_loaded(tracking_uri, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    good = _register_dlfm_version()
    registry.promote(good, "production")
    evil = _register_foreign_version()

    with pytest.raises(RegistryError, match=rf"models:/{MODEL_NAME}/{evil} is not a dlfm-made encoder") as info:
        registry.promote(evil, "production")
    assert "\n" not in str(info.value)
    assert registry.version_for_stage("production") == good  # nothing moved

    # an alias moved by hand (MLflow UI) to the foreign version: transfer/evaluate refuse to load it
    mlflow.MlflowClient().set_registered_model_alias(MODEL_NAME, "staging", evil)
    uri, _ = registry.resolve_encoder_uri("staging")
    with pytest.raises(RegistryError, match="python_model"):
        registry.load_registered_encoder(uri)
    with pytest.raises(RegistryError, match="not a dlfm-made encoder"):
        registry.load_registered_encoder(f"models:/{MODEL_NAME}/{evil}")
    assert not marker.exists()
    assert registry.load_registered_encoder(f"models:/{MODEL_NAME}@production").embed_dim == 128


def test_cli_promote_of_foreign_version_is_one_line(tracking_uri, tmp_path):
    _register_dlfm_version()
    evil = _register_foreign_version()
    result = run_script(["-m", "dlfm.cli", "registry", "promote", evil, "--stage", "production"], cwd=tmp_path,
                        env_extra={"MLFLOW_TRACKING_URI": tracking_uri})
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("dlfm:")]
    assert len(errors) == 1 and "not a dlfm-made encoder" in errors[0], result.stderr[-2000:]


def _register_edited_copy(version: str, tmp_path: Path, marker: Path) -> str:
    """Issue 33 repro 2: version ``version``'s own files, pyfunc_encoder.py edited to run code, registered anew."""
    copy = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{MODEL_NAME}/{version}",
                                                    dst_path=str(tmp_path / "copy")))
    loader = copy / "code" / "dlfm" / "tracking" / "pyfunc_encoder.py"
    assert loader.is_file()
    loader.write_text(f"open({str(marker)!r}, 'w').write('code ran')\n" + loader.read_text())
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(copy), "encoder-multitask")
    return str(mlflow.register_model(f"runs:/{run.info.run_id}/encoder-multitask", MODEL_NAME).version)


def _pyfunc_load(uri: str, tmp_path: Path, tracking_uri: str):
    code = f"import mlflow; mlflow.pyfunc.load_model({uri!r}); print('loaded')"
    return run_script(["-c", code], cwd=tmp_path, env_extra={"MLFLOW_TRACKING_URI": tracking_uri})


@pytest.mark.slow  # pyfunc loads in fresh processes (an import of dlfm there must not be cached)
def test_edited_copy_of_a_version_is_neither_promoted_nor_loaded(tracking_uri, tmp_path):
    marker = tmp_path / "pwned"
    good = _register_dlfm_version()
    registry.promote(good, "production")
    evil = _register_edited_copy(good, tmp_path, marker)
    assert not marker.exists()
    with pytest.raises(RegistryError, match=r"carries dlfm code that is not the installed dlfm's "
                                            r"\(dlfm/tracking/pyfunc_encoder.py differs\)") as refused:
        registry.promote(evil, "production")
    assert "\n" not in str(refused.value) and registry.version_for_stage("production") == good
    with pytest.raises(RegistryError, match="carries dlfm code"):  # transfer and evaluate load through here
        registry.load_registered_encoder(f"models:/{MODEL_NAME}/{evil}")
    # mlflow.pyfunc, the README's use: the carried dlfm/__init__.py checks the copy before the edited file runs
    loaded = _pyfunc_load(f"models:/{MODEL_NAME}/{evil}", tmp_path, tracking_uri)
    assert loaded.returncode != 0 and not marker.exists(), loaded.stderr[-2000:]
    assert "carries dlfm code that is not the installed dlfm's (dlfm/tracking/pyfunc_encoder.py differs)" in loaded.stderr
    fine = _pyfunc_load(f"models:/{MODEL_NAME}@production", tmp_path, tracking_uri)
    assert fine.returncode == 0 and "loaded" in fine.stdout, fine.stderr[-2000:]


def test_an_older_dlfms_version_is_read_for_its_weights_but_not_promoted(tracking_uri, tmp_path):
    """main's gate scores a holder registered by another dlfm: its weights load through the installed loader, its carried
    code neither runs nor passes; promote and the full loader still refuse it, and a foreign version stays refused."""
    import torch

    marker = tmp_path / "pwned"
    good = _register_dlfm_version()
    older = _register_edited_copy(good, tmp_path, marker)  # carried code differs, as after an upgrade
    with pytest.raises(RegistryError, match="carries dlfm code"):
        registry.load_registered_encoder(f"models:/{MODEL_NAME}/{older}")
    read = registry.load_registered_weights(f"models:/{MODEL_NAME}/{older}")
    reference = registry.load_registered_encoder(f"models:/{MODEL_NAME}/{good}")
    assert all(torch.equal(a, b) for a, b in zip(read.state_dict().values(), reference.state_dict().values()))
    assert not marker.exists()  # the carried code never ran
    with pytest.raises(RegistryError, match="carries dlfm code"):
        registry.promote(older, "production")
    with pytest.raises(RegistryError, match="not a dlfm-made encoder"):
        registry.load_registered_weights(f"models:/{MODEL_NAME}/{_register_foreign_version()}")


def test_adopt_registers_an_older_dlfms_weights_with_this_dlfms_code(tracking_uri, tmp_path, capsys):
    """After an upgrade every earlier version is refused; `dlfm registry adopt` registers its weights again with the
    installed code (its own code never runs), keeping its provenance; the old version stays as it was."""
    import torch

    from dlfm.cli import main as cli

    marker = tmp_path / "pwned"
    good = _register_dlfm_version()
    older = _register_edited_copy(good, tmp_path, marker)  # carried code differs, as after an upgrade
    client = mlflow.MlflowClient()
    provenance = {registry.PROBE_DIGEST_TAG: "d" * 64, registry.PROBE_METHOD_TAG: "an older probe",
                  registry.LABEL_COUNT_TAG: "300", "val/macro_auc": "0.600000"}
    for key, value in provenance.items():
        client.set_model_version_tag(MODEL_NAME, older, key, value)

    outcome = registry.adopt(older, reason="upgraded dlfm")
    new = outcome.version
    assert outcome.adopted and new not in (good, older) and f"Version {older} is unchanged" in outcome.message
    assert not marker.exists()  # the old carried code never ran
    adopted = registry.load_registered_encoder(f"models:/{MODEL_NAME}/{new}")  # passes every check now
    reference = registry.load_registered_encoder(f"models:/{MODEL_NAME}/{good}")
    assert all(torch.equal(a, b) for a, b in zip(adopted.state_dict().values(), reference.state_dict().values()))
    info = registry.get_version(new)
    assert info.tags[registry.ADOPTED_FROM_TAG] == older
    assert {key: info.tags.get(key) for key in provenance} == provenance  # label provenance and numbers travel
    assert registry.version_metric(info, "val/macro_auc") == pytest.approx(0.6)  # logged on the adopt run
    run = client.get_run(info.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["dlfm.stage"] == "adopt"
    assert "pyfunc_encoder.py differs" in run.data.tags["dlfm.adopted_code_difference"]
    assert f"Version {older}'s weights" in client.get_model_version(MODEL_NAME, new).description
    assert registry.promote(new, "production").promoted
    with pytest.raises(RegistryError, match="carries dlfm code"):  # the old version is refused as before
        registry.load_registered_encoder(f"models:/{MODEL_NAME}/{older}")

    again = registry.adopt(older)  # the same installed code: the same new version, no new run
    assert not again.adopted and again.version == new and "adopted by this dlfm already" in again.message
    assert not registry.adopt(good).adopted  # already this dlfm's code: nothing to do
    with pytest.raises(RegistryError, match="not a dlfm-made encoder"):
        registry.adopt(_register_foreign_version())
    cli(["registry", "adopt", good])
    assert "already carries the installed dlfm's code" in capsys.readouterr().out
    with pytest.raises(SystemExit) as unknown:
        cli(["registry", "adopt", "999"])
    err = capsys.readouterr().err
    assert unknown.value.code != 0 and len(err.strip().splitlines()) == 1 and "999" in err
