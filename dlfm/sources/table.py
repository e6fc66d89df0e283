"""The source table: one row per kind of dataset spec. A new kind of data is one new file here plus one row."""

from __future__ import annotations

from dlfm.corpora import MULTI_CORPORA
from dlfm.simulation.presets import PRESETS
import dlfm.sources.corpus as corpus
import dlfm.sources.dataset_dir as dataset_dir
import dlfm.sources.deeplense as deeplense
import dlfm.sources.image_folder as image_folder
import dlfm.sources.multi_dir as multi_dir
import dlfm.sources.preset as preset
import dlfm.sources.s3 as s3
import dlfm.sources.shards as shards
from dlfm.sources.base import Source

# Asked in order; the first row that claims a spec loads it. Names and URIs come before paths, so a
# preset's name means the preset even where a folder of that name sits in the working directory.
SOURCES: tuple[Source, ...] = (
    Source("preset", "a preset name", preset.claims, preset.load, names=tuple(PRESETS)),
    Source("corpus", "a multi-instrument corpus name", corpus.claims, corpus.load, names=tuple(MULTI_CORPORA)),
    Source("s3", "an s3://bucket/prefix dataset directory", s3.claims, s3.load),
    Source("shards", "a sharded corpus directory (Parquet shards, format dlfm-shards)", shards.claims, shards.load,
           local_path=True),
    Source("dataset_dir", "a dlfm dataset directory (manifest.json)", dataset_dir.claims, dataset_dir.load, local_path=True),
    Source("multi_dir", "a multi-instrument dataset directory (image_sets in manifest.json)", multi_dir.claims,
           multi_dir.load, local_path=True),
    Source("deeplense", "DeepLense class folders (no/ sphere/ vort/ or no_sub/ cdm/ axion/)", deeplense.claims,
           deeplense.load, local_path=True),
    Source("image_folder", "a folder of .npy images", image_folder.claims, image_folder.load, local_path=True),
)
