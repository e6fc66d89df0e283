"""One redaction function: no password is printed, logged, tagged or put on a command line."""

from __future__ import annotations

import pytest

from dlfm.redact import redact_uri, scrub, uri_password

CANARY = "ssW0rdX-canary"


@pytest.mark.parametrize(("uri", "expected"), [
    ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),  # raw @: the tail "ss" once leaked
    ("postgresql://u:s3cr/t@h:5432/db", "postgresql://u:***@h:5432/db"),  # raw /: leaked whole
    ("https://ana:s3cr/t@mlflow.lab.org/", "https://ana:***@mlflow.lab.org/"),
    ("postgresql+psycopg2://u:p%40ss%2Fword@h/db", "postgresql+psycopg2://u:***@h/db"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
    ("postgresql://h/db?user=u&password=hunter2&sslmode=require", "postgresql://h/db?user=u&password=***&sslmode=require"),
    ("sqlite:///mlruns/optuna.db", "sqlite:///mlruns/optuna.db"),
    ("sqlite:////tmp/a:b@c.db", "sqlite:////tmp/a:b@c.db"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("", ""),
])
def test_redact_uri(uri, expected):
    assert redact_uri(uri) == expected


def test_every_old_name_is_the_one_function():
    from dlfm.tune import mask_password

    assert mask_password is redact_uri
    assert uri_password("postgresql://u:s3cr/t@h/db") == "s3cr/t"


def test_scrub_removes_driver_fragments_and_encodings():
    uri = f"postgresql://postgres:p@{CANARY}@127.0.0.1:9/db"
    message = f'could not translate host name "{CANARY}@127.0.0.1" to address; dsn {uri}'
    assert CANARY not in scrub(message, uri)
    encoded = "postgresql://u:p%40ss%2Fword" + CANARY + "@h/db"
    text = f"password p@ss/word{CANARY} rejected for {encoded}"
    assert CANARY not in scrub(text, encoded) and "word" + CANARY not in scrub(text, encoded)


def test_scrub_masks_secret_environment_values(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", CANARY)
    monkeypatch.setenv("OPTUNA_STORAGE", f"postgresql://u:{CANARY}2@h/db")
    assert scrub(f"401 for user x with {CANARY} and {CANARY}2") == "401 for user x with *** and ***"


def _tune(storage):
    from dlfm.training import TrainConfig
    from dlfm.tune import TuneConfig

    return TuneConfig(train=TrainConfig(objective="multitask"), storage=storage)


def test_tune_storage_with_password_is_refused_in_one_line():
    from dlfm.errors import ConfigError

    with pytest.raises(ConfigError, match="carries a password.*-P storage=env:OPTUNA_STORAGE") as info:
        _tune(f"postgresql://ana:{CANARY}@db/optuna").validate()
    assert CANARY not in str(info.value) and "\n" not in str(info.value)


def test_tune_storage_from_environment_never_reaches_params(monkeypatch):
    monkeypatch.setenv("OPTUNA_STORAGE", f"postgresql://ana:{CANARY}@db/optuna")
    config = _tune("env:OPTUNA_STORAGE")
    config.validate()
    assert config.storage_url().endswith(f"{CANARY}@db/optuna")
    assert CANARY not in str(config.params())


@pytest.mark.services
@pytest.mark.slow  # a real server process on PostgreSQL: run by make test, not make test-fast
def test_server_keeps_a_percent_encoded_password_off_argv_and_logs(tmp_path, postgres_storage):
    """Real dlfm server on PostgreSQL (trust auth ignores the password): starts, and no process's argv
    and no log line holds the password, raw or encoded."""
    import os
    import subprocess
    import sys
    import uuid

    from conftest import REPO, free_port, spawn_process_group, stop_process_group, wait_for_http

    name = postgres_storage.rsplit("/", 1)[1]
    port = free_port()
    secret = "p%40ss%2Fword" + CANARY  # percent-encoded p@ss/word...
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex,
           "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-" + uuid.uuid4().hex[:16], "MLFLOW_DISABLE_TELEMETRY": "true"}
    for leaked in ("MLFLOW_TRACKING_URI", "MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION"):
        env.pop(leaked, None)
    log = tmp_path / "server.log"
    command = [sys.executable, "-m", "dlfm.cli", "server", "--backend-store-uri",
               f"postgresql://postgres:{secret}@127.0.0.1:5432/{name}", "--artifacts-destination", str(tmp_path / "art"),
               "--port", str(port), "--workers", "1"]
    with open(log, "wb") as handle:
        process = spawn_process_group(command, cwd=tmp_path, env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", process, 120, f"dlfm server (log: {log})")
        argvs = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    if os.getpgid(int(pid)) == process.pid:
                        argvs.append(open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace"))
                except (OSError, ProcessLookupError):
                    pass
        assert len(argvs) >= 2  # dlfm server, mlflow server (and uvicorn)
        # the first dlfm process got it as an argument from this test; every process dlfm started did not
        children = [a for a in argvs if "dlfm.cli" not in a]
        assert children and not any(CANARY in a or "p%40ss" in a for a in children), children
    finally:
        stop_process_group(process)
    text = log.read_text()
    assert CANARY not in text and "Traceback" not in text, text[-3000:]


# ---------------------------------------------------------------- issue 33: one redactor, and it sees everything
AWS_ID, AWS_SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize(("text", "expected"), [
    ("postgresql://u@localhost/db?password=secret123", "postgresql://u@localhost/db?password=***"),
    ("postgresql://h/db?user=u&pwd=secret123&sslmode=require", "postgresql://h/db?user=u&pwd=***&sslmode=require"),
    ("https://h/x?token=secret123&secret=secret123&key=secret123", "https://h/x?token=***&secret=***&key=***"),
    ("https://b.s3.amazonaws.com/o?X-Amz-Credential=secret123&X-Amz-Signature=secret123",
     "https://b.s3.amazonaws.com/o?X-Amz-Credential=***&X-Amz-Signature=***"),
    ("s3://AKIA:secret123@bucket/ds", "s3://AKIA:***@bucket/ds"),
    (f"export AWS_ACCESS_KEY_ID={AWS_ID} AWS_SECRET_ACCESS_KEY={AWS_SECRET}", "export AWS_ACCESS_KEY_ID=*** AWS_SECRET_ACCESS_KEY=***"),
    ("Train a conv4 encoder on s3://AKIA:secret123@bucket/ds, up to 1 epochs.",
     "Train a conv4 encoder on s3://AKIA:***@bucket/ds, up to 1 epochs."),
    ("models:/dlfm-encoder@production", "models:/dlfm-encoder@production"),
    ("sqlite:///mlruns/mlflow.db and data/model_ii-abc", "sqlite:///mlruns/mlflow.db and data/model_ii-abc"),
])
def test_the_one_redactor(text, expected):
    from dlfm.redact import has_secret, redact

    assert redact(text) == expected and scrub(text) == expected
    assert has_secret(text) == (text != expected)


@pytest.mark.parametrize("value", ["postgresql://u@localhost/db?password=secret123", "s3://AKIA:secret123@bucket/ds",
                                   f"s3://bucket/ds?aws_secret_access_key={AWS_SECRET}"])
def test_every_secret_form_is_refused_as_a_param(value):
    """Issue 33 repro 3: a password in the query string passed `dlfm run` and tune's check."""
    from dlfm.errors import SecretInParams
    from dlfm.launch import check_no_secret_params

    with pytest.raises(SecretInParams) as refused:
        check_no_secret_params(["-e", "tune", "-P", f"storage={value}"])
    assert "secret123" not in str(refused.value) and AWS_SECRET not in str(refused.value)
    with pytest.raises(SecretInParams):
        _tune(value).validate()


def test_dlfm_writes_no_secret_itself(tracking_uri):
    """Issue 33 repro 4: dlfm's own mlflow.note.content held `-P dataset=s3://AKIA:secret123@bucket/ds` unmasked."""
    import mlflow

    from dlfm import tracking
    from dlfm.tracking import stage_run

    url = "s3://AKIA:secret123@bucket/ds"
    with stage_run("supervised", "supervised-conv4", "redact-test", tags={"dlfm.dataset": url},
                   description=f"Train a conv4 encoder on {url}.") as run_id:
        tracking.log_params({"dataset": url})
        tracking.set_tags({"dlfm.dataset_dir": url})
        tracking.log_text(f"read {url}", "notes.md")
        tracking.log_dict({"source": [url]}, "source.json")
        tracking.describe_run(f"done with {url}")
    run = mlflow.MlflowClient().get_run(run_id)
    written = str(run.data.params) + str(run.data.tags)
    written += mlflow.artifacts.load_text(f"runs:/{run_id}/notes.md") + str(mlflow.artifacts.load_dict(f"runs:/{run_id}/source.json"))
    assert "secret123" not in written and "s3://AKIA:***@bucket/ds" in run.data.tags["mlflow.note.content"]


def test_entry_point_log_lines_pass_through_the_redactor(capsys):
    from dlfm.entrypoint import run_entry_point

    def main():
        print("reading s3://AKIA:secret123@bucket/ds")
        print(f"key {AWS_ID}", file=sys.stderr)

    import sys
    saved = sys.stdout, sys.stderr
    try:
        run_entry_point(main)
    finally:
        sys.stdout, sys.stderr = saved
    out = capsys.readouterr()
    assert "secret123" not in out.out and AWS_ID not in out.err and "s3://AKIA:***@bucket/ds" in out.out
