"""The frozen arms' BatchNorm statistics (issue 27 item 5): re-estimated on the task's own unlabelled images (AdaBN).

A multi-instrument encoder's saved running statistics blend its instruments; read with them, Model I fell below
a random encoder. These tests pin the mechanism: the re-estimated statistics are the target images' own, the
weights and the saved encoder are untouched, and under ``frozen_norm=target`` the saved statistics no longer matter.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import checksum
from dlfm.evaluation import TASKS, EvaluateConfig, run_grid
from dlfm.evaluation.embedding import adapt_batchnorm
from dlfm.models import create_encoder
from dlfm.sources import load_dataset


def trained_on(images: torch.Tensor) -> torch.nn.Module:
    """A conv4 whose BatchNorm running statistics were accumulated on ``images`` (as pretraining leaves them)."""
    torch.manual_seed(0)
    encoder = create_encoder("conv4").train()
    with torch.no_grad():
        for _ in range(30):
            encoder(images)
    return encoder.eval()


def test_adapted_statistics_are_the_target_images_own_and_nothing_else_moves():
    generator = torch.Generator().manual_seed(0)
    other = torch.rand(32, 1, 32, 32, generator=generator)  # the instrument the saved statistics came from
    target = 4.0 * torch.rand(32, 1, 32, 32, generator=generator) + 2.0  # another brightness and contrast
    encoder = trained_on(other)
    before = checksum(encoder)
    adapted = adapt_batchnorm(encoder, target.numpy(), torch.device("cpu"), batch_size=64)
    assert checksum(encoder) == before, "the saved encoder is untouched"
    saved_weights = {k: v for k, v in encoder.state_dict().items() if "running" not in k and "num_batches" not in k}
    assert all(torch.equal(v, adapted.state_dict()[k]) for k, v in saved_weights.items()), "no weight changes"
    assert not adapted.training
    first_bn = adapted.body[1]
    conv_out = encoder.body[0](target)
    torch.testing.assert_close(first_bn.running_mean, conv_out.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(first_bn.running_var, conv_out.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-5)
    # one batch: the adapted encoder in eval mode embeds as the target's own batch statistics do in training (up to
    # train mode's biased variance against the running one's unbiased n/(n-1)); the saved statistics are far off
    with torch.no_grad():
        per_instrument = trained_on(other).train()(target)
        adapted_error = (adapted(target) - per_instrument).abs().max()
        saved_error = (encoder(target) - per_instrument).abs().max()
    assert adapted_error < 0.05 * saved_error, (adapted_error, saved_error)


def test_encoders_without_batchnorm_come_back_unchanged():
    torch.manual_seed(0)
    vit = create_encoder("vit_tiny").eval()
    images = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(adapt_batchnorm(vit, images.numpy(), torch.device("cpu"))(images), vit(images))


@pytest.fixture(scope="module")
def classification(tiny_classification_dir):
    return {"classification": TASKS["classification"].load(load_dataset(tiny_classification_dir), "tiny-cls")}


def test_frozen_arms_read_the_task_with_its_own_statistics_whatever_was_saved(classification):
    images = torch.from_numpy(np.ascontiguousarray(classification["classification"].train.images))
    matched, blended = trained_on(images), trained_on(3.0 * images + 1.0)  # same weights, saved statistics of another scale
    config = EvaluateConfig(tasks="classification", budgets="all", seeds="0", arms="pretrained-frozen", epochs=2,
                            min_steps=2)

    def predictions(encoder, frozen_norm):
        result, = run_grid(EvaluateConfig(**{**config.to_dict(), "frozen_norm": frozen_norm}), classification, encoder,
                           torch.device("cpu"))
        return result.predictions

    np.testing.assert_allclose(predictions(matched, "target"), predictions(blended, "target"), atol=1e-5)  # saved ones no longer matter
    assert not np.allclose(predictions(matched, "saved"), predictions(blended, "saved"), atol=1e-3)  # they did before


def test_an_unknown_frozen_norm_is_refused_naming_the_choices():
    from dlfm.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown frozen_norm 'running'; choose one of target, saved"):
        EvaluateConfig(frozen_norm="running").validate()
