"""The encoder artifact format, defined in this one place.

An encoder directory holds:
- ``weights.pt``: the encoder's ``state_dict``, saved with ``torch.save``; always loaded with
  ``torch.load(weights_only=True)``, so no pickled code ever runs;
- ``arch.json``: ``{"name": ..., "in_chans": ..., **kwargs, "embed_dim": ..., "image_size": ...}``,
  the arguments of ``create_encoder`` plus facts for users of the embeddings;
- for a reconstructing objective (autoencoder, mae, multitask) also ``decoder.pt``, the decoder's
  ``state_dict`` (weights-only, as ``weights.pt``), and ``arch["decoder"]``: ``{"tokens": ...}``
  (True: MAE's token decoder, False: the stride-8 pixel decoder) plus the masking a masked objective
  trained with (``mask_ratio``, ``patch_size``), so the reconstruction error can score images later.
Training stages log this directory as the run artifact ``encoder/``; registered model versions
carry it as their pyfunc artifact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from dlfm.errors import DatasetError
from dlfm.models.encoders import Encoder, create_encoder

WEIGHTS_FILE = "weights.pt"
ARCH_FILE = "arch.json"
DECODER_FILE = "decoder.pt"
ARCH_KEYS_NOT_FOR_CREATE = ("embed_dim", "image_size", "objective", "decoder")


def save_encoder(encoder: Encoder, directory: str | Path, image_size: int | None = None, objective: str | None = None,
                 decoder: torch.nn.Module | None = None, masking: dict | None = None) -> Path:
    """Write ``weights.pt`` and ``arch.json`` for ``encoder`` (and ``decoder.pt`` with a decoder) into ``directory``."""
    from dlfm.models.heads import MaskedTokenDecoder

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu() for name, tensor in encoder.state_dict().items()}
    torch.save(state, directory / WEIGHTS_FILE)
    arch = {**encoder.arch_config, "embed_dim": encoder.embed_dim, "image_size": image_size, "objective": objective}
    if decoder is not None:
        torch.save({name: tensor.detach().cpu() for name, tensor in decoder.state_dict().items()}, directory / DECODER_FILE)
        tokens = isinstance(decoder, MaskedTokenDecoder)
        arch["decoder"] = {"tokens": tokens, **({"width": decoder.width, "depth": decoder.depth} if tokens else {}), **(masking or {})}
    (directory / ARCH_FILE).write_text(json.dumps(arch, indent=2, sort_keys=True))
    return directory


def read_arch(directory: str | Path) -> dict:
    """The architecture config stored beside the weights."""
    path = Path(directory) / ARCH_FILE
    if not path.is_file():
        raise DatasetError(f"{path} is missing; an encoder directory needs {ARCH_FILE} and {WEIGHTS_FILE}")
    return json.loads(path.read_text())


def load_encoder(directory: str | Path, map_location: str | torch.device = "cpu") -> Encoder:
    """Rebuild the encoder from ``arch.json`` and load its weights weights-only."""
    arch = read_arch(directory)
    kwargs = {k: v for k, v in arch.items() if k not in ARCH_KEYS_NOT_FOR_CREATE and k != "name"}
    encoder = create_encoder(arch["name"], **kwargs)
    state = load_weights_only(Path(directory) / WEIGHTS_FILE, map_location)
    encoder.load_state_dict(state)
    return encoder


@dataclass(frozen=True)
class Reconstructor:
    """A saved encoder with its decoder, and what its reconstruction loss was: enough to score images by it."""

    model: torch.nn.Module  # a LensModel without a head, in eval mode
    objective: str  # the objective it trained with (its row names the reconstruction part)
    masking: dict  # mask_ratio and patch_size of a masked objective; empty for the others


def load_reconstructor(directory: str | Path, map_location: str | torch.device = "cpu") -> Reconstructor | None:
    """The encoder with its decoder, or None when the directory holds no decoder (a supervised encoder, an older version)."""
    from dlfm.models.composite import LensModel

    arch = read_arch(directory)
    if not arch.get("decoder") or not (Path(directory) / DECODER_FILE).is_file():
        return None
    saved = arch["decoder"]
    # A token decoder saved before its size was stored is the old 128-wide, 2-block one.
    model = LensModel(load_encoder(directory, map_location), None, reconstruct=True, drop_tokens=bool(saved["tokens"]),
                      decoder_dim=saved.get("width", 128), decoder_depth=saved.get("depth", 2), mask_ratio=saved.get("mask_ratio", 0.75))
    state = load_weights_only(Path(directory) / DECODER_FILE, map_location)
    if "baseline" in state:  # the mean train image: its shape is the training image size, not the fresh (1, 1, 1, 1)
        model.decoder.baseline = torch.zeros_like(state["baseline"])
    model.decoder.load_state_dict(state)
    masking = {key: value for key, value in saved.items() if key not in ("tokens", "width", "depth")}
    return Reconstructor(model.eval(), arch["objective"], masking)


def load_weights_only(path: Path, map_location="cpu"):
    """``torch.load(weights_only=True)``; a file that holds anything but tensors and plain containers is one DlfmError line.

    torch refuses such a file with an ``UnpicklingError`` whose advice is to retry with
    ``weights_only=False``, which would run whatever code the file carries: never do that here.
    """
    import pickle

    from dlfm.errors import DlfmError

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        detail = " ".join(str(error).split())
        refused = detail.split("WeightsUnpickler error:")[-1].strip().split(".")[0] if "WeightsUnpickler" in detail else ""
        raise DlfmError(f"{path} is not a weights-only file: torch refused to unpickle it ({refused or 'unsupported object'}); "
                        "it may carry code, so dlfm will not load it; use weights saved by a dlfm training stage") from None
    except (RuntimeError, EOFError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DlfmError(f"{path} cannot be read as torch weights ({reason}); use weights saved by a dlfm training stage") from None
