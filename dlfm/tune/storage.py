"""Optuna storage URLs: the PostgreSQL driver, and opening the RDB storage (passwords masked by dlfm.redact).

One worker = one process running trials one at a time against a shared RDB storage (SQLite
on one machine, PostgreSQL across machines).
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import optuna

from dlfm.errors import ConfigError
from dlfm.redact import redact_uri as mask_password  # the one redaction function, under tune's old name
from dlfm.redact import scrub
from dlfm.tune.config import DEFAULT_STORAGE, TuneConfig
from dlfm.tune.retry import RetryStaleTrial



def postgres_driver(url: str) -> str:
    """``postgresql://`` → ``postgresql+psycopg2://`` when only psycopg2 (our pinned driver) is installed.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3; an explicit driver is kept.
    """
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def open_storage(config: TuneConfig) -> optuna.storages.RDBStorage:
    """The RDB storage with heartbeats and stale-trial retries; ConfigError (password masked) if unreachable."""
    url = postgres_driver(config.storage_url())
    if url == DEFAULT_STORAGE:
        Path("mlruns").mkdir(exist_ok=True)
    engine_kwargs: dict = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}  # seconds to wait for another worker's write lock
    elif url.startswith("postgresql"):
        engine_kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=config.heartbeat_interval,
                grace_period=config.grace_period, heartbeat_stale_trial_callback=RetryStaleTrial(config.max_retry))
    except Exception as error:  # noqa: BLE001 - drivers raise many types; all mean "cannot use this storage"
        cause = error.__cause__ if isinstance(error, ImportError) and error.__cause__ else error  # name the missing module
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        reason = scrub(reason, url, config.storage_url())
        raise ConfigError(f"cannot open Optuna storage {mask_password(config.storage_url())}: {reason}") from None
