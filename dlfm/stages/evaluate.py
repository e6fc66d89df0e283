"""The evaluate stage: a registered encoder against random and scratch baselines over label budgets.

One parent run; one nested child run per (task, budget, arm, seed), tagged so the MLflow UI can
filter on any of them. The alias is resolved to a version once, and the weights load from that
version's URI, so a promotion landing mid-run cannot switch encoders.
"""

from __future__ import annotations

from dlfm import tracking
from dlfm.errors import ConfigError, RegistryError
from dlfm.evaluation import ARMS, TASKS, EvaluateConfig, run_grid
from dlfm.evaluation import summary as summaries
from dlfm.evaluation.config import ALL
from dlfm.tracking import registry
from dlfm.transfer import random_init_seed


def resolve_version(config: EvaluateConfig):
    """(alias-or-URI asked for, the version's own URI, VersionInfo): only dlfm-encoder versions can be evaluated."""
    asked, version = registry.resolve_encoder_uri(config.encoder_stage, config.encoder_uri or None)
    if version is None:
        raise RegistryError(f"{asked} is not a {registry.MODEL_NAME} version; pass -P encoder_stage=<stage> or "
                            f"-P encoder_uri=models:/{registry.MODEL_NAME}/<version>")
    return asked, f"models:/{registry.MODEL_NAME}/{version.version}", version


def load_tasks(config: EvaluateConfig, image_size_check) -> dict:
    """Typed data of each asked task; budgets larger than a task's labelled pool are refused before any training."""
    from dlfm.stages.common import resolve_dataset

    tasks = {}
    for name in config.task_list:
        task = TASKS[name]
        spec = getattr(config, task.dataset_field)
        dataset = resolve_dataset(spec, config.sim_n_train, config.sim_n_val, config.sim_n_test, seed=config.sim_seed)
        image_size_check(dataset.image_size)
        tracking.log_dataset(dataset, context=f"evaluate-{name}")
        data = task.load(dataset, spec)
        too_big = [b for b in config.budget_list if b != ALL and b > task.available(data)]
        if too_big:
            raise ConfigError(f"budget {too_big[0]} exceeds the {task.available(data)} {task.budget_unit} in the train split "
                              f"of {task.dataset_field}={spec!r}; lower it, use 'all', or simulate more (sim_n_train)")
        tasks[name] = data
    return tasks


def child_run(config: EvaluateConfig, version: str, stage: str):
    """on_cell for run_grid: each cell in its own nested, filterable run."""

    def on_cell(cell, compute):
        tags = {"dlfm.task": cell.task, "dlfm.budget": cell.budget, "dlfm.budget_size": cell.budget_size,
                "dlfm.arm": cell.arm, "dlfm.seed": cell.seed, "dlfm.encoder_version": version}
        name = f"{stage}-{cell.task}-{cell.budget}-{cell.arm}-seed{cell.seed}"
        with tracking.stage_run(stage, name, nested=True, tags=tags, system_metrics=False):
            init = {"random_init_seed": random_init_seed(cell.seed)} if ARMS[cell.arm].encoder == "random" else {}
            tracking.log_params({**init, "task": cell.task, "budget": cell.budget, "arm": cell.arm, "seed": cell.seed,
                                 "n_labels": cell.n_labels, "epochs": config.epochs, "min_steps": config.min_steps,
                                 "lr": config.lr, "encoder_lr": config.encoder_lr, "batch_size": config.batch_size})
            result = compute()
            # The head's loss is CE (classification) or MSE on standardised parameters (regression): one name each.
            for epoch, loss in enumerate(result.history, start=1):
                tracking.log_metrics({f"train/loss_{cell.task}": loss}, step=epoch)
            tracking.log_metrics(result.metrics)
        print(f"[{stage}] {cell.task} budget={cell.budget} {cell.arm} seed={cell.seed}: "
              f"{TASKS[cell.task].headline}={result.metrics[TASKS[cell.task].headline]:.4f}", flush=True)
        return result

    return on_cell


def log_summary(results, tasks: dict) -> tuple[list[dict], list[dict], str]:
    """Parent-run artifacts: evaluation.md, the two CSVs, the figures; verdicts as tags and metrics."""
    import pandas as pd

    from dlfm.plots.evaluation import label_efficiency_figure, regression_parameters_figure

    rows, verdict_rows = summaries.aggregate(results), summaries.verdicts(results)
    regression = tasks.get("regression")
    text = summaries.markdown(rows, verdict_rows, regression.mean_predictor if regression else None)
    tracking.log_text(text, "evaluation.md")
    tracking.log_text(pd.DataFrame(rows).to_csv(index=False), "evaluation_summary.csv")
    tracking.log_text(pd.DataFrame(summaries.cells_table(results)).to_csv(index=False), "evaluation_cells.csv")
    tracking.log_dict({"rows": rows, "verdicts": verdict_rows}, "evaluation.json")
    tracking.log_figure(label_efficiency_figure(rows), "figures/label_efficiency.png")
    if regression is not None:
        tracking.log_figure(regression_parameters_figure(rows), "figures/label_efficiency_regression.png")
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
    more parent artifacts and returns a dict merged into the summary.
    """
    from dlfm.stages.common import announce_device
    from dlfm.training.runtime import make_runtime

    asked_for = config.encoder_uri or f"models:/dlfm-encoder@{config.encoder_stage}"
    description = (f"{stage}: the registered encoder {asked_for} against a random one (frozen and fine-tuned arms), "
                   f"label budgets {config.budgets}, seeds {config.seeds}; one child run per cell.")
    with tracking.stage_run(stage, f"{stage}-{config.encoder_uri or config.encoder_stage}",
                            config.experiment_name, description=description) as run_id:
        config.validate()
        runtime = make_runtime(config.device, config.precision)
        announce_device(runtime, config.device)
        tracking.log_params(config.to_dict())
        tracking.set_tags({"dlfm.device": runtime.device, "dlfm.precision": runtime.amp_dtype})
        asked, version_uri, version = resolve_version(config)
        pretrained = registry.load_registered_encoder(version_uri)
        tracking.set_tags({"dlfm.encoder_requested": asked, "dlfm.encoder_uri": version_uri,
                           "dlfm.encoder_version": version.version, "dlfm.encoder_run_id": version.run_id,
                           "dlfm.encoder": pretrained.name, "dlfm.encoder_objective": version.tags.get("objective", "")})
        tasks = load_tasks(config, pretrained.check_image_size)
        results = run_grid(config, tasks, pretrained, runtime.device, on_cell=child_run(config, version.version, stage),
                           autocast=runtime.autocast)
        rows, verdict_rows, text = log_summary(results, tasks)
        more = extra(results, tasks) if extra else {}
        verdicts = "; ".join(f"{v['task']} budget {v['budget']}: {v['treated']} vs {v['control']} {v['verdict']}"
                             for v in verdict_rows[:6])
        tracking.describe_run(f"{description}\n\nEncoder version {version.version} ({version.tags.get('objective', '?')}). "
                              f"Verdicts: {verdicts or 'none'}. Tables: evaluation.md.")
        print(tracking.stage_summary(stage, run_id), flush=True)
        return {"run_id": run_id, "version": version.version, "rows": rows, "verdicts": verdict_rows, "markdown": text, **more}
