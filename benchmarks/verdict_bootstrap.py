"""Cost of the verdicts' test-image bootstrap at the demo's classification size (issue 28): 150 test images,
3 budgets, 2 frozen arms, 3 seeds, synthetic class probabilities.

    python benchmarks/verdict_bootstrap.py
"""
import time
import numpy as np
from dlfm.evaluation.grid import Cell, CellResult
from dlfm.evaluation.summary import verdicts
from dlfm.evaluation.tasks import Split, TaskData

rng = np.random.default_rng(0)
labels = np.repeat(np.arange(3), 50)
data = TaskData("classification", "x", "d", Split(np.zeros((1, 1, 64, 64)), labels), Split(np.zeros((1, 1, 64, 64)), labels),
                ("no_sub", "cdm", "axion"), {})
results = []
for budget in (10, 50, "all"):
    for arm, shift in (("pretrained-frozen", 0.6), ("random-frozen", 0.3)):
        for seed in range(3):
            logits = rng.normal(size=(150, 3)); logits[np.arange(150), labels] += shift
            probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
            from dlfm.training.metrics import classification_metrics
            results.append(CellResult(Cell("classification", budget, arm, seed, 30, 10), classification_metrics(probs, labels, data.class_names, "test"), [], probs))
start = time.perf_counter()
rows = verdicts(results, {"classification": data})
print(f"{len(rows)} verdicts with bootstrap in {time.perf_counter() - start:.1f} s")
for r in rows:
    print(r["sentence"])
