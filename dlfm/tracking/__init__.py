"""The one module that talks to MLflow: runs, params, metrics, figures, datasets, models.

Everything else returns plain dicts and figures; stages call these functions.
"""

from dlfm.tracking.run_logs import (
    log_artifact,
    log_artifacts,
    log_dataset,
    log_dict,
    log_encoder,
    log_epoch_metrics,
    log_final_metrics,
    log_figure,
    log_metrics,
    log_params,
    log_text,
    set_tags,
)
from dlfm.tracking.runs import (
    DEFAULT_EXPERIMENT,
    active_run_id,
    describe_run,
    fail_pending_run,
    resolve_experiment_name,
    run_location,
    stage_run,
    stage_summary,
)
from dlfm.tracking.store import DEFAULT_TRACKING_URI, configure_tracking
from dlfm.tracking.trials import download_run_artifacts, terminate_run, trial_run

__all__ = [
    "DEFAULT_EXPERIMENT", "DEFAULT_TRACKING_URI", "active_run_id", "configure_tracking", "describe_run", "resolve_experiment_name", "run_location", "stage_summary", "fail_pending_run",
    "log_artifact", "log_artifacts", "log_dataset", "log_dict", "log_encoder", "log_epoch_metrics", "log_final_metrics", "log_figure", "log_metrics", "log_params", "log_text",
    "set_tags", "stage_run", "download_run_artifacts", "terminate_run", "trial_run",
]
