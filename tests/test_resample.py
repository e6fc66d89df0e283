"""One pixel scale per encoder (issue 27 item 5): datasets resampled to the grid an encoder reads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from dlfm.data.dataset import LensDataset
from dlfm.data.resample import (at_pixel_scale, auto_pixel_scale, dataset_for_encoder, describe_grid, image_grids,
                                resample_images, resampled_side)
from dlfm.errors import ConfigError
from dlfm.models import create_encoder
from dlfm.stages.train import resolve_pixel_scale
from dlfm.training import TrainConfig


def lens_dataset(side: int, pixel_scale: float | None, n: int = 6) -> LensDataset:
    """A small in-memory dataset whose manifest records ``pixel_scale`` the way a simulated preset does."""
    rng = np.random.default_rng(0)
    manifest = {"digest": "d" * 64, "image_size": side}
    if pixel_scale is not None:
        manifest["preset_settings"] = {"instrument": {"pixel_scale": pixel_scale}}
    split = np.array(["train", "train", "val", "val", "test", "test"][:n])
    return LensDataset(images=rng.gamma(2.0, size=(n, 1, side, side)).astype(np.float32), labels=np.arange(n) % 3,
                       params=pd.DataFrame({"split": split}), split=split, class_names=("a", "b", "c"),
                       task="classification", manifest=manifest, root=None)


def test_the_side_keeps_the_field_of_view():
    assert resampled_side(150, 0.05, 0.101) == 74  # Model I read on Euclid's grid: 7.5 arcsec either way
    assert resampled_side(64, 0.08, 0.101) == 51  # Model III
    assert resampled_side(64, 0.101, 0.101) == 64
    assert resampled_side(64, 0.101, 0.05) == 129  # finer than native: upsampled


def test_shrinking_averages_pixel_blocks_and_growing_interpolates():
    images = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    np.testing.assert_allclose(resample_images(images, 2)[0, 0], [[2.5, 4.5], [10.5, 12.5]])  # 2x2 block means
    flat = np.full((3, 1, 150, 150), 7.0, dtype=np.float32)
    assert resample_images(flat, 74).shape == (3, 1, 74, 74) and np.allclose(resample_images(flat, 74), 7.0)
    grown = resample_images(images, 8)
    expected = torch.nn.functional.interpolate(torch.from_numpy(images), size=(8, 8), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(grown, expected.numpy())


def test_a_dataset_is_read_at_the_pixel_scale_and_the_original_is_untouched():
    native = lens_dataset(150, 0.05)
    before = native.images.copy()
    read = at_pixel_scale(native, 0.101)
    assert read.image_size == 74 and read.get_images("train").shape == (2, 1, 74, 74)
    images = read.get_images("test")
    assert images.min() == 0.0 and images.max() == 1.0  # still min-max normalised per image, after resampling
    np.testing.assert_array_equal(read.labels, native.labels)
    assert read.digest == native.digest  # the same files on disk: the grid is the encoder's, recorded with it
    assert read.manifest["resampled_from"] == {"image_size": 150, "pixel_scale_arcsec": 0.05}
    assert describe_grid(read) == "74 px at 0.101 arcsec/px (resampled from 150 px at 0.05)"
    assert describe_grid(native) == "150 px at 0.05 arcsec/px (native grid)"
    np.testing.assert_array_equal(native.images, before)
    assert native.image_size == 150
    assert at_pixel_scale(native, 0.0) is native  # 0: native grids
    assert at_pixel_scale(read, 0.101) is read  # already there


def test_a_dataset_that_does_not_record_its_pixel_scale_is_one_line():
    with pytest.raises(ConfigError, match="does not record its pixel scale") as info:
        at_pixel_scale(lens_dataset(64, None), 0.101, "classification_dataset")
    assert "\n" not in str(info.value) and "pixel_scale=0" in str(info.value)
    assert at_pixel_scale(lens_dataset(64, None), 0.0).image_size == 64  # native: nothing to know


def test_the_pixel_scale_is_part_of_the_encoder_and_survives_saving(tmp_path):
    from dlfm.evaluation.embedding import random_encoder_like
    from dlfm.models.serialization import load_encoder, save_encoder

    encoder = create_encoder("conv4", pixel_scale=0.101)
    assert encoder.pixel_scale == 0.101 and encoder.arch_config["pixel_scale"] == 0.101
    assert random_encoder_like(encoder, seed=0).pixel_scale == 0.101  # evaluate's random arms read the same grid
    save_encoder(encoder, tmp_path, image_size=74, objective="autoencoder")
    assert load_encoder(tmp_path).pixel_scale == 0.101
    plain = create_encoder("conv4")
    assert plain.pixel_scale == 0.0 and "pixel_scale" not in plain.arch_config  # older arch.json files read the same
    with pytest.raises(ConfigError, match="pixel_scale must be a non-negative number"):
        create_encoder("conv4", pixel_scale=-0.1)


def test_dataset_for_encoder_checks_the_resampled_size():
    encoder = create_encoder("resnet18", pixel_scale=1.0)  # 150 px at 0.05 -> 8 px: below resnet18's 32
    with pytest.raises(ConfigError, match="needs images of at least 32 px a side, got 8 px"):
        dataset_for_encoder(lens_dataset(150, 0.05), encoder)
    assert dataset_for_encoder(lens_dataset(150, 0.05), create_encoder("conv4", pixel_scale=0.101)).image_size == 74


def test_train_config_passes_the_pixel_scale_to_the_encoder_and_refuses_a_negative_one():
    config = TrainConfig(objective="autoencoder", pixel_scale=0.101)
    assert config.encoder_kwargs == {"stem": "imagenet", "pixel_scale": 0.101}
    assert TrainConfig(objective="autoencoder").encoder_kwargs == {"stem": "imagenet"}
    with pytest.raises(ConfigError, match="pixel_scale must be auto or >= 0 arcsec/px"):
        TrainConfig(objective="autoencoder", pixel_scale=-1.0).validate()


def test_auto_reads_images_at_several_scales_on_the_coarsest_grid_the_encoder_takes():
    conv4 = create_encoder("conv4")
    scale, reason = auto_pixel_scale(image_grids({"dataset": lens_dataset(64, 0.101), "corpus": lens_dataset(150, 0.05)}), conv4)
    assert scale == 0.101 and reason.startswith("pixel_scale=auto: every image on the coarsest grid, 0.101 arcsec/px")
    # one scale: nothing to choose, nothing said; the encoder records no scale, so it still reads sets that state none
    assert auto_pixel_scale(image_grids({"dataset": lens_dataset(64, 0.101), "corpus": lens_dataset(32, 0.101)}), conv4) == (0.0, "")
    assert auto_pixel_scale(image_grids({"dataset": lens_dataset(64, None), "corpus": lens_dataset(32, 0.101)}), conv4) == (0.0, "")
    # a set that states no scale cannot be resampled: every image stays native, and the line names it
    scale, reason = auto_pixel_scale(image_grids({"dataset": lens_dataset(64, None), "corpus": lens_dataset(150, 0.05),
                                                  "other": lens_dataset(64, 0.08)}), conv4)
    assert scale == 0.0 and "dataset states no pixel scale" in reason and "--pixel-scale" in reason
    # 150 px at 0.05 is 74 px at 0.101: no whole number of a vit_tiny's 8-px tokens, so native grids (which it may refuse later)
    scale, reason = auto_pixel_scale(image_grids({"a": lens_dataset(64, 0.101), "b": lens_dataset(150, 0.05)}), create_encoder("vit_tiny"))
    assert scale == 0.0 and "b would be 74 px" in reason and "no multiple of 8" in reason


def test_pixel_scale_is_auto_by_default_a_param_string_becomes_a_number_and_a_word_is_refused():
    assert TrainConfig(objective="mae").pixel_scale == "auto"
    assert TrainConfig(objective="mae", pixel_scale="0.101").pixel_scale == 0.101  # as MLflow passes it
    assert TrainConfig(objective="mae", pixel_scale=0).pixel_scale == 0.0
    with pytest.raises(ConfigError, match="pixel_scale must be auto or >= 0 arcsec/px .* got 'fine'"):
        TrainConfig(objective="mae", pixel_scale="fine").validate()
    datasets = {"dataset": lens_dataset(64, 0.101), "pretrain_dataset": lens_dataset(150, 0.05)}
    resolved, reason = resolve_pixel_scale(TrainConfig(objective="autoencoder", encoder="conv4"), datasets)
    assert resolved.pixel_scale == 0.101 and resolved.encoder_kwargs == {"pixel_scale": 0.101} and reason
    native = TrainConfig(objective="autoencoder", encoder="conv4", pixel_scale=0.0)
    assert resolve_pixel_scale(native, datasets) == (native, "")  # a number is the user's choice
    # a checkpoint written before auto existed (pixel_scale 0.0) resumes at its own grid when the param is left at auto
    assert TrainConfig(objective="autoencoder", resume="abc").resumed_from({"pixel_scale": 0.0}).pixel_scale == 0.0
