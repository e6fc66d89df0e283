"""The evaluate stage: a registered encoder against random and scratch baselines over label budgets.

One parent run; one child run per (task, budget, arm, seed), tagged so the MLflow UI can filter on
any of them (``evaluate_cells``). The alias is resolved to a version once, and the weights load from
that version's URI, so a promotion landing mid-run cannot switch encoders.

A stop (SIGTERM, Ctrl-C, the launcher dying) is a request checked between batches and cells: the
child run in progress and the parent end KILLED with the resume hint. ``resume=<parent>`` reopens
the parent and reuses every FINISHED child of the same cell, config, dataset and encoder version.
``workers=N`` (or torchrun ranks) share the cells out; worker 0 aggregates over all of them.
"""

from __future__ import annotations

import os
import sys

from dlfm import tracking
from dlfm.errors import ConfigError, RegistryError
from dlfm.evaluation import TASKS, EvaluateConfig
from dlfm.evaluation import summary as summaries
from dlfm.evaluation.config import ALL
from dlfm.evaluation.grid import plan, reported_twice
from dlfm.stages import evaluate_cells as cells
from dlfm.tracking import checkpoints, registry
from dlfm.tracking import cells as store
from dlfm.training.interrupt import GridInterrupted, StopRequest, graceful_stop

DIGEST_TAG = "dlfm.dataset_digest."  # + task, on the parent: what a resume must find again


def resolve_version(config: EvaluateConfig):
    """(alias-or-URI asked for, the version's own URI, VersionInfo): only dlfm-encoder versions can be evaluated."""
    asked, version = registry.resolve_encoder_uri(config.encoder_stage, config.encoder_uri or None)
    if version is None:
        raise RegistryError(f"{asked} is not a {registry.MODEL_NAME} version; pass -P encoder_stage=<stage> or "
                            f"-P encoder_uri=models:/{registry.MODEL_NAME}/<version>")
    return asked, f"models:/{registry.MODEL_NAME}/{version.version}", version


def load_tasks(config: EvaluateConfig, encoder) -> tuple[dict, dict]:
    """({task: typed data}, {task: dataset}) of each asked task, its images on the grid ``encoder`` reads (its pixel
    scale, which its random twins share); budgets larger than a task's pool are refused first."""
    from dlfm.data.resample import dataset_for_encoder
    from dlfm.stages.common import resolve_dataset

    tasks, datasets = {}, {}
    for name in config.task_list:
        task = TASKS[name]
        spec = getattr(config, task.dataset_field)
        dataset = resolve_dataset(spec, config.sim_n_train, config.sim_n_val, config.sim_n_test, seed=config.sim_seed)
        dataset = dataset_for_encoder(dataset, encoder, task.dataset_field)
        data = task.load(dataset, spec)
        too_big = [b for b in config.budget_list if b != ALL and b > task.available(data)]
        if too_big:
            raise ConfigError(f"budget {too_big[0]} exceeds the {task.available(data)} {task.budget_unit} in the train split "
                              f"of {task.dataset_field}={spec!r}; lower it, use 'all', or simulate more (sim_n_train)")
        tasks[name], datasets[name] = data, dataset
    return tasks, datasets


def check_same_datasets(run_id: str, tags: dict, tasks: dict) -> None:
    """A resume (or a worker) must see the datasets the parent saw: one line naming the first that differs."""
    for name, data in tasks.items():
        theirs = tags.get(DIGEST_TAG + name)
        if theirs and theirs != data.digest:
            raise ConfigError(f"resume={run_id}: the {name} dataset {data.dataset!r} differs from the run's "
                              f"(digest {data.digest[:12]}, run: {theirs[:12]}); resume with the same dataset or start a new run")


