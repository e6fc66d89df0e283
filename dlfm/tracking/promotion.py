"""Promotion: moving a stage alias to a version (optionally only if better) and the promotion history.

MLflow keeps no history of alias moves (mlflow issue #2169), so every promotion is also recorded as a
run in the ``dlfm-promotions`` experiment: stage, version, previous version, time, user and reason.
"""

from __future__ import annotations

import contextlib
import getpass
import time
from dataclasses import dataclass

from dlfm.errors import RegistryError
from dlfm.redact import redact
from dlfm.tracking.model_trust import check_dlfm_made
from dlfm.tracking.model_versions import (HISTORY_EXPERIMENT, LOWER_IS_BETTER, MODEL_NAME, VersionInfo, _client,
                                          check_stage_name, get_version, probe_mismatch, registry_lock,
                                          version_for_stage, version_metric)


@dataclass
class PromotionOutcome:
    promoted: bool
    stage: str
    version: str
    previous: str | None
    message: str


def promote(version: str, stage: str, if_better: str | None = None, reason: str = "",
            rescored: dict[str, float] | None = None, beyond_noise: bool = False,
            interval: tuple[float, float] | None = None) -> PromotionOutcome:
    """Point ``stage`` at ``version``; with ``if_better``, only when its metric beats the holder's.

    The comparison happens before anything changes, and the alias moves in one call, so a
    refused or failed promotion leaves every alias as it was. A probe metric is compared only as one
    quantity (``probe_mismatch``): ``rescored`` ({version: value}) gives values measured again on one probe
    set (``main`` scores the candidate and the holder on its own), used instead of the logged ones; a holder
    that differs and was not scored again keeps the stage, with a line saying why. ``beyond_noise`` asks more of
    a candidate that beats a holder: ``interval``, the 95 % interval of candidate − holder (``main``'s gate
    measures it by a paired bootstrap over the probe set's val images), must lie wholly on the better side of 0;
    without an interval the holder stays.
    """
    from dlfm.tracking.store import check_store_writable

    check_stage_name(stage)
    if beyond_noise and not if_better:
        raise RegistryError("a difference beyond the noise needs a metric to compare: pass if_better (--if-better) too")
    check_store_writable()
    candidate = get_version(version)
    check_dlfm_made(f"models:/{MODEL_NAME}/{candidate.version}")  # before anything moves
    with registry_lock():  # the comparison, the move and its record happen as one step
        return _promote_locked(candidate, stage, if_better, reason, rescored or {}, beyond_noise, interval)


def _promote_locked(candidate: VersionInfo, stage: str, if_better: str | None, reason: str,
                    rescored: dict[str, float], beyond_noise: bool,
                    interval: tuple[float, float] | None) -> PromotionOutcome:
    version = candidate.version
    previous = version_for_stage(stage)
    if if_better:
        new_value = rescored.get(version, version_metric(candidate, if_better))
        if new_value is None:
            raise RegistryError(f"version {version} has no metric {if_better!r}; pick a metric its run logged, "
                                "e.g. val/macro_auc")
        if previous is not None and previous != candidate.version:
            holder = get_version(previous)
            mismatch = "" if previous in rescored else probe_mismatch(candidate, holder, if_better)
            if mismatch:
                return PromotionOutcome(False, stage, candidate.version, previous,
                                        f"not promoted: {mismatch}, so the two numbers are not one quantity; {stage} stays "
                                        f"at version {previous} (score both on one set: --probe-set DATASET, as main "
                                        f"does on its own; or promote without --if-better)")
            old_value = rescored.get(previous, version_metric(holder, if_better))
            scored_again = " (scored again on this probe set)" if previous in rescored else ""
            lower = any(word in if_better for word in LOWER_IS_BETTER)
            better = old_value is None or (new_value < old_value if lower else new_value > old_value)
            if not better:
                return PromotionOutcome(False, stage, candidate.version, previous,
                                        f"not promoted: version {candidate.version} {if_better}={new_value:.4f} does not beat "
                                        f"{stage} version {previous} ({old_value:.4f}{scored_again}); {stage} stays at "
                                        f"version {previous}")
            compared = f"{if_better} {new_value:.4f} beats {old_value:.4f}{scored_again}"
            if beyond_noise:
                noise = noise_refusal(interval, lower)
                if noise:
                    return PromotionOutcome(False, stage, candidate.version, previous,
                                            f"not promoted: version {candidate.version}'s {compared}, but {noise}; "
                                            f"{stage} stays at version {previous}")
                compared += f", beyond the noise (95 % interval of the difference [{interval[0]:+.4f}, {interval[1]:+.4f}])"
            reason = f"{reason}: {compared}" if reason else compared
        else:
            reason = reason or f"{if_better} {new_value:.4f}; no previous holder"
    if previous == candidate.version:
        return PromotionOutcome(False, stage, candidate.version, previous,
                                f"version {candidate.version} already holds {stage}; nothing changed")
    with permission_needed(f"EDIT on registered model '{MODEL_NAME}' (moving the {stage!r} alias needs it)"):
        _client().set_registered_model_alias(MODEL_NAME, stage, candidate.version)
    with permission_needed(f"EDIT on experiment '{HISTORY_EXPERIMENT}' (where promotions are recorded; "
                           f"{stage!r} already moved to version {candidate.version})"):
        record_promotion(stage, candidate.version, previous, reason or "manual promotion")
    scored_again = (f"; version {previous} scored again on this probe set: {rescored[previous]:.4f}"
                    if previous in rescored else "")
    return PromotionOutcome(True, stage, candidate.version, previous,
                            f"promoted version {candidate.version} to {stage} (was {previous or 'unset'}){scored_again}")


