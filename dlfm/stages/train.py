"""The training stages (one per row of ``dlfm.objectives.OBJECTIVES``): one tracked run around ``training.fit``.

An epoch ends with a checkpoint at most every ``checkpoint_every_s``, and always after the last one and
on a stop (``checkpoints/last.pt`` artifact, and a local copy under
``checkpoints/<run_id>/``); ``resume=<run_id>`` reopens a killed or failed run and continues at
the epoch after its checkpoint. SIGINT/SIGTERM finish the current step and end the run KILLED
with a ``dlfm.resume_hint`` tag.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import replace

from dlfm import tracking
from dlfm.tracking import checkpoints, registry
from dlfm.errors import DatasetError
from dlfm.training import TrainConfig, distributed, fit
from dlfm.training.config import PIXEL_AUTO
from dlfm.training.interrupt import StopRequest, TrainingInterrupted, graceful_stop


def check_trainable(config: TrainConfig, dataset) -> None:
    """The dataset suits classification training (or, unlabelled, a self-supervised objective) and the encoder takes its image size."""
    from dlfm.models import create_encoder
    from dlfm.objectives import OBJECTIVES

    from dlfm.data.shards import ShardedDataset

    if isinstance(dataset, ShardedDataset):
        dataset.get_images("train")  # refused in one line: `dataset` is read whole (and probed); a corpus streams as pretrain_dataset
    if dataset.task == "unlabelled" and not OBJECTIVES[config.objective].probed:
        raise DatasetError(
            f"dataset {config.dataset!r} has no labels; the {config.objective} objective reads labels, so import them "
            "(dlfm dataset import --labels or class folders) or pretrain autoencoder/mae on it"
        )
    if dataset.task not in ("classification", "unlabelled"):
        raise DatasetError(
            f"dataset {config.dataset!r} is a {dataset.task} dataset; training stages need a "
            "classification dataset (preset model_ii, model_i or model_iii, or DeepLense class folders)"
        )
    encoder = create_encoder(config.encoder, **config.encoder_kwargs)
    for size in dataset.image_sizes:
        encoder.check_image_size(size)
    for split in ("train", "val", "test"):
        if len(dataset.indices(split)) == 0:
            raise DatasetError(f"dataset {config.dataset!r} has an empty {split} split; simulate more images")


def log_training_figures(result, class_names) -> None:
    """ROC, confusion matrix, learning curves and (with a decoder) the reconstruction grid."""
    from dlfm.plots import training as plots

    tracking.log_figure(plots.learning_curves_figure(result.history), "figures/learning_curves.png")
    if result.val.probs is not None:
        tracking.log_figure(plots.roc_figure(result.test.probs, result.test.labels, class_names, "test ROC"), "figures/roc.png")
        tracking.log_figure(plots.confusion_figure(result.test.probs, result.test.labels, class_names, split="test"), "figures/confusion.png")
    if result.reconstructions is not None:
        tracking.log_figure(plots.reconstruction_figure(*result.reconstructions, split="val"), "figures/reconstructions.png")


def check_pretrainable(config: TrainConfig, corpus, dataset) -> None:
    """The pretraining corpus has every split, suits the encoder, and shares no image with the downstream set."""
    from dlfm.models import create_encoder

    encoder = create_encoder(config.encoder, **config.encoder_kwargs)
    for size in corpus.image_sizes:  # a multi-instrument corpus: every instrument's size
        encoder.check_image_size(size)
    for split in ("train", "val", "test"):
        if len(corpus.indices(split)) == 0:
            raise DatasetError(f"pretrain_dataset {config.pretrain_dataset!r} has an empty {split} split; simulate more images")
    if corpus.digest == dataset.digest:
        raise DatasetError(
            f"pretrain_dataset {config.pretrain_dataset!r} is the downstream dataset itself; simulate the corpus "
            "with another seed (e.g. preset pretrain) so that the probe is measured on held-out images"
        )


def resolve_pixel_scale(config: TrainConfig, datasets: dict) -> tuple[TrainConfig, str]:
    """``config`` with ``pixel_scale=auto`` replaced by its scale for ``datasets`` ({name: dataset}), and why.

    The reason is one line for the run's log ("" when there was nothing to choose); a number stays as it is.
    """
    if config.pixel_scale != PIXEL_AUTO:
        return config, ""
    from dlfm.data.resample import auto_pixel_scale, image_grids
    from dlfm.models import create_encoder

    scale, reason = auto_pixel_scale(image_grids(datasets), create_encoder(config.encoder, **config.encoder_kwargs_at(0.0)))
    return replace(config, pixel_scale=scale), reason


def check_corpus_sizes(config: TrainConfig) -> None:
    """A multi-instrument corpus's image sizes are known before it is simulated: refuse an encoder that cannot take one first."""
    from dlfm.corpora import MULTI_CORPORA, parse_mix

    if config.pretrain_dataset not in MULTI_CORPORA:
        return
    from dlfm.data.resample import auto_pixel_scale, resampled_side
    from dlfm.models import create_encoder
    from dlfm.simulation import PRESETS

    encoder = create_encoder(config.encoder, **config.encoder_kwargs_at(0.0))
    grids = {}
    for instrument in parse_mix(config.pretrain_mix, config.pretrain_dataset):  # instruments of weight 0 are not simulated
        preset = PRESETS[MULTI_CORPORA[config.pretrain_dataset][instrument]]
        grids[instrument] = (preset.image_size, preset.instrument.pixel_scale)
    # auto: the grid prepare_data will choose from the corpus (the downstream set is not resolved yet; it is checked there)
    scale = auto_pixel_scale(grids, encoder)[0] if config.pixel_scale == PIXEL_AUTO else config.pixel_scale
    for side, native in grids.values():
        encoder.check_image_size(resampled_side(side, native, scale) if scale else side)


