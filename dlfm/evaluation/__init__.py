"""Label-efficiency evaluation of an encoder (pure torch/numpy; no MLflow).

``config`` holds the frozen EvaluateConfig, ``tasks`` the downstream tasks and their typed data,
``regression`` the lens-parameter targets, MAE and standardiser, ``superres`` the super-resolution degradation and
PSNR/SSIM, ``embedding`` the random encoder and the frozen pass,
``fit`` the one training loop every arm uses, ``grid`` the (task, budget, arm, seed) grid with its
embedding cache, and ``summary`` the mean ± sd tables and the verdicts.
"""

from dlfm.evaluation.config import ARM_NAMES, EvaluateConfig
from dlfm.evaluation.grid import ARMS, Cell, EmbeddingCache, run_grid
from dlfm.evaluation.summary import PAIRS, aggregate, verdict
from dlfm.evaluation.tasks import TASKS, TaskData, draw_subset

__all__ = ["ARM_NAMES", "ARMS", "Cell", "EmbeddingCache", "EvaluateConfig", "PAIRS", "TASKS", "TaskData", "aggregate",
           "draw_subset", "run_grid", "verdict"]
