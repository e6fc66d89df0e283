"""``dlfm server``: bad input gives one line; and, against real processes (PostgreSQL, moto S3,
``dlfm server``, pipeline subprocesses), a multitask + transfer round trip with auth checks.

The ``services`` tests need PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres). They skip
without it, and fail instead when DLFM_REQUIRE_SERVICES=1 (CI).
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import AWS_TEST_CREDENTIALS, REPO, free_port, require_postgres, run_script, spawn_process_group, stop_process_group
from dlfm import server
from dlfm.errors import ConfigError, DlfmError
from dlfm.tracking.store import check_tracking_server

ADMIN = ("admin", "admin-" + uuid.uuid4().hex[:16])
SECRETS = {"MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex, "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1]}
AWS = AWS_TEST_CREDENTIALS
ARTIFACT_BUCKET = "dlfm-artifacts"
DATASET_BUCKET = "dlfm-datasets"
S3_BUCKETS = (ARTIFACT_BUCKET, DATASET_BUCKET)  # created by the moto_s3 fixture (conftest)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The process failed with exactly one ``dlfm: error:`` line and no traceback; return it."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in lines if line.startswith("dlfm: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def dlfm_server(args: list[str], env_extra: dict, cwd: Path) -> subprocess.CompletedProcess:
    clean = {name: "" for name in ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION")}
    return run_script(["-m", "dlfm.cli", "server", *args], cwd=cwd, env_extra={**clean, **env_extra}, timeout=120)


# ----------------------------------------------------------------------------- bad input, no services


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
def test_missing_secret_is_one_line_naming_it(tmp_path):
    env = {**SECRETS, "MLFLOW_FLASK_SERVER_SECRET_KEY": ""}
    result = dlfm_server(["--backend-store-uri", f"sqlite:///{tmp_path}/m.db", "--artifacts-destination", str(tmp_path)], env, tmp_path)
    assert result.returncode == 2
    assert "MLFLOW_FLASK_SERVER_SECRET_KEY is not set" in one_error_line(result)

    env = {**SECRETS, "MLFLOW_AUTH_ADMIN_PASSWORD": ""}
    result = dlfm_server(["--backend-store-uri", f"sqlite:///{tmp_path}/m.db", "--artifacts-destination", str(tmp_path)], env, tmp_path)
    assert "MLFLOW_AUTH_ADMIN_PASSWORD is not set" in one_error_line(result)


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
def test_unreachable_backend_store_is_one_line(tmp_path):
    uri = f"postgresql://mlflow:hunter2-secret@127.0.0.1:{free_port()}/mlflow"
    result = dlfm_server(["--backend-store-uri", uri, "--artifacts-destination", "s3://any/x"], SECRETS, tmp_path)
    line = one_error_line(result)
    assert result.returncode == 2
    assert "backend store" in line and "unreachable" in line and "--backend-store-uri" in line
    assert "hunter2-secret" not in result.stderr  # the password is redacted


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
def test_missing_bucket_is_one_line(tmp_path, moto_s3):
    args = ["--backend-store-uri", f"sqlite:///{tmp_path}/m.db", "--artifacts-destination", "s3://no-such-bucket/mlflow",
            "--s3-endpoint-url", moto_s3.endpoint]
    result = dlfm_server(args, {**SECRETS, **AWS}, tmp_path)
    assert result.returncode == 2
    assert "bucket 'no-such-bucket' does not exist" in one_error_line(result)


def test_protections_cannot_be_switched_off():
    with pytest.raises(ConfigError, match="go after `--`"):
        server.check_mlflow_options(["stray"], env={})
    with pytest.raises(ConfigError, match="host and CORS protections stay on"):
        server.check_mlflow_options(["--disable-security-middleware"], env={})
    with pytest.raises(ConfigError, match="MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE"):
        server.check_mlflow_options([], env={"MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE": "true"})
    for option in ("allowed_hosts", "cors_allowed_origins"):
        args = SimpleNamespace(allowed_hosts=None, cors_allowed_origins=None)
        setattr(args, option, "a.org,*")
        with pytest.raises(ConfigError, match="'\\*'"):
            server.check_security_options(args)


def test_short_admin_password_is_refused():
    with pytest.raises(ConfigError, match="shorter than 12"):
        server.check_secrets({"MLFLOW_FLASK_SERVER_SECRET_KEY": "k", "MLFLOW_AUTH_ADMIN_PASSWORD": "short"})


def test_port_in_use_is_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ConfigError, match="pick another --port"):
            server.check_port_free("127.0.0.1", busy.getsockname()[1])


def test_mlflow_command_binds_localhost_and_passes_options_through():
    from dlfm.cli import build_parser

    args = build_parser().parse_args(["server", "--backend-store-uri", "postgresql://u@db/m", "--artifacts-destination",
                                      "s3://b/p", "--workers", "2", "--", "--static-prefix", "/mlflow"])
    command = server.mlflow_command(args)
    assert command[command.index("--app-name") + 1] == "basic-auth"
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--workers") + 1] == "2"
    assert "--serve-artifacts" in command and command[-2:] == ["--static-prefix", "/mlflow"]
    assert server.with_installed_driver("postgresql://u@db/m") in ("postgresql+psycopg2://u@db/m", "postgresql://u@db/m")


def test_auth_config_holds_no_password_and_is_private(tmp_path):
    path = server.write_auth_config(tmp_path / "auth" / "basic_auth.ini", "postgresql://u:pw@db/m", "admin", "READ")
    text = path.read_text()
    assert "admin_password" not in text and "default_permission = READ" in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_client_check_unreachable_server_is_one_line():
    start = time.monotonic()
    with pytest.raises(DlfmError, match="is unreachable.*MLFLOW_TRACKING_URI") as info:
        check_tracking_server(f"http://127.0.0.1:{free_port()}")
    assert "\n" not in str(info.value) and time.monotonic() - start < 10
    check_tracking_server("sqlite:///mlruns/mlflow.db")  # local stores are not checked


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
def test_entry_point_with_unreachable_server_is_one_line(tmp_path):
    env = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}", "MLFLOW_TRACKING_USERNAME": "someone",
           "MLFLOW_TRACKING_PASSWORD": "whatever-password"}
    result = run_script([str(REPO / "pipelines" / "multitask.py"), "--dataset", "model_ii", "--epochs", "1"], tmp_path, env, timeout=120)
    line = one_error_line(result)
    assert env["MLFLOW_TRACKING_URI"] in line and ("unreachable" in line or "cannot reach" in line)


# ----------------------------------------------------------------------------- real processes


@pytest.mark.parametrize("required", ["1", ""])
def test_missing_postgres_fails_only_when_required(required, monkeypatch):
    import psycopg2

    def refuse(**kwargs):
        raise psycopg2.OperationalError("connection refused")

    monkeypatch.setattr(psycopg2, "connect", refuse)
    monkeypatch.setenv("DLFM_REQUIRE_SERVICES", required)
    outcome = pytest.fail.Exception if required else pytest.skip.Exception
    with pytest.raises(outcome, match="PostgreSQL at 127.0.0.1:5432 is not available"):
        require_postgres()


@pytest.fixture(scope="module")
def team_server(postgres_uri, moto_s3, tmp_path_factory):
    """``dlfm server`` on PostgreSQL + moto S3 with basic auth, on a free port; stopped afterwards."""
    import requests

    workdir = tmp_path_factory.mktemp("server")
    port = free_port()
    log_path = workdir / "server.log"
    command = [sys.executable, "-m", "dlfm.cli", "server", "--backend-store-uri", postgres_uri,
               "--artifacts-destination", f"s3://{ARTIFACT_BUCKET}/mlflow", "--s3-endpoint-url", moto_s3.endpoint,
               "--port", str(port), "--workers", "1"]
    env = {**os.environ, **SECRETS, **AWS, "PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true"}
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION", "MLFLOW_S3_ENDPOINT_URL"):
        env.pop(name, None)
    with open(log_path, "wb") as log:
        process = spawn_process_group(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"dlfm server exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"dlfm server did not answer within 120 s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
        yield SimpleNamespace(url=url, process=process, log=log_path)
    finally:
        if not stop_process_group(process):
            raise AssertionError("dlfm server left processes behind after SIGTERM (killed them)")


def client_env(team_server, moto_s3, user=ADMIN) -> dict:
    """A workstation's environment: the server and a login; AWS only to read the s3:// dataset."""
    return {"MLFLOW_TRACKING_URI": team_server.url, "MLFLOW_TRACKING_USERNAME": user[0], "MLFLOW_TRACKING_PASSWORD": user[1],
            "MLFLOW_S3_ENDPOINT_URL": moto_s3.endpoint, **AWS, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}


