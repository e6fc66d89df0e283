"""What a multi-instrument corpus is (issue 22): Model I, II and III images, each at its native size, in stated shares.

The corpora table and the mix parser live in ``dlfm.corpora`` (light, so a bad mix is refused before
lenstronomy loads). ``MultiCorpusConfig`` is to a multi-instrument corpus what ``SimulationConfig`` is to one preset: its
digest names the cached dataset directory. Each instrument is one simulation preset, simulated (and
cached) as its own dataset with its own seed; ``dlfm.data.multi`` assembles them into one dataset
directory with one images file per instrument.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from dlfm.data.layout import SPLITS, json_default
from dlfm.corpora import DEFAULT_MIX, MULTI_CORPORA, PART_SEED_STRIDE, apportion, parse_mix
from dlfm.errors import ConfigError
from dlfm.simulation.config import SimulationConfig
from dlfm.simulation.presets import PRESETS

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
