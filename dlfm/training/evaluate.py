"""Evaluation of one split (losses, reconstruction baselines, classification) and the linear probe.

The baselines are computed here too: the mean train images and the position means of MAE's normalised loss.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dlfm.training.batches import group_batches
from dlfm.training.context import EvalOutput, SplitTensors, TrainingContext
from dlfm.training.epoch import sum_dtype
from dlfm.training.metrics import classification_metrics


def mean_images(data) -> dict[tuple[int, int], torch.Tensor]:
    """(H, W) → the mean image (1, 1, H, W) of every image of that size in ``data`` (groups of one size pooled)."""
    by_size: dict[tuple[int, int], list[torch.Tensor]] = {}
    for group in data.groups:
        by_size.setdefault(tuple(group.images.shape[-2:]), []).append(group.images)
    return {size: (groups[0].mean(dim=0, keepdim=True) if len(groups) == 1 else
                   sum(images.sum(dim=0, keepdim=True) for images in groups) / sum(len(images) for images in groups))
            for size, groups in by_size.items()}


def position_means(data, patch_size: int, device: torch.device, chunk: int = 1024) -> dict[tuple[int, int], torch.Tensor]:
    """(H, W) → the mean per-patch-normalised image (1, 1, H, W) of ``data``: for each patch position, the mean
    normalised patch (MAE's norm_pix target). As a prediction it knows positions and nothing of the image: the
    baseline a masked normalised loss must beat (ratio 1.0 = the decoder ignores the encoder). Computed once."""
    from dlfm.models.heads import expand_cells, patch_statistics

    sums: dict[tuple[int, int], list] = {}
    for group in data.groups:
        size = tuple(group.images.shape[-2:])
        total = sums.setdefault(size, [0.0, 0])
        for images in group.images.split(chunk):
            images = images.to(device).float()
            mean, std = patch_statistics(images, patch_size)
            normalised = (images - expand_cells(mean, patch_size, size)) / expand_cells(std, patch_size, size)
            total[0] = total[0] + normalised.sum(dim=0, keepdim=True)
            total[1] += len(images)
    return {size: total / count for size, (total, count) in sums.items()}


def position_mean_prediction(position_mean: torch.Tensor, images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The position-only predictor of ``images`` in image units: the mean normalised patch de-normalised with each
    target patch's own statistics, as ``MaskedTokenDecoder`` returns its predictions."""
    from dlfm.models.heads import expand_cells, patch_statistics

    size = images.shape[-2:]
    mean, std = patch_statistics(images, patch_size)
    return position_mean * expand_cells(std, patch_size, size) + expand_cells(mean, patch_size, size)


def decoder_baseline(means: dict[tuple[int, int], torch.Tensor]) -> torch.Tensor:
    """The decoder's one baseline: the mean image, or over several sizes the mean of each size's mean resized to the largest."""
    largest = max(means, key=lambda size: size[0] * size[1])
    resized = [nn.functional.interpolate(mean, size=largest, mode="bilinear", align_corners=False) if size != largest else mean
               for size, mean in means.items()]
    return torch.stack(resized).mean(dim=0)


EVAL_MASK_SEED = 12345  # masks for val/test are the same every epoch, so masked_mse is comparable across epochs


@torch.no_grad()
def evaluate(ctx: TrainingContext, data: SplitTensors, class_names: tuple[str, ...], prefix: str,
             embed: bool = True) -> EvalOutput:
    """Loss, reconstruction MSE (with the mean-image baseline) and classification metrics of one split, in eval mode.

    Embeddings always come from the unmasked image, in fp32 whatever the precision: they feed the probe, as they
    feed transfer. They cost a second encoder pass, so the per-epoch validation (``embed=False``) skips them.
    """
    ctx.model.eval()
    ctx.objective.eval()
    spec = ctx.objective.spec
    part = ctx.objective.recon_metric
    sums = torch.zeros(4, dtype=sum_dtype(ctx.runtime.device), device=ctx.runtime.device)  # loss, recon, baseline, position baseline (× images)
    zero = torch.zeros((), device=ctx.runtime.device)
    probs, embeddings = [], []
    mask_generator = torch.Generator().manual_seed(EVAL_MASK_SEED)
    order = group_batches(data, max(ctx.config.batch_size, 128), None)
    for _, index, images, labels in ctx.grouped_batches(data, order):
        mask = ctx.objective.make_mask(images, mask_generator)
        with ctx.runtime.autocast():
            output = ctx.model(images, mask)
            loss, parts = ctx.objective(output, images, labels, mask)
        if embed:  # fp32 whatever the precision: bf16 rounding moved a random ViT's probe by 0.13 AUC (results-log)
            embeddings.append(ctx.model.encoder(images))
        recon, baseline_mse, position_mse = zero, zero, zero
        if spec.decodes:
            recon = parts[part]
            baseline = ctx.mean_image_for(images).expand_as(images)
            baseline_mse = ctx.objective.reconstruction_error(baseline, images, mask)
        if ctx.objective.normalised and tuple(images.shape[-2:]) in ctx.position_means:
            predicted = position_mean_prediction(ctx.position_means[tuple(images.shape[-2:])], images, ctx.objective.patch_size)
            position_mse = ctx.objective.reconstruction_error(predicted, images, mask)
        sums += torch.stack([loss.detach().float(), recon.float(), baseline_mse.float(), position_mse.float()]).to(sums.dtype) * len(index)
        if output.logits is not None:
            probs.append(torch.softmax(output.logits.float(), dim=1))
    labels_all = data.labels
    n = len(labels_all)
    loss_sum, recon_sum, baseline_sum, position_sum = sums.tolist()  # the one read of this pass
    metrics = {f"{prefix}/{spec.total_metric}": loss_sum / n}
    if spec.decodes:
        name = f"{prefix}/{part}"
        metrics[name] = recon_sum / n
        metrics[f"{name}_mean_image"] = baseline_sum / n  # the MSE of predicting the mean train image
        metrics[f"{name}_vs_mean_image"] = recon_sum / max(baseline_sum, 1e-12)
    if position_sum > 0:  # MAE's normalised loss: the baseline that knows positions only (1.0 = nothing learned)
        metrics[f"{prefix}/{part}_position_mean"] = position_sum / n
        metrics[f"{prefix}/{part}_vs_position_mean"] = recon_sum / position_sum
    labels_np = labels_all.cpu().numpy()
    probs_np = torch.cat(probs).cpu().numpy() if probs else None
    if probs_np is not None:
        metrics.update(classification_metrics(probs_np, labels_np, class_names, prefix))
    return EvalOutput(metrics, probs_np, labels_np, torch.cat(embeddings).cpu().numpy() if embed else None)


def linear_probe(train: EvalOutput, others: dict[str, EvalOutput], class_names: tuple[str, ...], seed: int) -> dict[str, EvalOutput]:
    """Logistic regression on frozen embeddings: classification metrics of self-supervised objectives (metrics only).

    evaluate's frozen probe (``dlfm.training.probe.fit_logistic``: standardised features, converged, its penalty
    chosen by stratified k-fold macro AUC on the train split), so the number ``main`` promotes on and the
    number evaluate reports come from one method.
    """
    from dlfm.training.probe import Standardizer, fit_logistic

    scaler = Standardizer.fit(train.embeddings)
    probe = fit_logistic(scaler.forward(train.embeddings), np.asarray(train.labels), seed)
    probed = {}
    for prefix, output in others.items():
        probs = np.exp(probe.outputs(scaler.forward(output.embeddings)))
        probs /= probs.sum(axis=1, keepdims=True)
        metrics = classification_metrics(probs, output.labels, class_names, prefix)
        metrics["probe_penalty"] = probe.penalty  # the L2 strength the cross-validation chose (evaluate logs its own per cell)
        probed[prefix] = EvalOutput(metrics, probs, output.labels, output.embeddings)
    return probed


PROBE_METRICS = ("macro_auc", "accuracy")  # logged by every objective as <split>/probe_<name>: the one quantity main ranks on


def run_probe(ctx: TrainingContext, splits: dict, probe_splits: dict, val: EvalOutput, test: EvalOutput,
              class_names: tuple[str, ...]) -> dict[str, EvalOutput]:
    """The linear probe on frozen embeddings of ``probe_splits`` (train → val, test), whatever the objective."""
    same = probe_splits is splits
    train_out = evaluate(ctx, probe_splits["train"], class_names, "train")
    downstream = {"val": val if same else evaluate(ctx, probe_splits["val"], class_names, "val"),
                  "test": test if same else evaluate(ctx, probe_splits["test"], class_names, "test")}
    return linear_probe(train_out, downstream, class_names, ctx.config.seed)


def probe_named(probed: dict[str, EvalOutput]) -> dict[str, float]:
    """<split>/probe_<metric>: the probe's numbers under names every objective shares (a head's AUC is another quantity),
    and ``probe_penalty``, the L2 strength its cross-validation chose on the train split."""
    named = {f"{split}/probe_{name}": out.metrics[f"{split}/{name}"] for split, out in probed.items() for name in PROBE_METRICS}
    return {**named, **{"probe_penalty": out.metrics["probe_penalty"] for out in probed.values()}}


def probe_metrics(ctx: TrainingContext, splits: dict, probe_splits: dict, val: EvalOutput, test: EvalOutput,
                  class_names: tuple[str, ...]) -> tuple[EvalOutput, EvalOutput]:
    """val/test outputs of a probed objective: its own losses plus a linear probe's classification on ``probe_splits``.

    An unlabelled ``probe_splits`` (one class in train) has nothing to probe: the objective's own losses stand alone.
    """
    if probe_splits["train"].labels.unique().numel() < 2:
        return val, test
    probed = run_probe(ctx, splits, probe_splits, val, test, class_names)
    own = {"val": val, "test": test}
    return tuple(EvalOutput({**own[name].metrics, **probed[name].metrics, **probe_named({name: probed[name]})},
                            probed[name].probs, probed[name].labels, probed[name].embeddings) for name in ("val", "test"))
