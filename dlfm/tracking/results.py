"""Read back a finished ``main`` pipeline from the tracking store, as plain records for the results page.

``dlfm.docs_results`` renders them; this module is the only part that talks to MLflow. Every record is
plain data (strings, floats, ints) read from the store, so rendering the same store twice gives the same page.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from dlfm.errors import DlfmError
from dlfm.redact import redact_uri
from dlfm.tracking.model_versions import get_version, label_provenance
from dlfm.tracking.store import configure_tracking
from dlfm.tracking.trials import download_run_artifacts

STEP_TAG_PREFIX = "dlfm.step."  # main tags each step it ran or reused: dlfm.step.<label> = run id
EVALUATION_ARTIFACT = "evaluation.json"  # evaluate's rows (mean/sd per task, budget, arm) and verdicts
SPREAD_ARTIFACT = "corpus_spread.json"  # main's spread over pretraining corpora (dlfm.evaluation.corpus_spread)


def _client():
    import mlflow

    return mlflow.MlflowClient()


def run_record(run, experiment_names: dict[str, str]) -> dict:
    """One run as plain data: ids, experiment, status, times (ms since the epoch), params, metrics, tags."""
    return {"run_id": run.info.run_id, "experiment": experiment_names.get(run.info.experiment_id, run.info.experiment_id),
            "status": run.info.status, "start_time": run.info.start_time, "end_time": run.info.end_time,
            "params": dict(run.data.params), "metrics": dict(run.data.metrics), "tags": dict(run.data.tags)}


def latest_main_run(experiment: str = ""):
    """The newest FINISHED top-level ``main`` run (in ``experiment``, else in any experiment), or None."""
    client = _client()
    experiments = client.search_experiments()
    if experiment:
        experiments = [e for e in experiments if e.name == experiment]
    if not experiments:
        return None, {}
    names = {e.experiment_id: e.name for e in experiments}
    runs = client.search_runs(sorted(names), "tags.`dlfm.stage` = 'main' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=200)
    runs = sorted((r for r in runs if "mlflow.parentRunId" not in r.data.tags),
                  key=lambda r: (-r.info.start_time, r.info.run_id))  # ties broken by id: the same store, the same pick
    return (runs[0] if runs else None), names


def step_runs(main, names: dict[str, str]) -> dict[str, dict]:
    """{step label: record} of the steps ``main`` ran or reused (its dlfm.step.* tags; older runs: its children)."""
    client = _client()
    labels = {k[len(STEP_TAG_PREFIX):]: v for k, v in main.data.tags.items() if k.startswith(STEP_TAG_PREFIX)}
    if labels:
        return {label: run_record(client.get_run(run_id), names) for label, run_id in sorted(labels.items())}
    children = client.search_runs([main.info.experiment_id], f"tags.`mlflow.parentRunId` = '{main.info.run_id}'",
                                  max_results=1000)
    records = {}
    for child in sorted(children, key=lambda r: (r.info.start_time, r.info.run_id)):
        tags = child.data.tags
        label = tags.get("mlflow.project.entryPoint") or tags.get("dlfm.stage", "step")
        if label == "simulate":
            label = f"simulate-{child.data.params.get('preset', '?')}-{child.data.params.get('seed', '?')}"
        records[label] = run_record(child, names)
    return records


def version_labels(version: str) -> dict:
    """A registered version's label provenance: whether its weights saw labels, how many, and which selected it."""
    if not version:
        return {}
    try:
        info = get_version(version)
    except DlfmError:
        return {}
    labels = label_provenance(info)
    return {"saw_labels": labels.saw_labels, "label_count": labels.label_count, "selection": labels.selection,
            "objective": labels.objective}


def json_artifact(run_id: str, name: str) -> dict:
    """A run's JSON artifact ``name`` (evaluate's evaluation.json, main's corpus_spread.json), or {} when it has none."""
    with tempfile.TemporaryDirectory() as scratch:
        try:
            path = download_run_artifacts(run_id, name, scratch)
        except Exception:  # noqa: BLE001 - an older or interrupted run without the artifact: the page says so
            return {}
        return json.loads(Path(path).read_text())


def main_pipeline(experiment: str = "") -> dict:
    """The newest finished ``main`` pipeline: its run, its steps, their versions' label provenance, evaluate's tables
    and the spread over pretraining corpora (``{}`` for a run that predates it).

    Raises DlfmError naming the store when it holds no finished ``main`` run.
    """
    import mlflow

    configure_tracking()
    uri = redact_uri(mlflow.get_tracking_uri())
    main, names = latest_main_run(experiment)
    if main is None:
        where = f"experiment {experiment!r} of " if experiment else ""
        raise DlfmError(f"no FINISHED main run in {where}the tracking store {uri}; run `make demo` first, or point "
                        "MLFLOW_TRACKING_URI at the store that has one")
    steps = step_runs(main, names)
    for record in steps.values():
        record["labels"] = version_labels(record["tags"].get("dlfm.registered_version", ""))
    evaluate = next((r for label, r in steps.items() if label == "evaluate"), None)
    return {"store": uri, "main": run_record(main, names), "steps": steps,
            "evaluation": json_artifact(evaluate["run_id"], EVALUATION_ARTIFACT) if evaluate else {},
            "corpus_spread": json_artifact(main.info.run_id, SPREAD_ARTIFACT)}
