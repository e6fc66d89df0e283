"""The table of multi-instrument corpora (issue 22) and their mix: which preset renders each instrument, in what share.

Like ``dlfm.objectives`` it imports nothing heavy, so a bad ``pretrain_mix`` is refused before torch or
lenstronomy load. ``dlfm.simulation.multi.MultiCorpusConfig`` turns a row and a mix into simulations.
"""

from __future__ import annotations

from dlfm.errors import ConfigError

# corpus name → {instrument (image-set name): the preset that renders its images}
MULTI_CORPORA: dict[str, dict[str, str]] = {
    "pretrain_multi": {
        "model_i": "pretrain_model_i",  # 150x150 px at 0.05″/px, Model I's camera
        "model_ii": "pretrain",  # 64x64 px at 0.101″/px, Euclid VIS
        "model_iii": "pretrain_model_iii",  # 64x64 px at 0.08″/px, HST WFC3 F160W
    },
}
DEFAULT_MIX = "model_i=1,model_ii=1,model_iii=1"  # equal thirds
# Instrument k of a corpus is simulated with seed + k × PART_SEED_STRIDE, so no two instruments share a lens draw.
PART_SEED_STRIDE = 100_000


def parse_mix(mix: str, corpus: str) -> dict[str, float]:
    """``"model_i=1,model_ii=2"`` → each named instrument's share of every split (summing to 1), in the corpus's order."""
    instruments = MULTI_CORPORA[corpus]
    weights: dict[str, float] = {}
    for item in str(mix).replace(" ", "").split(","):
        if not item:
            continue
        name, _, value = item.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if name not in instruments:
            raise ConfigError(f"unknown instrument {name!r} in mix {mix!r}; {corpus} mixes {', '.join(instruments)} "
                              f"(e.g. {DEFAULT_MIX})")
        if not weight >= 0 or weight == float("inf"):
            raise ConfigError(f"mix weight of {name} must be a non-negative number, got {value!r} (e.g. {DEFAULT_MIX})")
        weights[name] = weight
    total = sum(weights.values())
    if not total > 0:
        raise ConfigError(f"mix {mix!r} gives no instrument a positive weight; e.g. {DEFAULT_MIX}")
    return {name: weights[name] / total for name in instruments if weights.get(name, 0) > 0}


def apportion(total: int, shares: dict[str, float]) -> dict[str, int]:
    """``total`` images split by ``shares`` (largest remainder: the counts sum to ``total``, ties in order)."""
    exact = {name: total * share for name, share in shares.items()}
    counts = {name: int(value) for name, value in exact.items()}
    left = total - sum(counts.values())
    for name in sorted(exact, key=lambda n: (-(exact[n] - counts[n]), list(shares).index(n)))[:left]:
        counts[name] += 1
    return counts