@pytest.fixture(scope="module")
def multitask_run(team_server, moto_s3, tiny_classification_dir, tmp_path_factory):
    """One tiny multitask stage run through the server, on a dataset read from s3://."""
    from dlfm.data.remote import upload_s3_dataset

    dataset_uri = f"s3://{DATASET_BUCKET}/tiny"
    upload_s3_dataset(tiny_classification_dir, dataset_uri, endpoint_url=moto_s3.endpoint)
    workdir = tmp_path_factory.mktemp("workstation")
    result = run_script([str(REPO / "pipelines" / "multitask.py"), "--dataset", dataset_uri, "--encoder", "conv4",
                         "--epochs", "1", "--batch_size", "8", "--device", "cpu"],
                        cwd=workdir, env_extra=client_env(team_server, moto_s3), timeout=300)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n--- server log ---\n{team_server.log.read_text()[-3000:]}"
    return SimpleNamespace(workdir=workdir, dataset_uri=dataset_uri, stdout=result.stdout)


@pytest.fixture
def as_admin(team_server, monkeypatch):
    """An MlflowClient on the server, signed in as the admin."""
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN[1])
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    return MlflowClient(tracking_uri=team_server.url, registry_uri=team_server.url)


def rest(team_server, method: str, path: str, user=None, **kwargs):
    import requests

    return requests.request(method, f"{team_server.url}{path}", auth=user, timeout=30, **kwargs)


