"""What a stage logs into the active run: tags, params, metrics (per epoch and final), figures, artifacts, datasets."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

from dlfm.redact import redact
from dlfm.tracking.runs import _mlflow

NOT_PARAMS = ("experiment_name",)  # config fields that are not logged as params (see log_params)


def set_tags(tags: dict) -> None:
    """Set tags on the active run (values become strings)."""
    _mlflow().set_tags({k: redact(str(v)) for k, v in tags.items()})


def param_string(value) -> str:
    """A param as MLflow stores it; bools lowercase so they match the MLproject's "true"/"false"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else redact(str(value))


def log_params(params: dict) -> None:
    """Log a config dict as params; keys that ``mlflow run`` already logged (as given) are kept."""
    mlflow = _mlflow()
    run = mlflow.active_run()
    logged = mlflow.MlflowClient().get_run(run.info.run_id).data.params if run else {}
    # experiment_name is never a param: the run's experiment is its own attribute, and a param could disagree.
    mlflow.log_params({k: param_string(v) for k, v in params.items() if k not in logged and k not in NOT_PARAMS})


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """Log one step of metrics (one call per epoch keeps tracking off the hot path)."""
    _mlflow().log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


EPOCH_SPLIT = "val_epoch"  # per-epoch validation curves; `val/…` is the best weights' value, logged once


def epoch_metric_names(metrics: dict[str, float]) -> dict[str, float]:
    """One epoch's metrics under their curve names: ``val/x`` → ``val_epoch/x`` (``train/…``, ``train/lr`` included, unchanged).

    ``val/…`` and ``test/…`` are logged once, from the best epoch's weights (or the linear probe),
    so the UI draws them as one bar per run and the compare view lines up the encoder that was
    registered; the per-epoch validation values are a curve of their own, never a dot beside one.
    """
    return {(f"{EPOCH_SPLIT}/{k[4:]}" if k.startswith("val/") else k): v for k, v in metrics.items()}


def log_epoch_metrics(metrics: dict[str, float], epoch: int) -> None:
    """Log one epoch's metrics (train/…, train/lr, val_epoch/…) at step ``epoch``."""
    log_metrics(epoch_metric_names(metrics), step=epoch)


def log_final_metrics(metrics: dict[str, float], model_id: str | None = None) -> None:
    """Log the best weights' val/… and test/… once (step 0), linked to the logged model when ``model_id`` is given.

    Linked metrics make ``mlflow.search_logged_models(filter_string="metrics.`val/macro_auc` > 0.8")``
    and the Models tab rank encoders.
    """
    _mlflow().log_metrics({k: float(v) for k, v in metrics.items()}, step=0, model_id=model_id)


def log_figure(figure, artifact_file: str) -> None:
    """Log a matplotlib figure as a PNG artifact (e.g. figures/roc.png) and close it."""
    import matplotlib.pyplot as plt

    _mlflow().log_figure(figure, artifact_file)
    plt.close(figure)


def log_dict(data: dict, artifact_file: str) -> None:
    """Log a dict as a JSON/YAML artifact."""
    _mlflow().log_dict(_redacted(data), artifact_file)


def _redacted(value):
    """``value`` with every string in it (keys too) passed through the one redactor; numbers kept as they are."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {_redacted(k): _redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redacted(v) for v in value)
    return value


def log_text(text: str, artifact_file: str) -> None:
    """Log a text artifact (markdown reports, tables)."""
    _mlflow().log_text(redact(text), artifact_file)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    """Log a local file as an artifact."""
    _mlflow().log_artifact(str(path), artifact_path)


def log_artifacts(directory: str | Path, artifact_path: str | None = None) -> None:
    """Log a local directory's files as artifacts."""
    _mlflow().log_artifacts(str(directory), artifact_path)


def log_dataset(dataset, context: str = "training") -> None:
    """Record the dataset as a run input, with its digest and source path (or URI)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    source_uri = redact(str(dataset.manifest.get("source_uri") or (dataset.root.resolve() if dataset.root else "memory")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(source_uri)
    name = dataset.manifest.get("name") or (dataset.root.name if dataset.root else "dataset")
    _mlflow().log_input(MetaDataset(source=source, name=name, digest=dataset.digest[:36]), context=context)


def log_encoder(encoder, image_size: int, objective: str, decoder=None, masking: dict | None = None) -> str:
    """Log the encoder (and its decoder, if any) as the artifact directory ``encoder/`` (format: dlfm.models.serialization)."""
    from dlfm.models.serialization import save_encoder

    with tempfile.TemporaryDirectory() as tmp:
        save_encoder(encoder, tmp, image_size=image_size, objective=objective, decoder=decoder, masking=masking)
        _mlflow().log_artifacts(tmp, "encoder")
    return "encoder"