def join_parent(parent_run_id: str, rank: int, world: int, stop: StopRequest) -> None:
    """A worker of rank > 0 (local process or torchrun rank): the parent's config, encoder and data; its share of cells."""
    import torch

    from dlfm.training.runtime import make_runtime

    parent = store.get_run(parent_run_id)
    config = EvaluateConfig().resumed_from(parent.data.params)  # every field at the parent's value
    if "LOCAL_RANK" not in os.environ:  # a local worker: its share of this machine's threads (torchrun sets its own)
        torch.set_num_threads(cells.threads_per_worker(world))
    runtime = make_runtime(config.device, config.precision)
    tags = parent.data.tags
    pretrained = registry.load_registered_encoder(tags["dlfm.encoder_uri"])
    tasks, _ = load_tasks(config, pretrained)
    check_same_datasets(parent_run_id, tags, tasks)
    share = cells.Share(parent_run_id, tags["dlfm.stage"], config, tags["dlfm.encoder_version"],
                        {name: data.digest for name, data in tasks.items()}, rank, world,
                        checkpoints.resume_hint(tags["dlfm.stage"], parent_run_id) if tags["dlfm.stage"] == "evaluate" else "")
    stop.check()
    cells.run_share(share, tasks, pretrained, runtime, stop)


def torchrun_rank() -> tuple[int, int]:
    """(rank, world size) under torchrun, else (0, 1)."""
    if "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ.get("RANK", 0)), int(os.environ["WORLD_SIZE"])
    return 0, 1


def join_torchrun_job(stop: StopRequest) -> dict:
    """Ranks > 0 under torchrun: find the parent rank 0 opened (by torchrun's job id), then take this rank's share."""
    rank, world = torchrun_rank()
    job = os.environ.get("TORCHELASTIC_RUN_ID", "")
    parent = store.wait_for_run_with_tag(cells.TORCHRUN_TAG, job, timeout_s=600, poll_s=2)
    if parent is None:
        raise ConfigError(f"torchrun rank {rank}: no RUNNING evaluate run tagged {cells.TORCHRUN_TAG}={job} appeared "
                          "within 600 s; does rank 0 reach the same tracking server (MLFLOW_TRACKING_URI)?")
    join_parent(parent.info.run_id, rank, world, stop)
    return {}


def log_summary(results, tasks: dict, opening: str = "") -> tuple[list[dict], list[dict], str]:
    """Parent-run artifacts: evaluation.md (``opening``: its first line), the CSVs, the figures; verdicts as tags, metrics."""
    import pandas as pd

    from dlfm.plots.evaluation import label_efficiency_figure, regression_parameters_figure

    rows, verdict_rows = summaries.aggregate(results), summaries.verdicts(results, tasks)
    regression = tasks.get("regression")
    text = summaries.markdown(rows, verdict_rows, regression, opening=opening)
    tracking.log_text(text, "evaluation.md")
    tracking.log_text(pd.DataFrame(rows).to_csv(index=False), "evaluation_summary.csv")
    tracking.log_text(pd.DataFrame(summaries.cells_table(results)).to_csv(index=False), "evaluation_cells.csv")
    tracking.log_dict({"rows": rows, "verdicts": verdict_rows}, "evaluation.json")
    tracking.log_figure(label_efficiency_figure(rows, verdict_rows), "figures/label_efficiency.png")
    if regression is not None:
        tracking.log_figure(regression_parameters_figure(rows, regression.readout), "figures/label_efficiency_regression.png")
    metrics, tags = {}, {}
    for row in rows:
        headline = TASKS[row["task"]].headline
        metrics[f"{headline}/{row['arm']}/{row['budget']}"] = row[f"{headline}_mean"]
    for v in verdict_rows:
        key = f"{v['task']}/{v['budget']}/{v['treated']}-vs-{v['control']}"
        metrics[f"verdict_diff/{key}"] = v["difference"]
        tags[f"dlfm.verdict.{key}"] = v["verdict"]
    tracking.log_metrics(metrics)
    tracking.set_tags(tags)
    return rows, verdict_rows, text


def run_evaluate_stage(config: EvaluateConfig, stage: str = "evaluate", extra=None) -> dict:
    """Resolve the encoder version, load the tasks, run the grid with one child run per cell, log the summary.

    ``stage`` names the runs (transfer is this stage at one budget); ``extra(results, tasks)`` logs
    more parent artifacts and returns a dict merged into the summary. From the first line on, a
    stop signal only sets a flag, read at the safe points (between batches and cells).
    """
    stop = StopRequest()
    with graceful_stop(stop):
        if torchrun_rank()[0] > 0:
            return join_torchrun_job(stop)
        return evaluate_parent(config, stage, extra, stop)


