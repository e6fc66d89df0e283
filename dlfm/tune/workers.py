"""Workers: run trials until the study is full, here or in spawned processes sharing one storage."""

from __future__ import annotations

import multiprocessing
import os
import sys
from dataclasses import dataclass

import optuna

from dlfm.data.layout import SPLITS
from dlfm.data.tensors import split_tensors
from dlfm.errors import ConfigError, DlfmError
from dlfm.data.resample import at_pixel_scale
from dlfm.sources import resolve_dataset
from dlfm.training.runtime import make_runtime
from dlfm.tune.config import TuneConfig
from dlfm.tune.storage import open_storage
from dlfm.tune.study import load_or_create_study, trial_line
from dlfm.tune.trials import TrialSetup, make_objective, wants_another_trial


class _StartGate:
    """Serialises "is another trial needed? then ask for it" among this machine's workers.

    The lock is taken before counting and released once the new trial exists (first line of
    the objective), so local workers never overshoot ``n_trials``.
    """

    def __init__(self, lock):
        self.lock = lock
        self.held = False

    def acquire(self) -> None:
        if self.lock is not None:
            self.lock.acquire()
            self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.lock.release()


def run_trials(study: optuna.Study, setup: TrialSetup, lock=None, worker_index: int = 0) -> int:
    """Run trials one at a time until the study holds ``n_trials`` finished ones; return how many ran."""
    target = setup.config.n_trials
    ran = 0
    for _ in range(3 * target + 10):  # a safety bound: every attempt normally finishes or counts
        gate = _StartGate(lock)
        gate.acquire()
        try:
            if not wants_another_trial(study, target):
                break
            study.optimize(make_objective(setup, gate.release), n_trials=1, catch=(Exception,),
                           callbacks=[lambda st, trial: print(trial_line(st, trial, worker_index), flush=True)])
            ran += 1
        finally:
            gate.release()
    return ran


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a spawned worker needs (picklable)."""

    config: TuneConfig
    parent_run_id: str
    dataset_path: str
    worker_index: int
    torch_threads: int


def load_setup(config: TuneConfig, parent_run_id: str, dataset) -> TrialSetup:
    """Tensors and runtime for this worker's trials (the images at the trials' pixel scale, when they set one)."""
    dataset = at_pixel_scale(dataset, config.train.pixel_scale)
    splits = {name: split_tensors(dataset, name) for name in SPLITS}
    return TrialSetup(config, parent_run_id, splits, dataset.class_names, dataset.image_size,
                      make_runtime(config.train.device, config.train.precision))


def worker_main(spec: WorkerSpec, lock) -> None:
    """Body of one spawned worker process: open the storage, join the study, run trials."""
    import torch

    os.environ.pop("MLFLOW_RUN_ID", None)
    torch.set_num_threads(spec.torch_threads)
    try:
        study = load_or_create_study(spec.config, open_storage(spec.config), spec.worker_index)
        setup = load_setup(spec.config, spec.parent_run_id, resolve_dataset(spec.dataset_path))
        run_trials(study, setup, lock, spec.worker_index)
    except DlfmError as error:
        print(f"dlfm: error: worker {spec.worker_index}: {str(error).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)


def run_workers(config: TuneConfig, parent_run_id: str, dataset, study: optuna.Study) -> list[int]:
    """Run the trials here (one worker) or in ``n_workers`` spawned processes; return their exit codes."""
    if config.n_workers == 1:
        run_trials(study, load_setup(config, parent_run_id, dataset))
        return [0]
    if dataset.root is None:
        raise ConfigError("n_workers > 1 needs a dataset on disk (a preset or a dataset directory)")
    import torch

    context = multiprocessing.get_context("spawn")  # fork would copy torch's and MLflow's threads
    lock = context.Lock()
    threads = max(1, torch.get_num_threads() // config.n_workers)
    processes = [context.Process(target=worker_main, name=f"dlfm-tune-worker-{index}",
                                 args=(WorkerSpec(config, parent_run_id, str(dataset.root), index, threads), lock))
                 for index in range(config.n_workers)]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            process.join(timeout=30)
        raise
    return [process.exitcode for process in processes]
