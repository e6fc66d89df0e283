"""What a multi-instrument corpus is (issue 22): Model I, II and III images, each at its native size, in stated shares.

The corpora table and the mix parser live in ``dlfm.corpora`` (light, so a bad mix is refused before
lenstronomy loads). ``MultiCorpusConfig`` is to a multi-instrument corpus what ``SimulationConfig`` is to one preset: its
digest names the cached dataset directory. Each instrument is one simulation preset, simulated (and
cached) as its own dataset with its own seed; ``simulate_multi_corpus`` assembles them into one dataset
directory with one images file per instrument (read back by ``dlfm.data.multi``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import dlfm.data.layout as layout
from dlfm.data.dataset import load_dataset_dir
from dlfm.data.layout import SPLITS, json_default
from dlfm.data.multi import INSTRUMENT_COLUMN
from dlfm.corpora import DEFAULT_MIX, MULTI_CORPORA, PART_SEED_STRIDE, apportion, parse_mix
from dlfm.errors import ConfigError
from dlfm.simulation.config import SimulationConfig
from dlfm.simulation.presets import PRESETS
from dlfm.simulation.simulator import simulate_dataset

@dataclass(frozen=True)
class MultiCorpusConfig:
    """What to simulate for a multi-instrument corpus; its digest names the cached dataset directory."""

    corpus: str = "pretrain_multi"  # a row of MULTI_CORPORA
    mix: str = DEFAULT_MIX  # instrument=weight, comma-separated: each instrument's share of every split (normalised)
    n_train: int = 3000  # images in the train split, all instruments together
    n_val: int = 600  # images in the validation split
    n_test: int = 600  # images in the test split
    seed: int = 1000  # instrument k is simulated at seed + k × PART_SEED_STRIDE (k in MULTI_CORPORA order)

    @property
    def shares(self) -> dict[str, float]:
        """Each instrument's share (instruments with weight 0 left out)."""
        return parse_mix(self.mix, self.corpus)

    def part_configs(self) -> dict[str, SimulationConfig]:
        """instrument → the SimulationConfig of its images (its split sizes are its share of each split)."""
        shares = self.shares
        sizes = {split: apportion(getattr(self, f"n_{split}"), shares) for split in SPLITS}
        instruments = list(MULTI_CORPORA[self.corpus])
        return {name: SimulationConfig(preset=MULTI_CORPORA[self.corpus][name], n_train=sizes["train"][name],
                                       n_val=sizes["val"][name], n_test=sizes["test"][name],
                                       seed=self.seed + instruments.index(name) * PART_SEED_STRIDE)
                for name in shares}

    def validate(self) -> None:
        """Raise ConfigError naming the bad setting and how to fix it."""
        if self.corpus not in MULTI_CORPORA:
            raise ConfigError(f"unknown multi-instrument corpus {self.corpus!r}; choose one of {', '.join(MULTI_CORPORA)}")
        for name, config in self.part_configs().items():
            n_classes = len(PRESETS[config.preset].class_names)
            for split in SPLITS:
                count = getattr(config, f"n_{split}")
                if count < n_classes:
                    raise ConfigError(
                        f"{self.corpus}: {name} gets {count} of the {getattr(self, f'n_{split}')} {split} images under mix "
                        f"{self.mix!r}, fewer than its {n_classes} classes; simulate more images or raise its weight")
            config.validate()

    def digest(self) -> str:
        """sha256 of the settings and every instrument's simulation digest (stable)."""
        self.validate()
        payload = {"config": dataclasses.asdict(self), "shares": self.shares,
                   "parts": {name: config.digest() for name, config in self.part_configs().items()}}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=json_default).encode()).hexdigest()


def simulate_multi_corpus(config: MultiCorpusConfig, out_dir="data", workers: int | None = None, progress: bool = True) -> Path:
    """Simulate (or reuse) each instrument's preset, then assemble out_dir/<corpus>-<digest[:10]>/ and return it.

    Each instrument is cached as its own
    preset dataset (reused by any later corpus that asks for the same images); the assembled directory
    copies their images, one file per instrument, and is verified and reused like any simulated dataset.
    """
    config.validate()
    digest = config.digest()
    target = Path(out_dir) / f"{config.corpus}-{digest[:10]}"
    if layout.verified_cache(target, digest):
        return target
    parts = {name: load_dataset_dir(simulate_dataset(part, out_dir=out_dir, workers=workers, progress=progress),
                                   normalize=False)
             for name, part in config.part_configs().items()}

    def fill(scratch: Path) -> None:
        tables, sets = [], []
        for name, part in parts.items():
            np.save(scratch / layout.image_set_file(name), np.ascontiguousarray(part.images, dtype=np.float32))
            table = part.params.copy()
            table.insert(3, INSTRUMENT_COLUMN, name)
            tables.append(table)
            sets.append({"name": name, "file": layout.image_set_file(name), "image_size": part.image_size,
                         "num_images": len(part), "preset": part.manifest["preset"], "source_digest": part.digest,
                         "pixel_scale_arcsec": part.manifest["preset_settings"]["instrument"]["pixel_scale"]})
        table = pd.concat(tables, ignore_index=True)
        sizes = {split: int((table["split"] == split).sum()) for split in layout.SPLITS}
        first = next(iter(parts.values())).manifest
        manifest = {
            "preset": config.corpus, "task": first["task"], "class_names": list(first["class_names"]),
            "num_images": len(table), "split_sizes": sizes, "image_sets": sets,
            "config": dataclasses.asdict(config), "config_digest": digest, "shares": config.shares,
            "split_rule": "rows in image-set blocks (image_sets order); within a block its preset dataset's rows "
                          "(train, val, test); the instrument column names each row's set",
            "image_units": "counts/s per pixel (e- for Euclid and HST), noise included, not normalised; see each set's preset",
            "software": first.get("software", {}),
        }
        layout.finish_dataset(scratch, np.concatenate([part.labels for part in parts.values()]), table, manifest)

    return layout.write_atomically(target, fill)
