"""Heartbeat-stale trials: Optuna retries them, and their orphaned MLflow child runs end FAILED."""

from __future__ import annotations

import contextlib
import warnings

import optuna

from dlfm import tracking

STATE_TAG = "dlfm.trial_state"  # COMPLETE | PRUNED | FAIL (| RUNNING) on each trial's child run


class RetryStaleTrial:
    """Optuna's RetryHeartbeatStaleTrialCallback, plus ending the dead trial's MLflow child run FAILED."""

    def __init__(self, max_retry: int):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.retry(study, trial)
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            reason = f"trial {trial.number}: its worker stopped sending heartbeats (killed?); retried as a new trial"
            with contextlib.suppress(Exception):  # the study must go on even if the tracking server hiccups
                tracking.terminate_run(run_id, "FAILED", {STATE_TAG: "FAIL", "dlfm.error": reason})
