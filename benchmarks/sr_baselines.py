"""Bicubic vs bicubic + affine (fitted on train) on 102 held-out model_ii test images, old and new normalisation (issue 28).

    python benchmarks/sr_baselines.py    # ~5 s on one core; simulates into a temporary folder
"""
import tempfile
import numpy as np
from dlfm.sources import load_dataset
from dlfm.data.dataset import normalize_images
from dlfm.evaluation import superres
from dlfm.simulation import PRESETS, SimulationConfig, simulate_dataset

d = load_dataset(simulate_dataset(SimulationConfig(preset="model_ii", n_train=51, n_val=3, n_test=102, seed=7), out_dir=tempfile.mkdtemp(prefix="dlfm-sr-"), workers=1, progress=False))
p = PRESETS["model_ii"]
tr, te = d.images[d.indices("train")], d.images[d.indices("test")]
def report(name, xtr, ytr, xte, yte):
    a, b = superres.fit_affine(xtr, ytr)
    s0 = superres.mean_scores(superres.image_scores(xte, yte)); s1 = superres.mean_scores(superres.image_scores(a * xte + b, yte))
    print(f"{name}: bicubic PSNR {s0['test/psnr']:.2f} dB SSIM {s0['test/ssim']:.3f}; +affine (a={a:.3f}, b={b:+.3f}) PSNR {s1['test/psnr']:.2f} dB SSIM {s1['test/ssim']:.3f}")
report("old (each normalised on its own)", superres.degrade_split(tr, p, 7, "train"), normalize_images(tr), superres.degrade_split(te, p, 7, "test"), normalize_images(te))
report("new (one map)", *superres.degraded_pair(tr, p, 7, "train"), *superres.degraded_pair(te, p, 7, "test"))
