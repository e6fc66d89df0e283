"""The multi-instrument corpus source: a corpus name (``pretrain_multi``), each instrument's preset simulated on
demand, assembled into one directory of several image sizes and cached."""

from __future__ import annotations

from dlfm.corpora import DEFAULT_MIX, MULTI_CORPORA
from dlfm.data.multi import load_multi_dataset_dir
from dlfm.sources.base import Request


def claims(spec: str) -> bool:
    """A multi-instrument corpus's name."""
    return spec in MULTI_CORPORA


def load(spec: str, request: Request):
    """Simulate (or reuse) the corpus at the requested sizes, seed and mix, then read it."""
    from dlfm.simulation.multi import MultiCorpusConfig, simulate_multi_corpus

    config = MultiCorpusConfig(corpus=spec, mix=request.mix or DEFAULT_MIX, n_train=request.n_train, n_val=request.n_val,
                               n_test=request.n_test, seed=request.seed)
    path = simulate_multi_corpus(config, out_dir=request.data_dir, workers=request.workers)
    return load_multi_dataset_dir(path, normalize=request.normalize, verify=request.verify)
