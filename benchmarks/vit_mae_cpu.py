"""CPU check of issue 27: a vit_tiny MAE on ramp images learns beyond the position-only predictor.

    python benchmarks/vit_mae_cpu.py BATCH N_TRAIN EPOCHS    # docs/results-log.md: 16 128 10
"""
import sys, time, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "tests"))
from test_recipe import ramps
from dlfm.training import TrainConfig
from dlfm.training.context import SplitTensors
from dlfm.training.loop import fit
torch.set_num_threads(2)
batch, n, epochs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
g = torch.Generator().manual_seed(0)
split = lambda k: SplitTensors(ramps(k, 32, g), torch.arange(k) % 3)
splits = {"train": split(n), "val": split(32), "test": split(32)}
config = TrainConfig(objective="mae", encoder="vit_tiny", epochs=epochs, batch_size=batch, lr=5e-3, decoder_dim=64, decoder_depth=2,
                     augment=False, device="cpu", precision="fp32", seed=0)
t = time.time()
r = fit(config, splits, ("a", "b", "c"), progress=True)
for i, e in enumerate(r.history, 1):
    print(i, f"lr {e['train/lr']:.2e} train {e['train/masked_norm_mse']:.3f} val ratio {e['val/masked_norm_mse_vs_position_mean']:.3f}")
print("lr_effective", config.lr_effective, "test ratio", r.final_metrics["test/masked_norm_mse_vs_position_mean"], f"{time.time()-t:.0f}s")
