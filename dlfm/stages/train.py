"""The autoencoder, supervised and multitask stages: one tracked run around ``training.fit``."""

from __future__ import annotations

from dlfm import tracking
from dlfm.tracking import registry
from dlfm.errors import ConfigError, DatasetError
from dlfm.training import TrainConfig, fit


def check_trainable(config: TrainConfig, dataset) -> None:
    """The dataset suits classification training and the encoder takes its image size."""
    from dlfm.models import create_encoder

    if dataset.task != "classification":
        raise DatasetError(
            f"dataset {config.dataset!r} is a {dataset.task} dataset; training stages need a "
            "classification dataset (preset model_ii or model_i, or DeepLense class folders)"
        )
    create_encoder(config.encoder, **config.encoder_kwargs).check_image_size(dataset.image_size)
    for split in ("train", "val", "test"):
        if len(dataset.indices(split)) == 0:
            raise DatasetError(f"dataset {config.dataset!r} has an empty {split} split; simulate more images")


def log_training_figures(result, class_names) -> None:
    """ROC, confusion matrix, learning curves and (with a decoder) the reconstruction grid."""
    from dlfm.plots import training as plots

    tracking.log_figure(plots.learning_curves_figure(result.history), "figures/learning_curves.png")
    if result.val.probs is not None:
        tracking.log_figure(plots.roc_figure(result.test.probs, result.test.labels, class_names, "test ROC"), "figures/roc.png")
        tracking.log_figure(plots.confusion_figure(result.test.probs, result.test.labels, class_names), "figures/confusion.png")
    if result.reconstructions is not None:
        tracking.log_figure(plots.reconstruction_figure(*result.reconstructions), "figures/reconstructions.png")


def run_training_stage(config: TrainConfig, progress: bool = True) -> dict:
    """Validate, load or simulate the dataset, train, log everything; return the final metrics."""
    from dlfm.stages.common import resolve_dataset, split_tensors
    from dlfm.training.runtime import make_runtime

    run_name = f"{config.objective}-{config.encoder}"
    tags = {"dlfm.objective": config.objective, "dlfm.encoder": config.encoder}
    with tracking.stage_run(config.objective, run_name, config.experiment_name, tags=tags) as run_id:
        config.validate()
        runtime = make_runtime(config.device)
        tracking.log_params(config.to_dict())
        dataset = resolve_dataset(config.dataset, config.sim_n_train, config.sim_n_val, config.sim_n_test)
        check_trainable(config, dataset)
        tracking.log_dataset(dataset, context="training")
        tracking.set_tags({"dlfm.dataset_digest": dataset.digest, "dlfm.device": runtime.device, "dlfm.amp": runtime.amp_dtype})
        splits = {name: split_tensors(dataset, name) for name in ("train", "val", "test")}

        def on_epoch_end(epoch, metrics, make_checkpoint):
            tracking.log_metrics(metrics, step=epoch)

        result = fit(config, splits, dataset.class_names, on_epoch_end=on_epoch_end, runtime=runtime, progress=progress)
        final_step = len(result.history)
        tracking.log_metrics({**result.final_metrics, "best_epoch": result.best_epoch,
                              "train/images_per_second": result.images_per_second}, step=final_step)
        log_training_figures(result, dataset.class_names)
        tracking.log_encoder(result.model.encoder, dataset.image_size, config.objective)
        version = registry.register_encoder(result.model.encoder, dataset.image_size, config.objective,
                                            result.final_metrics, dataset.digest, run_id)
        tracking.set_tags({"dlfm.registered_version": version})
        return {"run_id": run_id, "metrics": result.final_metrics, "best_epoch": result.best_epoch, "version": version}
