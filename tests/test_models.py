"""Encoders, decoder and heads: every registered encoder trains forward and backward."""

from __future__ import annotations

import pytest
import torch

from dlfm.errors import ConfigError
from dlfm.models import build_model, create_encoder, list_encoders
from dlfm.models.serialization import load_encoder, save_encoder
from dlfm.objectives import OBJECTIVES


@pytest.mark.parametrize("name", list_encoders())
@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_forward_backward_every_encoder(name, objective):
    model = build_model(objective, name, num_classes=3)
    # 32 px: resnet18's smallest side (a 1x1 layer4 map), 16 or 64 tokens for the ViTs; at 64 px the 4-px-token ViTs
    # (256 tokens) took most of this module's time for no other shape or gradient path
    images = torch.rand(2, 1, 32, 32)
    output = model(images)
    assert output.embedding.shape == (2, model.encoder.embed_dim)
    loss = output.embedding.pow(2).mean()
    if output.logits is not None:
        assert output.logits.shape == (2, 3)
        loss = loss + output.logits.sum()
    if output.reconstruction is not None:
        assert output.reconstruction.shape == images.shape
        loss = loss + output.reconstruction.mean()
    loss.backward()
    grads = [p.grad for p in model.encoder.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_small_stem_keeps_a_larger_feature_map():
    small = create_encoder("resnet18", stem="small").forward_features(torch.rand(1, 1, 64, 64))
    imagenet = create_encoder("resnet18", stem="imagenet").forward_features(torch.rand(1, 1, 64, 64))
    assert small.shape[-1] == 8 and imagenet.shape[-1] == 2


def test_unknown_encoder_lists_the_known_ones():
    with pytest.raises(ConfigError, match="conv4"):
        create_encoder("vit_huge")


def test_image_too_small_for_the_encoder_is_refused():
    with pytest.raises(ConfigError, match="at least 32 px"):
        create_encoder("resnet18").check_image_size(24)
    create_encoder("resnet18").check_image_size(150)


def test_decoder_reconstructs_sizes_that_are_no_power_of_two():
    model = build_model("autoencoder", "resnet18", num_classes=3)
    assert model(torch.rand(1, 1, 150, 150)).reconstruction.shape == (1, 1, 150, 150)


def test_encoder_round_trips_weights_only(tmp_path):
    encoder = create_encoder("conv4")
    save_encoder(encoder, tmp_path, image_size=64, objective="autoencoder")
    loaded = load_encoder(tmp_path)
    images = torch.rand(3, 1, 64, 64)
    encoder.eval(), loaded.eval()
    assert torch.equal(encoder(images), loaded(images))


def test_a_vit_serves_embeddings_and_rebuilds_for_the_random_arm(tmp_path):
    import numpy as np

    from dlfm.data.dataset import normalize_images
    from dlfm.tracking.pyfunc_encoder import _load_pyfunc, example_images
    from dlfm.evaluation.embedding import random_encoder_like

    encoder = create_encoder("vit_tiny_p4").eval()
    save_encoder(encoder, tmp_path, image_size=64, objective="mae")
    images = example_images(64)
    served = _load_pyfunc(str(tmp_path)).predict(images)  # what `mlflow models serve` answers
    with torch.no_grad():
        assert np.allclose(served, encoder(torch.from_numpy(normalize_images(images))).numpy(), atol=1e-5)
    random = random_encoder_like(encoder, seed=0)  # evaluate's random-frozen and scratch arms
    assert random.name == "vit_tiny_p4" and random.patch_size == 4
    assert not torch.equal(random.patch_embed.weight, encoder.patch_embed.weight)
