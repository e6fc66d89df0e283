"""What a finished study holds: plain trial records, and the best trial's saved encoder."""

from __future__ import annotations

from pathlib import Path

import optuna

from dlfm import tracking
from dlfm.errors import DlfmError


def trial_records(study: optuna.Study) -> list[dict]:
    """Plain dicts of every trial (number, state, value, params, per-epoch values, user attrs)."""
    return [{
        "number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params),
        "intermediate": dict(sorted(t.intermediate_values.items())), "user_attrs": dict(t.user_attrs),
        "retry_of": t.system_attrs.get("failed_trial"),
    } for t in study.get_trials(deepcopy=False)]


def download_best_encoder(record: dict, dst_path: str | Path) -> Path:
    """Download the ``encoder/`` directory the best trial logged to its child run into ``dst_path``."""
    run_id = record["user_attrs"].get("mlflow_run_id")
    if not record["user_attrs"].get("encoder_logged") or not run_id:
        raise DlfmError(f"best trial {record['number']} logged no encoder; rerun tune to train it again")
    return tracking.download_run_artifacts(run_id, "encoder", dst_path)