def evaluate_parent(config: EvaluateConfig, stage: str, extra, stop: StopRequest) -> dict:
    """Worker 0: the parent run (new, or reopened by ``resume``), its share of the cells, then the summary of all."""
    config.validate()
    prepared = None
    if config.resume:  # everything is checked before the run is reopened: a refusal leaves it untouched
        parent = checkpoints.check_resumable(config.resume, stage)
        if not set(parent.data.params) & set(config.to_dict()):  # never fill a resumed run from the defaults
            raise ConfigError(f"resume={config.resume}: the run recorded no params (it failed before its grid started), "
                              f"so there is nothing to continue; start a fresh run: mlflow run . -e {stage} "
                              "--env-manager local -P ... (your params, without resume)")
        config = config.resumed_from(parent.data.params)
        config.validate()  # the run's own params may be what failed it: refused here, before it is reopened
        if "dlfm.encoder_uri" in parent.data.tags:  # the grid started: evaluate the version it resolved
            prepared = prepare(config, parent.data.tags["dlfm.encoder_uri"], parent.data.tags.get("dlfm.encoder_requested"))
            check_same_datasets(config.resume, parent.data.tags, prepared[3])
        else:
            prepared = prepare(config)
            print(f"dlfm: run {config.resume} never started its grid: restarting it with its own params", file=sys.stderr)
    asked_for = config.encoder_uri or f"models:/dlfm-encoder@{config.encoder_stage}"
    description = (f"{stage}: the registered encoder {asked_for} against a random one (frozen and fine-tuned arms), "
                   f"label budgets {config.budgets}, seeds {config.seeds}; one child run per cell.")
    with tracking.stage_run(stage, f"{stage}-{config.encoder_uri or config.encoder_stage}", config.experiment_name,
                            run_id=config.resume or None, description="" if config.resume else description) as run_id:
        hint = checkpoints.resume_hint(stage, run_id) if stage == "evaluate" else ""
        try:
            return grid_in_run(config, stage, extra, stop, run_id, hint, description, prepared)
        except GridInterrupted as error:
            if hint:
                tracking.set_tags({checkpoints.RESUME_HINT_TAG: hint})
            done = len(cells.finished_cells(error.share)) if getattr(error, "share", None) else error.done
            stopped = GridInterrupted(error.signal_name, done, getattr(error, "cells", error.total))
            stopped.hint = hint  # the entry point prints it
            raise stopped from None


def prepare(config: EvaluateConfig, version_uri: str | None = None, asked: str | None = None):
    """(asked-for, version URI, VersionInfo, tasks, datasets, pretrained encoder): no tracking writes."""
    if version_uri is None:
        asked, version_uri, version = resolve_version(config)
    else:  # a resume evaluates the version the run resolved, wherever the alias points now
        version = registry.resolve_encoder_uri("", version_uri)[1]
        asked = asked or version_uri
    pretrained = registry.load_registered_encoder(version_uri)
    tasks, datasets = load_tasks(config, pretrained)
    check_held_out(version, tasks)
    return asked, version_uri, version, tasks, datasets, pretrained


LABELLED_TASKS = ("classification", "regression")  # tasks whose labels a trained-on or probed-on set would leak


def check_held_out(version, tasks: dict) -> None:
    """Refuse, in one line, a labelled task on a dataset the encoder version was trained or probed on."""
    seen = registry.label_provenance(version).digests
    for name in LABELLED_TASKS:
        data = tasks.get(name)
        if data is not None and data.digest in seen:
            raise ConfigError(f"{name} dataset {data.dataset!r} (digest {data.digest[:12]}) is the dataset encoder version "
                              f"{version.version} was trained or probed on, so its scores would not be held out; "
                              f"pass a set simulated with another seed (e.g. -P sim_seed=...) or another dataset dir")


