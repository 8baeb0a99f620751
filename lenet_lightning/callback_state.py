"""The callback's checkpoint state: only what the run folder cannot give back, as plain values.

The probe set's indices, the newest fit map (the next one starts from it) and the captures not
analysed yet; tensors, ints and strings only, so that checkpoints load with ``weights_only=True``.
Everything else a resume needs is in the run folder.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lenet_lightning.analysis import Capture

STATE_VERSION = 3  # 2: the version before the series recorder, still resumed


def series_state(layer: str, split: str, split_size: int, probe_index: np.ndarray,
                 layout: tuple[int, np.ndarray] | None, pending: list[tuple[Capture, np.ndarray]]) -> dict[str, Any]:
    """The state to save: ``layout`` is the newest fit map with its step, ``pending`` the captures
    not analysed yet with their features."""
    return {
        "version": STATE_VERSION, "layer": layer, "split": split, "split_size": split_size,
        "probe_index": torch.from_numpy(probe_index.astype(np.int64)),
        "layout_step": -1 if layout is None else layout[0],
        "layout": None if layout is None else torch.from_numpy(layout[1]),
        "pending": [{"step": p.step, "stage": p.stage, "probe_acc": p.probe_acc, "features": torch.from_numpy(x)}
                    for p, x in pending],
    }


def checked_state(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's callback state as plain values, version 3 or 2; a field that is missing or
    malformed raises a ``ValueError`` that names it."""
    def field(name: str, kind: type | tuple[type, ...], source: dict[str, Any] = state) -> Any:
        value = source.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"Expected the checkpoint's EmbeddingProjector state `{name}` to be "
                             f"{getattr(kind, '__name__', kind)}, but got {type(value).__name__}; "
                             "the checkpoint is damaged or not from this package.")
        return value

    version = field("version", int)
    if version not in (2, STATE_VERSION):
        raise ValueError(f"Expected the checkpoint's EmbeddingProjector state `version` to be 2 or {STATE_VERSION}, "
                         f"but got {version}; resume it with the version of lenet-lightning that wrote it.")
    checked = {"layer": field("layer", str), "split": field("split", str), "split_size": field("split_size", int),
               "probe_index": field("probe_index", torch.Tensor).numpy()}
    if version == STATE_VERSION:
        layout = state.get("layout")
        checked["layout_step"] = field("layout_step", int)
        checked["layout"] = None if layout is None else field("layout", torch.Tensor).numpy()
    else:  # version 2 kept every layout: the newest fit one seeds the next map
        fit = [item for item in field("layouts", list) if item[1] == "fit"]
        checked["layout_step"] = int(fit[-1][0]) if fit else -1
        checked["layout"] = torch.as_tensor(fit[-1][2]).numpy() if fit else None
    pending = []
    for item in field("pending", list):
        acc = item.get("probe_acc") if isinstance(item, dict) else None
        pending.append((field("step", int, item), field("stage", str, item),
                        None if acc is None else float(field("probe_acc", (float, int), item)),
                        field("features", torch.Tensor, item).numpy()))
    checked["pending"] = pending
    return checked