def add_user(team_server, name: str, experiment_id: str, permission: str) -> tuple[str, str]:
    """Create a user (admin REST API) and grant it ``permission`` on the experiment and on dlfm-encoder."""
    user = (name, f"{name}-" + uuid.uuid4().hex[:16])
    response = rest(team_server, "POST", "/api/2.0/mlflow/users/create", ADMIN, json={"username": user[0], "password": user[1]})
    assert response.status_code == 200, response.text
    for resource_type, resource_id in (("experiment", experiment_id), ("registered_model", "dlfm-encoder")):
        response = rest(team_server, "POST", "/api/3.0/mlflow/users/permissions/grant", ADMIN,
                        json={"username": user[0], "resource_type": resource_type, "resource_id": resource_id, "permission": permission})
        assert response.status_code == 200, response.text
    return user


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
@pytest.mark.services
def test_artifacts_are_objects_in_the_bucket(multitask_run, moto_s3, as_admin):
    experiment = as_admin.get_experiment_by_name("deeplense-fm")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # proxied: clients need no S3 credentials
    run = as_admin.search_runs([experiment.experiment_id], filter_string="tags.`dlfm.stage` = 'multitask'")[0]
    assert run.info.status == "FINISHED"
    keys = [item["Key"] for page in moto_s3.client.get_paginator("list_objects_v2").paginate(Bucket=ARTIFACT_BUCKET, Prefix="mlflow/")
            for item in page.get("Contents", [])]
    mine = [key for key in keys if f"/{run.info.run_id}/artifacts/" in key]
    assert any(key.endswith("figures/roc.png") for key in mine), keys
    assert any("/encoder/" in key for key in mine), keys
    inputs = run.inputs.dataset_inputs
    assert inputs and multitask_run.dataset_uri in inputs[0].dataset.source


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
@pytest.mark.services
def test_registered_version_and_candidate_alias(multitask_run, as_admin, tmp_path):
    version = as_admin.get_model_version_by_alias("dlfm-encoder", "candidate")
    assert version.tags.get("objective") == "multitask"
    run = as_admin.get_run(version.run_id)
    assert run.data.tags.get("dlfm.stage") == "multitask"
    downloaded = as_admin.download_artifacts(version.run_id, "encoder", str(tmp_path))
    assert any(Path(downloaded).iterdir())


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
@pytest.mark.services
def test_transfer_loads_the_encoder_by_stage(multitask_run, team_server, moto_s3, tiny_regression_dir, as_admin):
    if not (REPO / "pipelines" / "transfer.py").exists():
        pytest.skip("pipelines/transfer.py does not exist yet")
    candidate = as_admin.get_model_version_by_alias("dlfm-encoder", "candidate").version
    result = run_script([str(REPO / "pipelines" / "transfer.py"), "--encoder_stage", "candidate", "--dataset", str(tiny_regression_dir),
                         "--epochs", "2", "--seeds", "0", "--device", "cpu"],
                        cwd=multitask_run.workdir, env_extra=client_env(team_server, moto_s3), timeout=300)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert f"encoder version {candidate}" in result.stdout
    experiment = as_admin.get_experiment_by_name("deeplense-fm")
    runs = as_admin.search_runs([experiment.experiment_id], filter_string="tags.`dlfm.stage` = 'transfer'")
    assert runs and all(run.info.status == "FINISHED" for run in runs)


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
@pytest.mark.services
def test_unauthenticated_and_wrong_password_are_refused(team_server, monkeypatch):
    search = "/api/2.0/mlflow/experiments/search"
    assert rest(team_server, "GET", search, params={"max_results": 1}).status_code == 401
    assert rest(team_server, "GET", search, (ADMIN[0], "wrong-password-123"), params={"max_results": 1}).status_code == 401
    assert rest(team_server, "GET", search, ADMIN, params={"max_results": 1}).status_code == 200

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong-password-123")
    with pytest.raises(DlfmError, match=r"rejected the credentials of user 'admin' \(401\)") as info:
        check_tracking_server(team_server.url)
    assert "\n" not in str(info.value)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    with pytest.raises(DlfmError, match="requires a login"):
        check_tracking_server(team_server.url)


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
@pytest.mark.services
def test_wrong_password_entry_point_is_one_line(multitask_run, team_server, moto_s3):
    env = client_env(team_server, moto_s3, user=(ADMIN[0], "wrong-password-123"))
    result = run_script([str(REPO / "pipelines" / "multitask.py"), "--dataset", multitask_run.dataset_uri, "--epochs", "1"],
                        cwd=multitask_run.workdir, env_extra=env, timeout=120)
    assert "401" in one_error_line(result)


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
@pytest.mark.services
def test_read_only_user_cannot_create_runs_or_move_aliases(multitask_run, team_server, as_admin):
    experiment_id = as_admin.get_experiment_by_name("deeplense-fm").experiment_id
    candidate = as_admin.get_model_version_by_alias("dlfm-encoder", "candidate").version
    reader = add_user(team_server, "reader", experiment_id, "READ")

    assert rest(team_server, "GET", "/api/2.0/mlflow/experiments/get", reader, params={"experiment_id": experiment_id}).status_code == 200
    alias = rest(team_server, "GET", "/api/2.0/mlflow/registered-models/alias", reader, params={"name": "dlfm-encoder", "alias": "candidate"})
    assert alias.status_code == 200 and alias.json()["model_version"]["version"] == candidate

    created = rest(team_server, "POST", "/api/2.0/mlflow/runs/create", reader, json={"experiment_id": experiment_id})
    assert created.status_code == 403, created.text
    moved = rest(team_server, "POST", "/api/2.0/mlflow/registered-models/alias", reader,
                 json={"name": "dlfm-encoder", "alias": "production", "version": candidate})
    assert moved.status_code == 403, moved.text
    assert "production" not in as_admin.get_registered_model("dlfm-encoder").aliases


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
@pytest.mark.services
def test_editor_can_create_runs_and_move_aliases(multitask_run, team_server, as_admin):
    experiment_id = as_admin.get_experiment_by_name("deeplense-fm").experiment_id
    candidate = as_admin.get_model_version_by_alias("dlfm-encoder", "candidate").version
    editor = add_user(team_server, "editor", experiment_id, "EDIT")

    created = rest(team_server, "POST", "/api/2.0/mlflow/runs/create", editor, json={"experiment_id": experiment_id})
    assert created.status_code == 200, created.text
    run_id = created.json()["run"]["info"]["run_id"]
    assert rest(team_server, "POST", "/api/2.0/mlflow/runs/delete", editor, json={"run_id": run_id}).status_code in (200, 403)
    moved = rest(team_server, "POST", "/api/2.0/mlflow/registered-models/alias", editor,
                 json={"name": "dlfm-encoder", "alias": "staging", "version": candidate})
    assert moved.status_code == 200, moved.text
    assert as_admin.get_registered_model("dlfm-encoder").aliases.get("staging") == candidate
    source = as_admin.get_model_version("dlfm-encoder", candidate)
    registered = rest(team_server, "POST", "/api/2.0/mlflow/model-versions/create", editor,
                      json={"name": "dlfm-encoder", "source": source.source, "run_id": source.run_id, "model_id": source.source.rsplit("/", 1)[-1]})
    assert registered.status_code == 200, registered.text
    # Deleting the model needs MANAGE, which EDIT does not give.
    assert rest(team_server, "DELETE", "/api/2.0/mlflow/registered-models/delete", editor, json={"name": "dlfm-encoder"}).status_code == 403


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
@pytest.mark.services
def test_promote_without_permission_is_one_line_naming_it(multitask_run, team_server, moto_s3, as_admin):
    experiment_id = as_admin.get_experiment_by_name("deeplense-fm").experiment_id
    candidate = as_admin.get_model_version_by_alias("dlfm-encoder", "candidate").version
    viewer = add_user(team_server, "viewer", experiment_id, "READ")
    result = run_script(["-m", "dlfm.cli", "registry", "promote", candidate, "--stage", "production"], cwd=multitask_run.workdir,
                        env_extra=client_env(team_server, moto_s3, user=viewer), timeout=120)
    line = one_error_line(result)
    assert "refused user 'viewer' (403)" in line and "EDIT on registered model 'dlfm-encoder'" in line, line
    assert viewer[1] not in result.stdout + result.stderr
    assert "production" not in as_admin.get_registered_model("dlfm-encoder").aliases
