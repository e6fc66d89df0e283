"""The cells of an evaluate grid as child runs: logged, found again, and shared out among workers.

A FINISHED child run is its cell's checkpoint: tagged with the cell (task, arm, budget, seed), the
config digest, the dataset digest and the encoder version, holding the test metrics and
``predictions.npy``. A resume reuses it; nothing else records progress.

Workers are local processes started here (``-P workers=N``: ``python -m dlfm.stages.evaluate_worker``)
or torchrun ranks. Each takes the cells ``grid.owners`` gives its rank, so none talks to another;
worker 0 (the parent run's process) waits for the others' child runs in the store, then aggregates.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from dlfm import tracking
from dlfm.errors import DlfmError
from dlfm.evaluation import ARMS, TASKS, EvaluateConfig, run_grid
from dlfm.evaluation.grid import Cell, CellResult, cell_key, owners, plan
from dlfm.tracking import cells as store
from dlfm.tracking.runs import RESUME_HINT_TAG
from dlfm.training.interrupt import GridInterrupted, StopRequest
from dlfm.evaluation.embedding import random_init_seed

PREDICTIONS = "predictions.npy"  # a child run's test predictions as its task keeps them (TASKS[...].keep): class
# probabilities, parameters in physical units, or per-image PSNR (dB) and SSIM for superres
PARENT_ENV, RANK_ENV, WORKERS_ENV = "DLFM_EVALUATE_PARENT", "DLFM_WORKER_RANK", "DLFM_WORKERS"  # worker processes' inputs
TORCHRUN_TAG = "dlfm.torchrun_job"  # on the parent: torchrun's job id, how ranks > 0 find the parent rank 0 opened
WORKER_GRACE_S = 60.0  # after a stop, how long workers get to end their child runs KILLED (s)
POLL_S = 0.5  # how often worker 0 looks at its workers (or, under torchrun, at the store) (s)


@dataclass(frozen=True)
class Share:
    """What one worker needs to find its cells and log them under the parent."""

    parent_run_id: str
    stage: str  # names the child runs: evaluate, or transfer
    config: EvaluateConfig
    version: str  # the encoder's registry version
    digests: dict  # task → dataset digest
    rank: int  # this worker, 0..world-1
    world: int  # workers in all
    hint: str = ""  # the resume command, tagged on a child run a stop interrupts


def cell_tags(share: Share, cell: Cell) -> dict:
    """The tags that name a cell in the store (the UI filters on them; a resume searches by them)."""
    return {"dlfm.stage": share.stage, "dlfm.task": cell.task, "dlfm.budget": cell.budget, "dlfm.budget_size": cell.budget_size,
            "dlfm.arm": cell.arm, "dlfm.seed": cell.seed, "dlfm.encoder_version": share.version,
            "dlfm.config_digest": share.config.cell_digest(), "dlfm.dataset_digest": share.digests[cell.task]}


def child_run(share: Share):
    """on_cell for run_grid: each cell in its own child run of the parent; KILLED with the hint if a stop lands in it."""
    config, stage = share.config, share.stage

    def on_cell(cell, compute):
        name = f"{stage}-{cell.task}-{cell.budget}-{cell.arm}-seed{cell.seed}"
        with tracking.trial_run(share.parent_run_id, name, tags=cell_tags(share, cell)):
            init = {"random_init_seed": random_init_seed(cell.seed)} if ARMS[cell.arm].encoder == "random" else {}
            tracking.log_params({**init, "task": cell.task, "budget": cell.budget, "arm": cell.arm, "seed": cell.seed,
                                 "n_labels": cell.n_labels, "epochs": config.epochs, "min_steps": config.min_steps,
                                 "lr": config.lr, "encoder_lr": config.encoder_lr, "batch_size": config.batch_size})
            try:
                result = compute()
            except GridInterrupted:
                if share.hint:
                    tracking.set_tags({RESUME_HINT_TAG: share.hint})
                raise
            # The head's loss is CE (classification), MSE on standardised parameters (regression) or MSE on
            # normalised pixels (superres): one name each.
            for epoch, loss in enumerate(result.history, start=1):
                tracking.log_metrics({f"train/loss_{cell.task}": loss}, step=epoch)
            tracking.log_metrics(result.metrics)
            if result.head:
                tracking.log_params(result.head)
            store.log_array(result.predictions, PREDICTIONS)
        print(f"[{stage}] {cell.task} budget={cell.budget} {cell.arm} seed={cell.seed}: "
              f"{TASKS[cell.task].headline}={result.metrics[TASKS[cell.task].headline]:.4f}", flush=True)
        return result

    return on_cell


def finished_cells(share: Share) -> dict:
    """cell key → the FINISHED child run of that cell under this config, dataset and encoder version."""
    found = {}
    for run in store.child_runs(share.parent_run_id, {"dlfm.config_digest": share.config.cell_digest(),
                                                      "dlfm.encoder_version": share.version}):
        tags = run.data.tags
        if tags.get("dlfm.dataset_digest") != share.digests.get(tags.get("dlfm.task")):
            continue
        key = (tags["dlfm.task"], tags["dlfm.arm"], tags["dlfm.budget"], int(tags["dlfm.seed"]))
        found.setdefault(key, run)  # oldest first: a cell finished twice (two attempts) is the same numbers
    return found


def result_from_run(cell: Cell, run) -> CellResult:
    """A cell's result read back from its FINISHED child run (metrics are float64 in the store: exact)."""
    metrics = {k: v for k, v in run.data.metrics.items() if k.startswith("test/")}
    return CellResult(cell, metrics, [], store.load_array(run.info.run_id, PREDICTIONS))


