"""Per-epoch checkpoints: a .keras model and its JSON state, each never half-written.

Each file is written beside its final name and renamed into place, so an
interrupted save never leaves a truncated file. The two renames are not one
step: a crash between them leaves the new model beside the previous state (a
resumed run then trains one epoch more than it counts). `progressive_admm` and
examples/cifar10.py resume from them.

Example:

    write_checkpoint(model, "run/ckpt.keras", {"epochs_done": 3})
    state = read_checkpoint_state("run/ckpt.keras")   # {"epochs_done": 3}
"""

from __future__ import annotations

import json
import os

__all__ = ["read_checkpoint_state", "write_checkpoint"]


def _state_path(path):
    return os.fspath(path) + ".json"


def write_checkpoint(model, path, state) -> None:
    """Saves `model` to `path` (.keras, optimizer included) and `state` as JSON.

    Raises:
        ValueError: `path` does not end in .keras.
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"A checkpoint must be a .keras path, got {path!r}.")
    tmp = path[: -len(".keras")] + ".tmp.keras"
    model.save(tmp)
    os.replace(tmp, path)
    state_path = _state_path(path)
    with open(state_path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(state, f)
    os.replace(state_path + ".tmp", state_path)


def read_checkpoint_state(path):
    """The JSON state saved with the checkpoint at `path`, or None if there is none.

    None also when only one of the two files exists (a run stopped before its
    first checkpoint was complete).
    """
    state_path = _state_path(path)
    if not (os.path.exists(state_path) and os.path.exists(os.fspath(path))):
        return None
    with open(state_path, encoding="utf-8") as f:
        return json.load(f)
