"""Device throughput of the training loop: img/s and SM utilisation, before vs after each change of issue 20.

One run prints, for the multitask, autoencoder and mae steps (ResNet18, 64 px; batch 256 and 1024), and for the
ViT-MAE step (`--vit vit_small`: 8-px tokens, mask 0.75, MAE's 512-wide 8-block decoder; issue 27's aim >= 50k img/s):

    rung            what it adds (each rung keeps the ones above it)
    before          batches indexed on the host and copied from pageable memory, a host read every step
    +placement      the splits on the device (or pinned, one batch ahead), batches gathered there
    +no-sync        running loss sums read once per epoch, not every step
    +channels_last  NHWC convolutions (CUDA and CPU)
    +compile        torch.compile of the training forward (its compile time shown apart)

and then the wall time of the 72-cell GPU-size evaluate grid (issue 19's command), which needs the project's
other packages (mlflow, …: carry the wheels: benchmarks/gpu_wheels.sh, gpu_setup.sh); without them it says so and
skips it. The step measurements need only torch and numpy (tqdm is stubbed when it is missing).

    python benchmarks/gpu_throughput.py                        # on the GPU machine; or benchmarks/gpu.sh
    python benchmarks/gpu_throughput.py --no-compile --batch 256 --objectives multitask
    python benchmarks/gpu_throughput.py --device cpu --tiny    # smoke run (tests/test_gpu_benchmark.py)

"before" is the loop of 8612381 as far as flags reach: the augmentation and mask syncs it also had are gone
from every rung, so it is, if anything, faster than the old loop. SM utilisation is NVML's utilization.gpu (the
share of time a kernel ran, as `nvidia-smi dmon`'s sm column), sampled every 50 ms while the timed epochs run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import types

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

try:
    import tqdm.auto  # noqa: F401
except ImportError:  # the loop's progress bar is off here anyway; a stand-in keeps dlfm.training importable
    print("note: tqdm is not installed; its progress bar is stubbed", file=sys.stderr)

    class _NoBar:
        def __init__(self, *args, **kwargs): pass
        def update(self, n=1): pass
        def set_postfix(self, **kwargs): pass
        def close(self): pass

    sys.modules["tqdm"] = types.ModuleType("tqdm")
    sys.modules["tqdm.auto"] = types.SimpleNamespace(tqdm=_NoBar)

from dlfm.models.layers import prepare_position_tables  # noqa: E402
from dlfm.training import runtime as runtime_module  # noqa: E402
from dlfm.training.config import TrainConfig  # noqa: E402
from dlfm.training.context import SplitTensors  # noqa: E402
from dlfm.training.epoch import train_one_epoch  # noqa: E402
from dlfm.training.loop import build_context, place_splits  # noqa: E402
from dlfm.training.runtime import CHANNELS_LAST_DEVICES, make_runtime  # noqa: E402

RUNGS = ("before", "+placement", "+no-sync", "+channels_last", "+compile")
RUNG_FLAGS = {"+placement": "--no-placement", "+no-sync": "--keep-syncs", "+channels_last": "--no-channels-last",
              "+compile": "--no-compile"}  # each leaves its rung out
# The 72-cell grid of issue 19: held-out model_ii and regression 15000/300/3000, budgets 25,100,all, seeds 0,1,2,
# 4 arms x 2 tasks, epochs 8, min_steps 200, batch 128.
GRID_PARAMS = {"budgets": "25,100,all", "seeds": "0,1,2", "epochs": "8", "min_steps": "200", "batch_size": "128",
               "sim_n_train": "15000", "sim_n_val": "300", "sim_n_test": "3000"}
TRAIN_PARAMS = {"epochs": "10", "batch_size": "256", "sim_n_train": "15000", "sim_n_val": "1500", "sim_n_test": "1500"}


class UtilisationSampler:
    """Samples the GPU's utilization.gpu (%) every ``period`` s in a thread: NVML, else nvidia-smi, else nothing."""

    def __init__(self, device: torch.device, period: float = 0.05):
        self.period, self.samples, self.source = period, [], "n/a"
        self._stop, self._read = threading.Event(), None
        if device.type != "cuda":
            return
        index = device.index or 0
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._read, self.source = (lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu), "nvml"
        except Exception:  # noqa: BLE001 - no nvidia-ml-py, or no driver library: try the command line
            if shutil.which("nvidia-smi"):
                query = ["nvidia-smi", f"--id={index}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
                self._read = lambda: float(subprocess.run(query, capture_output=True, text=True, timeout=5).stdout.split()[0])
                self.source = "nvidia-smi"

    def __enter__(self):
        if self._read is not None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def _loop(self):
        while not self._stop.wait(self.period):
            try:
                self.samples.append(float(self._read()))
            except Exception:  # noqa: BLE001 - a failed sample is a missing sample
                pass

    def __exit__(self, *exc):
        self._stop.set()
        if self._read is not None:
            self._thread.join()

    def summary(self) -> str:
        if not self.samples:
            return "n/a"
        ordered = sorted(self.samples)
        return f"{sum(ordered) / len(ordered):.0f} (p10 {ordered[len(ordered) // 10]:.0f})"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_splits(n: int, size: int) -> dict[str, SplitTensors]:
    generator = torch.Generator().manual_seed(0)
    make = lambda count: SplitTensors(torch.rand(count, 1, size, size, generator=generator), torch.arange(count) % 3)  # noqa: E731
    return {"train": make(n), "val": make(max(1, n // 10)), "test": make(max(1, n // 10))}


def rung_settings(rung: str, device: torch.device) -> dict:
    """The switches of a rung: each rung keeps every change above it."""
    level = RUNGS.index(rung)
    return {"placement": None if level >= 1 else "host",  # None: dlfm's own choice (device, or pinned)
            "read_every": 0 if level >= 2 else 1,  # 1 = a host read after every step, as .item() did
            "channels_last": level >= 3 and device.type in CHANNELS_LAST_DEVICES,
            "compile": level >= 4}


def measure(objective: str, batch: int, rung: str, args, splits, encoder: str | None = None) -> dict:
    """Warm-up epoch (compiles, autotunes), then ``args.epochs`` timed epochs of ``train_one_epoch``."""
    settings = rung_settings(rung, args.device)
    runtime = make_runtime(str(args.device), args.precision)
    runtime.channels_last = settings["channels_last"]
    config = TrainConfig(objective=objective, encoder=encoder or args.encoder, batch_size=batch, epochs=args.epochs + 1,
                         compile=settings["compile"], device=str(args.device), precision=args.precision)
    placed, _, placement = place_splits(splits, splits, runtime, settings["placement"])
    train = placed["train"]
    steps = -(-len(train.labels) // batch)
    ctx = build_context(config, 3, steps, runtime, progress=False)
    ctx.placement, ctx.read_every = placement, settings["read_every"]
    if ctx.model.decoder is not None:
        ctx.model.decoder.set_baseline(train.images.mean(dim=0, keepdim=True).to(args.device))
    prepare_position_tables(ctx.model, [tuple(train.images.shape[-2:])], runtime.device)  # as fit: outside the graph
    synchronize(args.device)
    started = time.perf_counter()
    train_one_epoch(ctx, train, 1)
    synchronize(args.device)
    warm = time.perf_counter() - started
    with UtilisationSampler(args.device) as sampler:
        started, cpu = time.perf_counter(), time.process_time()
        for epoch in range(args.epochs):
            train_one_epoch(ctx, train, epoch + 2)
        synchronize(args.device)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    images = args.epochs * len(train.labels)
    return {"objective": objective if encoder is None else f"{objective}/{encoder}", "batch": batch, "rung": rung, "placement": placement,
            "img_per_s": images / seconds, "sm_util": sampler.summary(), "util_source": sampler.source,
            "warmup_extra_s": max(0.0, warm - seconds / args.epochs), "cpu_s_per_1000": 1000 * cpu / images}


def run_grid(args) -> str:
    """Wall time of issue 19's 72-cell evaluate grid (an encoder is trained first, at issue 20's GPU size)."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return "skipped: mlflow is not installed (carry the wheels: benchmarks/gpu_wheels.sh, then source benchmarks/gpu_setup.sh)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    device = ["-P", f"device={args.device.type}"]

    def mlflow_run(entry: str, params: dict) -> float:
        command = ["mlflow", "run", REPO, "-e", entry, "--env-manager", "local", *device]
        command += [item for key, value in params.items() for item in ("-P", f"{key}={value}")]
        print("$ " + " ".join(command), flush=True)
        started = time.perf_counter()
        subprocess.run(command, check=True, env=env, timeout=args.grid_timeout)
        return time.perf_counter() - started

    trained = mlflow_run("multitask", TRAIN_PARAMS)
    from dlfm.tracking import registry

    version = max(int(v.version) for v in registry.list_versions())
    mlflow_run("simulate", {"preset": "model_ii", "n_train": 15000, "n_val": 300, "n_test": 3000, "seed": 1})
    mlflow_run("simulate", {"preset": "regression", "n_train": 15000, "n_val": 300, "n_test": 3000, "seed": 1})
    wall = mlflow_run("evaluate", {**GRID_PARAMS, "encoder_uri": f"models:/dlfm-encoder/{version}"})
    return (f"{wall:.0f} s wall for the 72 cells (datasets cached beforehand; aim <= 90 s); "
            f"multitask 15000 x 10 epochs end to end {trained:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--objectives", default="multitask,autoencoder,mae")
    parser.add_argument("--batch", default="256,1024", help="batch sizes, comma-separated")
    parser.add_argument("--n", type=int, default=15360, help="train images (64 px) of the synthetic split")
    parser.add_argument("--size", type=int, default=64, help="image side (px)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per measurement (after one warm-up epoch)")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--vit", default="vit_small", help="the ViT-MAE rows (mae with this ViT, 8-px tokens, mask 0.75, "
                                                           "MAE's 512x8 decoder) at every rung from +no-sync; empty: none")
    for rung, flag in RUNG_FLAGS.items():
        parser.add_argument(flag, dest=rung, action="store_true", help=f"leave out rung {rung}")
    parser.add_argument("--grid", choices=("auto", "skip"), default="auto", help="the 72-cell evaluate grid (auto: when mlflow is there)")
    parser.add_argument("--grid-timeout", type=int, default=1200, help="seconds per mlflow run of the grid part")
    parser.add_argument("--tiny", action="store_true", help="smoke size: conv4, 32 px, 8 images, batch 4, one epoch, "
                                                            "compile with the eager backend, no grid")
    parser.add_argument("--json", default="", help="also write the rows to this JSON file")
    args = parser.parse_args()
    if args.tiny:
        args.encoder, args.size, args.n, args.epochs, args.batch, args.grid = "conv4", 32, 8, 1, "4", "skip"
        args.vit = args.vit and "vit_tiny"
        runtime_module.COMPILE_BACKEND = "eager"  # the wiring, without minutes of code generation on a CPU
    args.device = torch.device(args.device)
    rungs = [r for r in RUNGS if r == "before" or not getattr(args, r)]
    print(f"torch {torch.__version__}, device {args.device}"
          + (f" ({torch.cuda.get_device_name(args.device)})" if args.device.type == "cuda" else "")
          + f", precision {args.precision}, encoder {args.encoder}, {args.n} x {args.size}px train images, "
          f"{args.epochs} timed epoch(s), load average {os.getloadavg()[0]:.2f}", flush=True)
    splits = synthetic_splits(args.n, args.size)
    rows = []
    print("\n| objective | batch | rung | placement | img/s | x before | SM util % (mean, p10) | warm-up extra s | CPU-s/1000 img |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    for objective in [name for name in args.objectives.split(",") if name]:  # --objectives "": the ViT rows alone
        for batch in (int(b) for b in args.batch.split(",")):
            base = None
            for rung in rungs:
                row = measure(objective, batch, rung, args, splits)
                base = base or row["img_per_s"]
                rows.append(row)
                print(f"| {objective} | {batch} | {rung} | {row['placement']} | {row['img_per_s']:.0f} | "
                      f"{row['img_per_s'] / base:.2f} | {row['sm_util']} | {row['warmup_extra_s']:.1f} | "
                      f"{row['cpu_s_per_1000']:.2f} |", flush=True)
    # The ViT-MAE step (issue 27): no conv, so channels_last changes nothing; from +no-sync on, the rungs that apply.
    for batch in (int(b) for b in args.batch.split(",")) if args.vit else ():
        for rung in [r for r in rungs if RUNGS.index(r) >= RUNGS.index("+no-sync")]:
            row = measure("mae", batch, rung, args, splits, encoder=args.vit)
            rows.append(row)
            print(f"| {row['objective']} | {batch} | {rung} | {row['placement']} | {row['img_per_s']:.0f} | - | {row['sm_util']} | "
                  f"{row['warmup_extra_s']:.1f} | {row['cpu_s_per_1000']:.2f} |", flush=True)
    grid = run_grid(args) if args.grid == "auto" else "skipped (--grid skip)"
    print(f"\nevaluate grid: {grid}", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rows": rows, "grid": grid, "torch": torch.__version__}, handle, indent=2)


if __name__ == "__main__":
    main()
    # Every row is printed and the JSON written by now. On the H200 the interpreter's teardown then died with
    # "free(): corrupted unsorted chunks" and the report's part ran into its timeout (GPU report 2026-12-04), so
    # the process ends here, without the teardown (CUDA, NVML and thread-pool finalisers).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