def prepare_data(config: TrainConfig, runtime):
    """Resolve (rank 0 first: it may simulate the cache) and check the datasets.

    Returns the config with its pixel scale resolved (``auto``: from the datasets), the downstream dataset,
    its tensors per split, and the pretraining corpus with its tensors (the same objects as the
    downstream ones without ``pretrain_dataset``).
    """
    from dlfm.data.resample import at_pixel_scale
    from dlfm.stages.common import resolve_dataset, split_tensors

    check_corpus_sizes(config)

    def resolve():
        dataset = resolve_dataset(config.dataset, config.sim_n_train, config.sim_n_val, config.sim_n_test)
        corpus = (resolve_dataset(config.pretrain_dataset, config.pretrain_n_train, config.pretrain_n_val,
                                  config.pretrain_n_test, seed=config.pretrain_seed, mix=config.pretrain_mix)
                  if config.pretrain_dataset else dataset)
        return dataset, corpus

    resolved = resolve() if runtime.is_main_process else None
    distributed.barrier()
    dataset, corpus = resolved or resolve()
    config, reason = resolve_pixel_scale(config, {"dataset": dataset} if corpus is dataset
                                         else {"dataset": dataset, "pretrain_dataset": corpus})
    if reason and runtime.is_main_process:
        print(reason, flush=True)
    resampled = at_pixel_scale(dataset, config.pixel_scale, "dataset")  # the encoder's one grid (0: native)
    corpus = resampled if corpus is dataset else at_pixel_scale(corpus, config.pixel_scale, "pretrain_dataset")
    dataset = resampled
    check_trainable(config, dataset)
    splits = {name: split_tensors(dataset, name) for name in ("train", "val", "test")}
    if corpus is dataset:
        return config, dataset, splits, corpus, splits
    check_pretrainable(config, corpus, dataset)
    return config, dataset, splits, corpus, {name: split_tensors(corpus, name) for name in ("train", "val", "test")}


def train_on_other_rank(config: TrainConfig, progress: bool) -> dict:
    """Ranks > 0 under torchrun: the same validation, data and loop, with no tracking at all."""
    from dlfm.training.runtime import make_runtime

    config.validate()
    # Rank 0 has checked the run (and may have reopened it already): only the checkpoint is needed here.
    config, resume_state = resume_point(config, check_run=False) if config.resume else (config, None)
    runtime = make_runtime(config.device, config.precision)
    distributed.init_process_group(runtime.device)
    stop = StopRequest()
    try:
        config, dataset, splits, _, train_splits = prepare_data(config, runtime)
        with graceful_stop(stop):
            fit(config, train_splits, dataset.class_names, resume_state=resume_state, runtime=runtime, progress=False,
                stop=stop, probe_splits=splits)
    finally:
        distributed.destroy_process_group()
    return {}