def noise_refusal(interval: tuple[float, float] | None, lower_is_better: bool) -> str:
    """Why a difference is not beyond the noise ("" when its interval lies wholly on the better side of 0)."""
    if interval is None:
        return ("the difference's noise was not measured (both versions scored again on one probe set: main's gate, "
                "or --probe-set), and the rule asks for a difference beyond it")
    low, high = interval
    if (high < 0) if lower_is_better else (low > 0):
        return ""
    return (f"its 95 % interval of the difference [{low:+.4f}, {high:+.4f}] reaches 0, so it is within the noise "
            "and the rule asks for a difference beyond it")


@contextlib.contextmanager
def permission_needed(permission: str):
    """Turn a tracking server's 403 inside the block into one RegistryError line naming ``permission``."""
    import os

    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as error:
        if error.get_http_status_code() != 403 and error.error_code != "PERMISSION_DENIED":
            raise
        user = os.environ.get("MLFLOW_TRACKING_USERNAME") or "(no MLFLOW_TRACKING_USERNAME)"
        raise RegistryError(f"the tracking server refused user {user!r} (403): it lacks {permission}; "
                            "ask an MLflow admin to grant it") from None


def promoting_user() -> str:
    """Who promotes: the MLflow login when there is one (what the server's permissions judge), and the OS user."""
    import os

    mlflow_user, os_user = os.environ.get("MLFLOW_TRACKING_USERNAME", ""), getpass.getuser()
    return f"{mlflow_user} (os: {os_user})" if mlflow_user and mlflow_user != os_user else (mlflow_user or os_user)


def record_promotion(stage: str, version: str, previous: str | None, reason: str) -> None:
    """One FINISHED run in the dlfm-promotions experiment per alias move."""
    client = _client()
    experiment = client.get_experiment_by_name(HISTORY_EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else _create_experiment(HISTORY_EXPERIMENT)
    user = promoting_user()
    run = client.create_run(experiment_id, run_name=f"promote-v{version}-{stage}", tags={
        "dlfm.stage": "promote", "promotion.stage": stage, "promotion.version": version,
        "promotion.previous_version": previous or "", "promotion.user": user, "promotion.reason": redact(reason),
        "promotion.time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "mlflow.user": user.split(" (os: ")[0],
    })
    client.set_terminated(run.info.run_id, "FINISHED")


def _create_experiment(name: str) -> str:
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        return client.create_experiment(name)
    except MlflowException:  # another process created it first
        return client.get_experiment_by_name(name).experiment_id


def promotion_history(stage: str | None = None) -> list[dict[str, str]]:
    """Recorded promotions, oldest first, optionally for one stage."""
    client = _client()
    experiment = client.get_experiment_by_name(HISTORY_EXPERIMENT)
    if experiment is None:
        return []
    filter_string = f"tags.`promotion.stage` = '{stage}'" if stage else ""
    runs = client.search_runs([experiment.experiment_id], filter_string=filter_string, order_by=["attributes.start_time ASC"],
                              max_results=5000)
    keys = ("time", "stage", "version", "previous_version", "user", "reason")
    return [{key: run.data.tags.get(f"promotion.{key}", "") for key in keys} for run in runs]
