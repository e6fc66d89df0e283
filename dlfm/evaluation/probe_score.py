"""A registered encoder's promotion probe on a labelled set: the training stages' ``val/probe_macro_auc``, recomputed.

``main`` gates a promotion on ``val/probe_macro_auc``. A holder scored on another probe set (another run's
``model_ii`` split) or by another probe method has a number that does not compare with the candidate's, so
``main`` (and ``dlfm registry promote --probe-set``) scores both versions again here, the way the stages score a
candidate (``dlfm.training.evaluate``):
the set read on the encoder's grid, fp32 embeddings of the unmasked images in eval mode, in the memory layout
the stage used on that device (NHWC convolutions on the CPU), evaluate's logistic probe fitted on the train split
with ``seed``'s folds, scored on val and test. Rescoring a candidate on its own probe set gives its logged numbers.

The gate also reads how far the val split's sampling alone moves the difference (``paired_interval``).

Layout matters more than it looks at toy sizes: NCHW and NHWC embeddings differ by ~1e-6, and on 60 images
with near-random features that moved the cross-validated penalty from 0.1 to 10 and val AUC by 0.008.
"""

from __future__ import annotations

import numpy as np
import torch

from dlfm.data.resample import dataset_for_encoder
from dlfm.evaluation.embedding import embed
from dlfm.training.context import EvalOutput
from dlfm.training.evaluate import linear_probe, probe_named
from dlfm.training.runtime import make_runtime, prefers_channels_last


def probe_outputs(encoder, dataset, seed: int, device: str = "auto",
                  scored: tuple[str, ...] = ("val", "test")) -> dict[str, EvalOutput]:
    """{split: ``encoder``'s probe outputs (metrics, probabilities, labels)} for each ``scored`` split of the labelled
    ``dataset``, the probe fitted on its train split. The gate needs val alone, so it embeds no test image."""
    dataset = dataset_for_encoder(dataset, encoder, "dataset")
    runtime = make_runtime(device, "fp32")
    if runtime.channels_last and prefers_channels_last(encoder):
        encoder = encoder.to(memory_format=torch.channels_last)

    def output(split: str) -> EvalOutput:
        images = dataset.get_images(split).astype(np.float32, copy=False)
        return EvalOutput({}, None, np.asarray(dataset.get_labels(split)), embed(encoder, images, runtime.device))

    return linear_probe(output("train"), {split: output(split) for split in scored}, tuple(dataset.class_names), seed)


def probe_scores(encoder, dataset, seed: int, device: str = "auto") -> dict[str, float]:
    """{val,test}/probe_{macro_auc,accuracy} and probe_penalty of ``encoder`` on the labelled ``dataset``."""
    return probe_named(probe_outputs(encoder, dataset, seed, device))


def paired_interval(treated: EvalOutput, control: EvalOutput) -> tuple[float, float]:
    """95 % paired bootstrap interval of treated − control macro AUC on one split's images (evaluate's verdict
    bootstrap: the same stratified draws score both), i.e. how far the split's own sampling moves the difference."""
    from types import SimpleNamespace

    from dlfm.evaluation.summary import bootstrap_interval
    from dlfm.evaluation.tasks import TASKS, Split, TaskData

    if not np.array_equal(treated.labels, control.labels):
        raise ValueError("a paired interval needs both probes scored on the same images")
    empty = Split(np.zeros((0, 1, 1, 1), np.float32), treated.labels[:0])
    data = TaskData("classification", "probe set", "", empty, Split(empty.images, treated.labels), (), {})
    return bootstrap_interval([SimpleNamespace(predictions=treated.probs)], [SimpleNamespace(predictions=control.probs)],
                              TASKS["classification"], data)