def resume_point(config: TrainConfig, check_run: bool = True) -> tuple[TrainConfig, dict | None]:
    """Refuse a run that cannot be resumed; the config merged with the run's own, and the checkpoint.

    Everything is checked before the run is reopened, so a refusal leaves the old run untouched.
    A run stopped before its first epoch ended has no checkpoint: it restarts at epoch 1 with its
    *own* params (read from the run, never from the defaults), or is refused in one line.
    """
    run = checkpoints.check_resumable(config.resume, config.objective) if check_run else checkpoints.get_run(config.resume)
    state = checkpoints.load_checkpoint(config.resume)
    if state is not None:
        return config.resumed_from(state["config"]), state
    from dlfm.project_spec import entry_point, param_fields

    declared = {spec.name for _, spec in param_fields(entry_point(config.objective), declared_only=True)}  # mlflow run logs these
    merged = config.resumed_from(config.saved_from_params(run.data.params, declared))
    merged.validate()  # the run's own params may be what failed it: refused here, before it is reopened
    if check_run:
        print(f"dlfm: run {config.resume} has no checkpoint (it stopped before its first epoch ended): "
              "restarting it from epoch 0 with its own params", file=sys.stderr)
    return merged, None


def run_training_stage(config: TrainConfig, progress: bool = True) -> dict:
    """Validate, load or simulate the dataset, train, log everything; return the final metrics."""
    if not distributed.is_main_rank():
        return train_on_other_rank(config, progress)
    # From here on a stop (SIGTERM, Ctrl-C) is a flag, read before the loop and at its steps, never a
    # KeyboardInterrupt in the middle of a store write (SQLite's lock held, the run left RUNNING); train_in_run
    # closes this once the loop is done.
    stop, stopping = StopRequest(), contextlib.ExitStack()
    stopping.enter_context(graceful_stop(stop))
    with stopping:
        resume_state = None
        if config.resume:
            config.validate()
            config, resume_state = resume_point(config)
        from dlfm.objectives import get_objective

        run_name = f"{config.objective}-{config.encoder}"
        tags = {"dlfm.objective": config.objective, "dlfm.encoder": config.encoder}
        description = (f"Train a {config.encoder} encoder with the {config.objective} objective "
                       f"({get_objective(config.objective).description}) on {config.dataset}"
                       + (f" (pretraining corpus {config.pretrain_dataset})" if config.pretrain_dataset else "")
                       + f", up to {config.epochs} epochs, seed {config.seed}.")
        with tracking.stage_run(config.objective, run_name, config.experiment_name, tags=tags,
                                run_id=config.resume or None, description="" if config.resume else description) as run_id:
            try:
                return train_in_run(config, run_id, resume_state, progress, stop, stopping)
            except KeyboardInterrupt as error:
                hint = checkpoints.resume_hint(config.objective, run_id)
                tracking.set_tags({checkpoints.RESUME_HINT_TAG: hint})
                error.hint = hint  # the entry point prints it
                raise


