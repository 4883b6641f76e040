"""The resumable training state in a Ray Train checkpoint directory, never pickled.

`model.safetensors` is a serving-format checkpoint (weights plus metadata); beside it,
`train_state.safetensors` holds the AdamW moments as tensors and, in its header, the optimiser's
param groups and the loop's counters (epoch, step, best validation F1, patience) as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from common.checkpoint import CHECKPOINT_FILENAME, ModelMeta, save_checkpoint
from common.model import PhotoClassifier

__all__ = ["TRAIN_STATE_FILENAME", "load_train_state", "save_train_state"]

TRAIN_STATE_FILENAME = "train_state.safetensors"


def save_train_state(
    directory: Path, model: PhotoClassifier, meta: ModelMeta, optimizer, state: dict
) -> None:
    """Write the model (serving format), the optimiser state and the loop's `state` counters."""
    save_checkpoint(model, meta, directory / CHECKPOINT_FILENAME)
    opt_state = optimizer.state_dict()
    tensors = {
        f"{param_id}.{name}": value.detach().cpu().contiguous()
        for param_id, param_state in opt_state["state"].items()
        for name, value in param_state.items()
    }
    header = {"param_groups": json.dumps(opt_state["param_groups"]), "state": json.dumps(state)}
    save_file(tensors, str(directory / TRAIN_STATE_FILENAME), metadata=header)


def load_train_state(directory: Path, model: PhotoClassifier, optimizer) -> dict:
    """Load weights and optimiser state in place; returns the loop's counters."""
    model.load_state_dict(load_file(str(directory / CHECKPOINT_FILENAME)))
    with safe_open(str(directory / TRAIN_STATE_FILENAME), framework="pt") as f:
        header = f.metadata()
    tensors = load_file(str(directory / TRAIN_STATE_FILENAME))
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        param_id, name = key.split(".", 1)
        per_param.setdefault(int(param_id), {})[name] = value
    optimizer.load_state_dict(
        {"state": per_param, "param_groups": json.loads(header["param_groups"])}
    )
    return json.loads(header["state"])
