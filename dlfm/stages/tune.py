"""The tune stage: one parent run, one child run per Optuna trial, the best encoder registered."""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from collections import Counter

from dlfm import tracking
from dlfm.data.resample import at_pixel_scale
from dlfm.sources import resolve_dataset
from dlfm.errors import DlfmError, SecretInParams
from dlfm.plots import tune as plots
from dlfm.stages.train import check_trainable, resolve_pixel_scale
from dlfm.tracking import registry
from dlfm.stages.common import announce_device
from dlfm.tracking.status_guard import purge_launcher_run
from dlfm.training.runtime import make_runtime
from dlfm.training.config import objective_excluded_params
from dlfm.tune.config import TuneConfig
from dlfm.tune.space import SEARCH_SPACES
from dlfm.tune.results import download_best_encoder, trial_records
from dlfm.tune.storage import open_storage
from dlfm.tune.study import describe_study, load_or_create_study
from dlfm.tune.workers import run_workers


def run_tune_stage(config: TuneConfig) -> dict:
    """Check params and storage, run the trials (here or in worker processes), log the study, register the best."""
    try:
        config.validate()
    except SecretInParams as error:  # mlflow run has stored the -P value already: that run must not survive
        raise SecretInParams(f"{error}{purge_launcher_run()}") from None
    runtime = make_runtime(config.train.device, config.train.precision)  # an absent cuda/mps is a ConfigError before any trial
    announce_device(runtime, config.train.device)
    storage = open_storage(config)  # unreachable storage: ConfigError naming the masked URL
    study_name = config.resolved_study_name()
    train, space = config.train, SEARCH_SPACES[config.objective]
    OBJECTIVE_METRIC = space.score  # noqa: N806 - the name the lines below always used for the score
    tags = {"dlfm.objective": config.objective, "dlfm.encoder": train.encoder, "dlfm.study_name": study_name,
            "dlfm.optuna_storage": config.params()["storage"], "dlfm.pruner": config.pruner}
    description = (f"Optuna study {study_name!r}: {config.n_trials} trials of the {config.objective} objective ({train.encoder}, "
                   f"{train.epochs} epochs each) on {train.dataset}, searching {space.description}; maximising "
                   f"{OBJECTIVE_METRIC}; one child run per trial.")
    with tracking.stage_run("tune", f"tune-{study_name}", train.experiment_name, tags=tags,
                            description=description) as run_id:
        study = load_or_create_study(config, storage)
        excluded = ((space.param, *objective_excluded_params(config.objective), *dict(space.fixed))
                    + (("lr",) if config.tune_lr else ()))
        tracking.log_params({**{k: v for k, v in train.to_dict().items() if k not in excluded}, **config.params()})
        # On the trials' grid once: an in-process worker's at_pixel_scale is then a no-op; spawned workers read the
        # directory (dataset.root) and resample their own copy.
        dataset = resolve_dataset(train.dataset, train.sim_n_train, train.sim_n_val, train.sim_n_test)
        train, reason = resolve_pixel_scale(train, {"dataset": dataset})  # auto: one set, so its native grid
        if reason:
            print(reason, flush=True)
        config = dataclasses.replace(config, train=train)  # the trials' (and spawned workers') scale
        tracking.log_params({"pixel_scale_resolved": train.pixel_scale})
        dataset = at_pixel_scale(dataset, train.pixel_scale)
        check_trainable(train, dataset)
        tracking.log_dataset(dataset, context="training")
        tracking.set_tags({"dlfm.dataset_digest": dataset.digest, "dlfm.device": runtime.device, "dlfm.amp": runtime.amp_dtype,
                           "dlfm.precision": runtime.amp_dtype})
        describe_study(study, run_id, dataset.digest, train.encoder, tracking.run_location(run_id)["view"])

        exit_codes = run_workers(config, run_id, dataset, study)
        failed_workers = [index for index, code in enumerate(exit_codes) if code != 0]
        if failed_workers:
            tracking.set_tags({"dlfm.failed_workers": ",".join(map(str, failed_workers))})
            print(f"dlfm: warning: worker(s) {failed_workers} exited with codes {[exit_codes[i] for i in failed_workers]}; "
                  "their unfinished trials are retried by the next tune run", file=sys.stderr)

        records = trial_records(study)
        states = Counter(r["state"] for r in records)
        epochs_spent = sum(len(r["intermediate"]) for r in records)
        tracking.log_metrics({"tune/n_complete": states["COMPLETE"], "tune/n_pruned": states["PRUNED"],
                              "tune/n_fail": states["FAIL"], "tune/epochs_spent": epochs_spent})
        tracking.log_figure(plots.optimisation_history_figure(records), "figures/optuna_history.png")
        tracking.log_figure(plots.param_vs_objective_figure(records, space.param, OBJECTIVE_METRIC, log=space.log),
                            f"figures/optuna_{space.param}.png")
        tracking.log_figure(plots.intermediate_values_figure(records), "figures/optuna_intermediate.png")
        tracking.log_dict({"study_name": study_name, "storage": config.params()["storage"], "trials": records},
                          "optuna/trials.json")

        complete = [r for r in records if r["state"] == "COMPLETE"]
        if not complete:
            reasons = sorted({r["user_attrs"].get("fail_reason", "") for r in records if r["state"] == "FAIL"} - {""})
            raise DlfmError(f"no trial of study {study_name!r} completed ({dict(states)}); "
                            + (f"first failure: {reasons[0]}" if reasons else "rerun with more trials or without pruning"))
        best = max(complete, key=lambda r: (r["value"], -r["number"]))  # ties go to the earlier trial, as in Optuna
        best_metrics = best["user_attrs"].get("final_metrics", {OBJECTIVE_METRIC: best["value"]})
        tracking.log_params({f"best_{name}": value for name, value in best["params"].items()})
        tracking.log_metrics({"best_value": best["value"], "best_trial": best["number"]})
        tracking.set_tags({"dlfm.best_trial": best["number"],
                           "dlfm.best_trial_run_id": best["user_attrs"].get("mlflow_run_id", "")})

        # Every worker that finishes the study gets here: the best trial is registered once, by the first.
        best_key = best["user_attrs"].get("mlflow_run_id") or f"{study_name}#{best['number']}"
        with tempfile.TemporaryDirectory() as tmp:  # the trial's saved encoder/, registered as it is
            version = registry.register_encoder_dir(download_best_encoder(best, tmp), best_metrics, dataset.digest, run_id,
                                                    once_for=f"tune-trial-run:{best_key}",
                                                    stage="tune",  # logs best_metrics, linked to encoder-tune
                                                    # the best trial was chosen on val labels, whatever the objective
                                                    labels=registry.label_tags(config.objective, dataset, selected_on_val=True))
        tracking.set_tags({"dlfm.registered_version": version})
        params_text = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
        tracking.describe_run(f"{description}\n\nResult: {dict(states)}; best trial {best['number']} ({params_text}) "
                              f"{OBJECTIVE_METRIC} {best['value']:.4f}; registered dlfm-encoder version {version}.")
        print(tracking.stage_summary("tune", run_id, {OBJECTIVE_METRIC: best["value"]}, version), flush=True)
        return {"run_id": run_id, "study_name": study_name, "best_trial": best["number"], "best_value": best["value"],
                "best_params": best["params"], "metrics": best_metrics, "version": version, "states": dict(states),
                "epochs_spent": epochs_spent, "failed_workers": failed_workers}
