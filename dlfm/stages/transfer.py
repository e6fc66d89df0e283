"""The transfer stage: a registered encoder (by stage) against a truly random one, per seed."""

from __future__ import annotations

import numpy as np

from dlfm import tracking
from dlfm.tracking import registry
from dlfm.transfer import (
    REPORTED,
    Standardizer,
    TransferConfig,
    check_lens_parameters_vary,
    embed,
    embed_and_predict,
    finetune_encoder_and_head,
    mae_per_parameter,
    physical_parameters,
    predict,
    random_encoder_like,
    random_init_seed,
    regression_targets,
    train_head,
)


def comparison_table(results: dict[str, list[dict]], mean_predictor: dict[str, float]) -> list[dict]:
    """Per parameter: test MAE mean ± sd over seeds for each arm, their ratio, and the mean-predictor MAE."""
    table = []
    for name in REPORTED:
        row = {"parameter": name, "mean_predictor": mean_predictor[f"test/mae_{name}"]}
        for arm in ("pretrained", "random"):
            values = np.array([r[f"test/mae_{name}"] for r in results[arm]])
            row[f"{arm}_mean"], row[f"{arm}_sd"] = float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0
        row["ratio"] = row["pretrained_mean"] / max(row["random_mean"], 1e-12)
        table.append(row)
    return table


def table_markdown(table: list[dict]) -> str:
    """The comparison table as markdown."""
    lines = ["| parameter | pretrained MAE | random MAE | pretrained/random | mean predictor |", "|---|---|---|---|---|"]
    for row in table:
        lines.append(f"| {row['parameter']} | {row['pretrained_mean']:.4f} ± {row['pretrained_sd']:.4f} | "
                     f"{row['random_mean']:.4f} ± {row['random_sd']:.4f} | {row['ratio']:.3f} | {row['mean_predictor']:.4f} |")
    return "\n".join(lines)


def run_arm(arm: str, seed: int, encoder, data: dict, config: TransferConfig, device) -> dict:
    """One child run: train the head (or fine-tune) for one encoder arm and seed; return its metrics."""
    y = data["y_std"]
    with tracking.stage_run("transfer", f"transfer-{arm}-seed{seed}", nested=True,
                            tags={"dlfm.arm": arm, "dlfm.seed": seed}, system_metrics=False):
        init = {"random_init_seed": random_init_seed(seed)} if arm == "random" else {}
        tracking.log_params({**config.to_dict(), "arm": arm, "seed": seed, **init})
        if config.finetune:
            model, history, best_epoch = finetune_encoder_and_head(
                encoder, data["images"]["train"], y["train"], data["images"]["val"], y["val"], config, seed, device)
            preds = {split: embed_and_predict(model, data["images"][split], device) for split in ("val", "test")}
        else:
            x = data["embeddings"][arm] if arm == "pretrained" else data["random_embeddings"][seed]
            result = train_head(x["train"], y["train"], x["val"], y["val"], config, seed, device)
            history, best_epoch = result.history, result.best_epoch
            preds = {split: predict(result.head, x[split], device) for split in ("val", "test")}
        for epoch, metrics in enumerate(history, start=1):
            tracking.log_metrics(metrics, step=epoch)
        metrics = {"best_epoch": best_epoch}
        predicted_physical = {}
        for split in ("val", "test"):
            predicted_physical[split] = data["scaler"].inverse(preds[split])
            metrics.update(mae_per_parameter(predicted_physical[split], data["y"][split], split))
        tracking.log_metrics(metrics, step=len(history))
        return {**metrics, "history": history, "test_prediction": predicted_physical["test"]}


def run_transfer_stage(config: TransferConfig) -> dict:
    """Resolve the encoder by stage, embed once per encoder, run both arms per seed, log the comparison."""
    from dlfm.plots.transfer import mae_bars_figure, parity_figure
    from dlfm.stages.common import resolve_dataset
    from dlfm.training.runtime import resolve_device

    with tracking.stage_run("transfer", f"transfer-{config.encoder_uri or config.encoder_stage}",
                            config.experiment_name) as run_id:
        config.validate()
        device = resolve_device(config.device)
        tracking.log_params(config.to_dict())
        model_uri, version = registry.resolve_encoder_uri(config.encoder_stage, config.encoder_uri or None)
        pretrained = registry.load_registered_encoder(model_uri)
        tracking.set_tags({"dlfm.encoder_uri": model_uri, "dlfm.encoder_version": version.version if version else "",
                           "dlfm.encoder_run_id": version.run_id if version else "", "dlfm.encoder": pretrained.name})
        dataset = resolve_dataset(config.dataset, config.sim_n_train, config.sim_n_val, config.sim_n_test)
        pretrained.check_image_size(dataset.image_size)
        y = {split: regression_targets(dataset.get_params(split), config.dataset) for split in ("train", "val", "test")}
        check_lens_parameters_vary(y["train"], config.dataset)
        tracking.log_dataset(dataset, context="transfer")
        scaler = Standardizer.fit(y["train"])
        images = {split: dataset.get_images(split) for split in ("train", "val", "test")}
        data = {"y": y, "y_std": {s: scaler.forward(v) for s, v in y.items()}, "scaler": scaler, "images": images}

        def embed_all(encoder) -> dict:
            raw = {split: embed(encoder, images[split], device) for split in images}
            features = Standardizer.fit(raw["train"])
            return {split: features.forward(values) for split, values in raw.items()}

        if not config.finetune:
            data["embeddings"] = {"pretrained": embed_all(pretrained)}
            data["random_embeddings"] = {seed: embed_all(random_encoder_like(pretrained, seed)) for seed in config.seed_list}
        results = {"pretrained": [], "random": []}
        for seed in config.seed_list:
            results["pretrained"].append(run_arm("pretrained", seed, pretrained, data, config, device))
            results["random"].append(run_arm("random", seed, random_encoder_like(pretrained, seed), data, config, device))
        mean_predictor = mae_per_parameter(np.repeat(y["train"].mean(0, keepdims=True), len(y["test"]), 0), y["test"], "test")
        table = comparison_table(results, mean_predictor)
        summary_metrics = {}
        for row in table:
            summary_metrics[f"test/mae_{row['parameter']}_pretrained"] = row["pretrained_mean"]
            summary_metrics[f"test/mae_{row['parameter']}_random"] = row["random_mean"]
            summary_metrics[f"test/mae_ratio_{row['parameter']}"] = row["ratio"]
        tracking.log_metrics(summary_metrics)
        markdown = table_markdown(table)
        tracking.log_text(markdown + "\n", "transfer_table.md")
        tracking.log_dict({"rows": table}, "transfer_table.json")
        tracking.log_figure(mae_bars_figure(table), "figures/mae_bars.png")
        truth = physical_parameters(y["test"])
        first = {arm: physical_parameters(results[arm][0]["test_prediction"]) for arm in results}
        tracking.log_figure(parity_figure(truth, first, REPORTED), "figures/parity.png")
        return {"run_id": run_id, "table": table, "markdown": markdown, "version": version.version if version else None}
