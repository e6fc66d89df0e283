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