def grid_in_run(config: EvaluateConfig, stage: str, extra, stop: StopRequest, run_id: str, hint: str, description: str,
                prepared) -> dict:
    """The body of the parent run: tags, worker 0's share (others in their processes), the summary over all cells."""
    from dlfm.data.resample import describe_grid
    from dlfm.stages.common import announce_device
    from dlfm.training.runtime import make_runtime

    if config.resume:
        checkpoints.supersede_launcher_run(run_id)
    runtime = make_runtime(config.device, config.precision)
    announce_device(runtime, config.device)
    tracking.log_params(config.to_dict())  # on a resume, params already logged are kept as they are
    tracking.set_tags({"dlfm.device": runtime.device, "dlfm.precision": runtime.amp_dtype})
    asked, version_uri, version, tasks, datasets, pretrained = prepared or prepare(config)
    tracking.set_tags({"dlfm.encoder_requested": asked, "dlfm.encoder_uri": version_uri,
                       "dlfm.encoder_version": version.version, "dlfm.encoder_run_id": version.run_id,
                       "dlfm.encoder": pretrained.name, "dlfm.encoder_objective": version.tags.get("objective", "")})
    labels = registry.label_provenance(version)
    opening = labels.sentence(version.version) if labels.saw_labels else ""
    tracking.set_tags({"dlfm.encoder_saw_labels": str(labels.saw_labels).lower(),
                       "dlfm.encoder_label_count": labels.label_count})
    if not config.resume:
        for name, dataset in datasets.items():
            tracking.log_dataset(dataset, context=f"evaluate-{name}")
    grids = {name: describe_grid(dataset) for name, dataset in datasets.items()}
    tracking.set_tags({f"dlfm.grid.{name}": grid for name, grid in grids.items()})  # the pixel grid every arm read
    if pretrained.pixel_scale:
        print(f"[{stage}] encoder reads {pretrained.pixel_scale:g} arcsec/px: "
              + "; ".join(f"{name} {grid}" for name, grid in grids.items()), flush=True)
    _, world = torchrun_rank()
    world = world if world > 1 else config.workers
    tracking.set_tags({"dlfm.config_digest": config.cell_digest(), "dlfm.cells": len(plan(config, tasks)),
                       "dlfm.workers": world, **{DIGEST_TAG + name: data.digest for name, data in tasks.items()}})
    share = cells.Share(run_id, stage, config, version.version, {name: data.digest for name, data in tasks.items()}, 0,
                        world, hint)
    workers = []
    try:
        stop.check()
        if "LOCAL_RANK" in os.environ:  # under torchrun the other ranks find this run by the job id
            tracking.set_tags({cells.TORCHRUN_TAG: os.environ.get("TORCHELASTIC_RUN_ID", "")})
        elif world > 1:
            import torch

            torch.set_num_threads(cells.threads_per_worker(world))
            workers = cells.start_workers(share, runtime.device)
        computed = cells.run_share(share, tasks, pretrained, runtime, stop)
        if workers:
            cells.wait_for_workers(workers, stop)
        elif world > 1:
            cells.wait_for_ranks(share, tasks, stop)
        stop.check()
    except GridInterrupted as error:
        cells.stop_workers(workers)
        error.share, error.cells = share, len(plan(config, tasks))
        raise
    except BaseException:
        cells.stop_workers(workers)
        raise
    results = cells.collect(share, tasks, computed)
    results += reported_twice(results, config, tasks)  # budgets that draw the same labels as a smaller one: run once
    rows, verdict_rows, text = log_summary(results, tasks, opening)
    more = extra(results, tasks) if extra else {}
    verdicts = "; ".join(f"{v['task']} budget {v['budget']}: {v['treated']} vs {v['control']} {v['verdict']}"
                         for v in verdict_rows[:6])
    first = f"{opening}\n\n" if opening else ""
    tracking.describe_run(f"{first}{description}\n\nEncoder version {version.version} ({version.tags.get('objective', '?')}). "
                          f"Verdicts: {verdicts or 'none'}. Tables: evaluation.md.")
    if opening:
        print(f"[{stage}] {opening.replace('**', '')}", flush=True)
    print(tracking.stage_summary(stage, run_id), flush=True)
    return {"run_id": run_id, "saw_labels": labels.saw_labels, "version": version.version, "rows": rows,
            "verdicts": verdict_rows, "markdown": text, **more}