def run_share(share: Share, tasks: dict, pretrained, runtime, stop: StopRequest) -> dict:
    """Compute this worker's cells that have no FINISHED child run yet; {cell key: result}."""
    cells = plan(share.config, tasks)
    owner = owners([cell for cell, _ in cells], share.config, share.world)
    done = finished_cells(share)
    mine = [(cell, index) for (cell, index), rank in zip(cells, owner)
            if rank == share.rank and cell_key(cell) not in done]
    results = run_grid(share.config, tasks, pretrained, runtime.device, on_cell=child_run(share),
                       autocast=runtime.autocast, stop=stop, cells=mine)
    return {cell_key(r.cell): r for r in results}


def collect(share: Share, tasks: dict, computed: dict) -> list[CellResult]:
    """Every cell of the grid, in grid order: computed here, or read from its FINISHED child run."""
    found = finished_cells(share)
    results, missing = [], []
    for cell, _ in plan(share.config, tasks):
        key = cell_key(cell)
        if key in computed:
            results.append(computed[key])
        elif key in found:
            results.append(result_from_run(cell, found[key]))
        else:
            missing.append(key)
    if missing:
        raise DlfmError(f"{len(missing)} cells have no finished child run (e.g. task, arm, budget, seed = {missing[0]}): "
                        f"a worker failed; " + (f"resume with: {share.hint}" if share.hint else "run again"))
    return results


def threads_per_worker(world: int) -> int:
    """A CPU worker's share of this machine's cores; OMP_NUM_THREADS, when set, wins.

    The thread count changes the order of CPU float reductions (conv backward), so a cell is
    bit-identical across worker counts only at the same threads per process: pin OMP_NUM_THREADS
    to compare runs with different ``workers`` bit for bit.
    """
    pinned = os.environ.get("OMP_NUM_THREADS", "")
    return int(pinned) if pinned.isdigit() and int(pinned) > 0 else max(1, (os.cpu_count() or 1) // world)


def worker_env(share: Share, rank: int, cuda_devices: list[str]) -> dict:
    """The environment of local worker ``rank``: the parent, its rank, its own GPU (round robin) if any."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}  # the worker's runs are children, not the launcher's
    env.update({PARENT_ENV: share.parent_run_id, RANK_ENV: str(rank), WORKERS_ENV: str(share.world),
                "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
    if cuda_devices:
        env["CUDA_VISIBLE_DEVICES"] = cuda_devices[rank % len(cuda_devices)]
    return env


def start_workers(share: Share, device) -> list[subprocess.Popen]:
    """Local workers 1..world-1 (this process is worker 0), each on its own GPU when the grid runs on CUDA."""
    import torch

    cuda = []
    if device.type == "cuda":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        cuda = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    return [subprocess.Popen([sys.executable, "-m", "dlfm.stages.evaluate_worker"], env=worker_env(share, rank, cuda),
                             stdin=subprocess.DEVNULL) for rank in range(1, share.world)]


def stop_workers(workers: list[subprocess.Popen]) -> None:
    """Ask every live worker to stop (SIGTERM: it ends its child run KILLED); kill what outlives the grace period."""
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + WORKER_GRACE_S
    for worker in workers:
        try:
            worker.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def wait_for_workers(workers: list[subprocess.Popen], stop: StopRequest) -> None:
    """Until every local worker has exited; a stop request or a failed worker raises (the others are stopped)."""
    while any(worker.poll() is None for worker in workers):
        if stop.signal_name is not None:
            stop_workers(workers)
            stop.check()
        failed = [(rank, w.returncode) for rank, w in enumerate(workers, start=1) if w.returncode not in (None, 0)]
        if failed:
            stop_workers(workers)
            raise DlfmError(f"evaluate worker {failed[0][0]} exited with code {failed[0][1]}; its cells are unfinished")
        time.sleep(POLL_S)
    failed = [(rank, w.returncode) for rank, w in enumerate(workers, start=1) if w.returncode != 0]
    if failed:
        raise DlfmError(f"evaluate worker {failed[0][0]} exited with code {failed[0][1]}; its cells are unfinished")


def wait_for_ranks(share: Share, tasks: dict, stop: StopRequest) -> None:
    """Under torchrun, rank 0: poll the store until every cell of the grid has a FINISHED child run."""
    total = len(plan(share.config, tasks))
    while len(finished_cells(share)) < total:
        stop.check()
        time.sleep(POLL_S * 4)
