"""One Optuna trial = one MLflow child run around the training stage's ``fit``, reported each epoch.

Trials report their search space's ``epoch_score`` every epoch so the pruner can stop them (a
probed score such as mae's exists only after training: those trials report nothing and run to the
end); the best-so-far trial logs its encoder (``encoder/``), which the tune stage registers as it is.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import optuna
from optuna.trial import TrialState

from dlfm import tracking
from dlfm.training import TrainConfig, fit
from dlfm.tune.config import TuneConfig
from dlfm.tune.retry import STATE_TAG
from dlfm.tune.space import SEARCH_SPACES, search_space


@dataclass
class TrialSetup:
    """What every trial of one worker shares: data, device and where to log."""

    config: TuneConfig
    parent_run_id: str
    splits: dict
    class_names: tuple[str, ...]
    image_size: int
    runtime: object  # dlfm.training.runtime.Runtime, resolved once per worker


class NonFiniteObjectiveError(RuntimeError):
    """The trial's score came out NaN or infinite."""


def counts_toward_budget(trial: optuna.trial.FrozenTrial) -> bool:
    """COMPLETE, PRUNED, and FAIL from an error in the trial itself.

    A FAIL without ``fail_reason`` is a dead worker's (heartbeat) or an interrupted trial:
    it is retried or replaced, so it does not use up the budget.
    """
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and "fail_reason" in trial.user_attrs


def wants_another_trial(study: optuna.Study, n_trials: int) -> bool:
    """Retries are waiting, or finished plus running trials are fewer than ``n_trials``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # turn dead workers' trials into WAITING retries first
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials):
        return True
    done = sum(counts_toward_budget(t) for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return done + running < n_trials


def make_objective(setup: TrialSetup, on_trial_start: Callable[[], None] = lambda: None):
    """The Optuna objective: one MLflow child run around ``fit``, reporting each epoch for pruning."""

    def objective(trial: optuna.Trial) -> float:
        on_trial_start()
        try:
            return _run_trial(trial, setup)
        except optuna.TrialPruned:
            raise
        except Exception as error:  # noqa: BLE001 - recorded as the FAIL reason; optimize(catch=...) goes on
            text = str(error).strip().splitlines()[0] if str(error).strip() else ""
            trial.set_user_attr("fail_reason", f"{type(error).__name__}: {text}"[:1000])
            raise

    return objective


def _retry_of(trial: optuna.Trial) -> int | None:
    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    return frozen.system_attrs.get("failed_trial")


def _run_trial(trial: optuna.Trial, setup: TrialSetup) -> float:
    config = search_space(trial, setup.config.train, setup.config.tune_lr)
    tags = {"dlfm.stage": "tune", "dlfm.trial_number": trial.number, "dlfm.study_name": trial.study.study_name,
            STATE_TAG: "RUNNING", "dlfm.objective": config.objective, "dlfm.encoder": config.encoder}
    retry_of = _retry_of(trial)
    if retry_of is not None:
        tags["dlfm.retry_of_trial"] = retry_of
    params_text = ", ".join(f"{k}={v:.3g}" for k, v in trial.params.items())
    with tracking.trial_run(setup.parent_run_id, f"trial-{trial.number:03d} {params_text}", tags,
                            finished_on=(optuna.TrialPruned,)) as run_id:
        trial.set_user_attr("mlflow_run_id", run_id)
        resolved = config.with_batch_resolved(setup.runtime.device.type, setup.splits["train"])  # batch_size=auto: its number
        tracking.log_params({**config.to_dict(), "batch_size_resolved": resolved.batch_size,
                             "lr_effective": resolved.lr_effective, "trial_number": trial.number})
        try:
            value = _train(trial, config, setup)
        except optuna.TrialPruned as pruned:
            tracking.set_tags({STATE_TAG: "PRUNED", "dlfm.pruned_reason": str(pruned)})
            raise
        except BaseException as error:
            text = str(error).strip().splitlines()[0] if str(error).strip() else ""
            tracking.set_tags({STATE_TAG: "FAIL", "dlfm.fail_reason": f"{type(error).__name__}: {text}"[:5000]})
            raise
        tracking.set_tags({STATE_TAG: "COMPLETE"})
        return value


def _train(trial: optuna.Trial, config: TrainConfig, setup: TrialSetup) -> float:
    """``fit`` with per-epoch reports; the best-so-far trial logs its encoder for registration."""
    space = SEARCH_SPACES[config.objective]

    def on_epoch_end(epoch: int, metrics: dict, make_checkpoint) -> None:
        if not metrics:  # a checkpoint-only call (a stop mid-epoch): trials keep no checkpoints
            return
        tracking.log_epoch_metrics(metrics, epoch)
        if space.epoch_score is None:
            return
        value = metrics[space.epoch_score]
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}: {space.epoch_score} {value:.4f}")

    result = fit(config, setup.splits, setup.class_names, on_epoch_end=on_epoch_end, runtime=setup.runtime, progress=False)
    tracking.log_final_metrics({**result.final_metrics, "best_epoch": result.best_epoch})
    value = float(result.final_metrics[space.score])
    if not math.isfinite(value):
        raise NonFiniteObjectiveError(f"{space.score} is {value} at the best epoch")
    trial.set_user_attr("final_metrics", {k: float(v) for k, v in result.final_metrics.items()})
    trial.set_user_attr("best_epoch", result.best_epoch)
    # Only a trial at least as good as every completed one can end up best, so only it pays
    # for logging its weights; the final best trial always passes this test.
    completed = [t.value for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not completed or value >= max(completed):
        tracking.log_encoder(result.model.encoder, setup.image_size, config.objective, result.model.decoder, config.masking)
        trial.set_user_attr("encoder_logged", True)
    return value
