"""Per-epoch val evaluation of mae resnet18 (300 random images): with vs without the unmasked embedding pass, interleaved.

    .venv/bin/python benchmarks/eval_embeddings.py
"""
import time, torch
from dlfm.training import TrainConfig
from dlfm.training.loop import SplitTensors, build_context, evaluate
torch.manual_seed(0)
config = TrainConfig(objective="mae", encoder="resnet18", batch_size=64)
ctx = build_context(config, 3, 10, progress=False)
data = SplitTensors(torch.rand(300, 1, 64, 64), torch.randint(0, 3, (300,)))
ctx.mean_image = data.images.mean(0, keepdim=True)
ctx.model.decoder.set_baseline(ctx.mean_image)
evaluate(ctx, data, ("a", "b", "c"), "val")
times = {True: [], False: []}
for _ in range(3):
    for embed in (True, False):
        t = time.process_time(); w = time.perf_counter()
        evaluate(ctx, data, ("a", "b", "c"), "val", embed=embed)
        times[embed].append((time.perf_counter() - w, time.process_time() - t))
for embed, v in times.items():
    print(f"embed={embed}: best wall {min(x[0] for x in v):.2f} s, best CPU {min(x[1] for x in v):.2f} s")
print(f"ratio {min(x[0] for x in times[True]) / min(x[0] for x in times[False]):.2f}x")