def train_in_run(config: TrainConfig, run_id: str, resume_state: dict | None, progress: bool, stop: StopRequest,
                 stopping: contextlib.ExitStack) -> dict:
    """The body of a training run: data, the loop with per-epoch checkpoints, figures, registration.

    ``stopping`` holds the graceful-stop handler that sets ``stop``; it is closed once the loop is done.
    """
    from dlfm.objectives import get_objective
    from dlfm.stages.common import announce_device
    from dlfm.training.runtime import make_runtime

    with stopping:
        config.validate()
        if config.resume:
            checkpoints.supersede_launcher_run(run_id)
            done = resume_state["epoch"] if resume_state else 0
            tracking.set_tags({"dlfm.resumed_after_epoch": done, "dlfm.epochs": config.epochs})
        runtime = make_runtime(config.device, config.precision)
        announce_device(runtime, config.device)
        distributed.init_process_group(runtime.device)
        tracking.log_params(config.to_dict())  # on a resume, params already logged are kept as they are
        if resume_state:
            checkpoints.backfill_epoch_metrics(run_id, resume_state["history"])
        config, dataset, splits, corpus, train_splits = prepare_data(config, runtime)  # pixel_scale=auto resolved
        if corpus is dataset:
            tracking.log_dataset(dataset, context="training")
        else:  # the encoder learns from the corpus; the downstream set only feeds the linear probe
            tracking.log_dataset(corpus, context="pretraining")
            tracking.log_dataset(dataset, context="probe")
            tracking.set_tags({"dlfm.pretrain_dataset_digest": corpus.digest})
        if config.pixel_scale:  # the grid the encoder learned on, beside the param
            from dlfm.data.resample import describe_grid

            grids = {"dataset": dataset} if corpus is dataset else {"dataset": dataset, "pretrain_dataset": corpus}
            tracking.set_tags({f"dlfm.grid.{name}": describe_grid(data) for name, data in grids.items()})
        tracking.set_tags({"dlfm.dataset_digest": dataset.digest, "dlfm.device": runtime.device,
                           "dlfm.amp": runtime.amp_dtype, "dlfm.precision": runtime.amp_dtype,
                           "dlfm.world_size": runtime.world_size})
        # batch_size=auto: the number fit will use (the same rule, on the same split), beside the param as asked;
        # lr_effective: the peak lr the recipe's rule gives at that batch
        resolved = config.with_batch_resolved(runtime.device.type, train_splits["train"])
        tracking.log_params({"batch_size_resolved": resolved.batch_size, "lr_effective": resolved.lr_effective,
                             "pixel_scale_resolved": config.pixel_scale})

        # Epochs a killed run logged after its last checkpoint: a resume trains them again but does not log them twice.
        logged = checkpoints.logged_epochs(run_id, config.objective) if resume_state else set()

        def on_epoch_end(epoch, metrics, make_checkpoint):
            # Checkpoint first (when one is due): a crash in between then leaves a step to backfill, never one to log twice.
            if make_checkpoint is not None:
                checkpoints.log_checkpoint(make_checkpoint(), run_id)
            if metrics and epoch not in logged:
                tracking.log_epoch_metrics(metrics, epoch)

        if stop.signal_name is not None:  # stopped before the first step: the last checkpoint (if any) stands
            raise TrainingInterrupted(stop.signal_name, resume_state["epoch"] if resume_state else 0)
        try:
            result = fit(config, train_splits, dataset.class_names, on_epoch_end=on_epoch_end, resume_state=resume_state,
                         runtime=runtime, progress=progress, stop=stop, probe_splits=splits)
        finally:
            distributed.destroy_process_group()
    tracking.set_tags({"dlfm.data_placement": result.data_placement})  # device | pinned | host: where the splits lived
    # Logged once (step 0), not at the last epoch's step: val/… and test/… are the best weights' values.
    tracking.log_metrics({"best_epoch": result.best_epoch, "train/images_per_second": result.images_per_second}, step=0)
    log_training_figures(result, dataset.class_names)
    # The decoder travels with the encoder, so `-e anomaly` can score by reconstruction error.
    decoder, masking = result.model.decoder, config.masking
    tracking.log_encoder(result.model.encoder, corpus.image_size, config.objective, decoder, masking)
    # The version's dataset digest names what the encoder learned from: the corpus when there is one.
    # Registration logs val/… and test/… linked to the logged model `encoder-<objective>`.
    version = registry.register_encoder_version(result.model.encoder, corpus.image_size, config.objective,
                                        result.final_metrics, corpus.digest, run_id, decoder=decoder, masking=masking,
                                        labels=registry.label_tags(config.objective, None if dataset.task == "unlabelled" else dataset))
    tracking.set_tags({"dlfm.registered_version": version})
    if get_objective(config.objective).probed and "val/accuracy" not in result.final_metrics:  # the loop skipped the probe
        note = (f"no linear probe: dataset {config.dataset!r} has no labels (one class in its train split), so there are "
                "no val/test classification metrics; pass a labelled dataset (with this one as pretrain_dataset) to get them")
        tracking.set_tags({"dlfm.probe": f"skipped: {note}"})
        print(f"note: {note}", flush=True)
    headline = headline_metrics(result.final_metrics, config.monitor[0])
    tracking.describe_run(
        f"{config.objective} ({config.encoder}) on dataset {dataset.digest[:12]}: best epoch {result.best_epoch} of "
        f"{len(result.history)}; " + ", ".join(f"{k} {v:.4f}" for k, v in headline.items())
        + (" (linear probe on frozen embeddings)" if get_objective(config.objective).probed else "")
        + f". Registered dlfm-encoder version {version}.")
    print(tracking.stage_summary(config.objective, run_id, headline, version), flush=True)
    return {"run_id": run_id, "metrics": result.final_metrics, "best_epoch": result.best_epoch, "version": version}


def headline_metrics(metrics: dict[str, float], monitor: str) -> dict[str, float]:
    """The few numbers a description and the closing lines show: the monitored metric and the class metrics."""
    names = (monitor, "val/macro_auc", "val/accuracy", "test/macro_auc", "test/accuracy",
             "test/recon_mse_vs_mean_image", "test/masked_mse_vs_mean_image",
             "test/masked_norm_mse_vs_mean_image",
             "test/masked_norm_mse_vs_position_mean")
    return {name: metrics[name] for name in dict.fromkeys(names) if name in metrics}
