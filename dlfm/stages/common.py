"""What stages share with the workers below them: dataset resolution and the loop's tensors.

Both live in ``dlfm.data.resolve`` (so ``dlfm.tune`` workers need not import a stage); they are
re-exported here for the stages.
"""

from dlfm.data.resolve import resolve_dataset, split_tensors

__all__ = ["resolve_dataset", "split_tensors"]
