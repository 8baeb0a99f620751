"""What one capture is made of: the probe set, one layer's output on it, its metadata and its sprite.

Pure functions on tensors and arrays, no Trainer: the ``EmbeddingProjector`` callback decides when to
call them and where their results go.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lenet_lightning.data import stratified_subset

# Probe inputs per forward pass: on a CPU, cache-sized activations (the fastest on 2 cores); on an
# accelerator, large batches (few kernel launches, one copy back).
FORWARD_CHUNK = 100
FORWARD_CHUNK_ACCELERATOR = 2048


@dataclass(frozen=True)
class ProbeSet:
    """The fixed points every capture shows: the same inputs in the same order each time.

    Args:
        inputs: ``(N, ...)`` model inputs, as the data yields them.
        labels: ``(N,)`` class indices into ``class_names``.
        class_names: One name per class, in class-index order.
        index: ``(N,)`` positions of the points in their split (the ``index`` metadata column).
        split_size: Length of the split drawn from.
    """

    inputs: torch.Tensor
    labels: np.ndarray
    class_names: tuple[str, ...]
    index: np.ndarray
    split_size: int


def probe_from_tensors(images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], num_samples: int,
                       seed: int) -> ProbeSet:
    """A stratified, seeded probe set of ``num_samples`` from a whole split held as tensors.

    Example:
        >>> probe = probe_from_tensors(torch.zeros(6, 1, 2, 2), torch.tensor([0, 1] * 3), ["a", "b"], 4, seed=0)
        >>> probe.inputs.shape, sorted(probe.labels.tolist())
        (torch.Size([4, 1, 2, 2]), [0, 0, 1, 1])
    """
    labels_np = labels.numpy()
    index = _probe_index(labels_np, num_samples, seed)
    return ProbeSet(images[torch.from_numpy(index)], labels_np[index], tuple(class_names), index, len(labels_np))


def probe_from_dataset(dataset: Any, num_samples: int, seed: int) -> ProbeSet:
    """A probe set from any map-style dataset of ``(input, target)`` pairs.

    Targets are read from ``dataset.targets`` when it has them (torchvision's datasets), else from
    every item once. Class names come from ``dataset.classes`` when it has them, else from the
    distinct target values. Stratified by class and seeded, like :func:`probe_from_tensors`.

    Raises:
        TypeError: ``dataset`` is not a sized, indexable dataset of ``(input, target)`` pairs.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> probe = probe_from_dataset(TensorDataset(torch.randn(8, 3), torch.tensor([5, 7] * 4)), 4, seed=0)
        >>> probe.class_names, sorted(probe.labels.tolist()), tuple(probe.inputs.shape)
        (('5', '7'), [0, 0, 1, 1], (4, 3))
    """
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise TypeError(f"Expected a map-style dataset (with `__len__` and `__getitem__`) for the probe set, "
                        f"but got {type(dataset).__name__}; pass one as `EmbeddingProjector(dataset=...)`.")
    size = len(dataset)
    targets = getattr(dataset, "targets", None)
    if targets is None or len(targets) != size:
        targets = [_pair(dataset[i], dataset)[1] for i in range(size)]
    values = np.asarray([int(t) if _is_integer(t) else str(_scalar(t)) for t in targets])
    uniques, labels = np.unique(values, return_inverse=True)
    classes = getattr(dataset, "classes", None)
    if values.dtype.kind in "iu" and isinstance(classes, Sequence) and len(classes) > int(values.max()) >= 0:
        labels, names = values.astype(np.int64), tuple(str(name) for name in classes)
    else:
        names = tuple(str(value) for value in uniques)
    index = _probe_index(labels, num_samples, seed)
    inputs = torch.stack([torch.as_tensor(_pair(dataset[int(i)], dataset)[0]) for i in index])
    return ProbeSet(inputs, labels[index], names, index, size)


def check_probe_size(num_samples: int, num_classes: int) -> None:
    """Refuses a stratified probe set too small to hold one point of every class.

    Example:
        >>> check_probe_size(5, 10)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Expected `num_samples` to be at least the 10 classes, ... but got 5; pass ...
    """
    if num_samples < num_classes:
        raise ValueError(f"Expected `num_samples` to be at least the {num_classes} classes, so that the stratified "
                         f"probe set holds every class, but got {num_samples}; pass `--embeddings.num_samples "
                         f"{num_classes}` or more.")


def _probe_index(labels: np.ndarray, num_samples: int, seed: int) -> np.ndarray:
    if num_samples < len(labels):
        check_probe_size(num_samples, len(np.unique(labels)))
    return stratified_subset(labels, num_samples, seed)


def _pair(item: Any, dataset: Any) -> tuple[Any, Any]:
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise TypeError(f"Expected {type(dataset).__name__} to yield (input, target) pairs, "
                        f"but got {type(item).__name__}.")
    return item[0], item[1]


def _scalar(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, np.ndarray) and value.size == 1:
        return value.item()
    return value


def _is_integer(value: Any) -> bool:
    value = _scalar(value)
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@torch.inference_mode()
def forward_layer(module: nn.Module, layer: str, inputs: torch.Tensor, device: torch.device | str = "cpu",
                  chunk: int | None = None) -> tuple[np.ndarray, torch.Tensor]:
    """Runs ``inputs`` through ``module`` in eval mode and returns what ``layer`` output, flattened
    ``(N, D)`` float32, with the module's own output ``(N, ...)`` on the CPU.

    The module's train/eval modes are restored afterwards and no gradient is taken; dropout is off
    and batch norm only reads its statistics, so the live module is unchanged and training draws
    no random numbers for it.

    Raises:
        ValueError: ``layer`` names no submodule, or it does not run once per forward pass.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> features, outputs = forward_layer(net, "0", torch.zeros(5, 4))
        >>> features.shape, tuple(outputs.shape), net.training
        ((5, 3), (5, 2), True)
    """
    target = find_layer(module, layer)
    modes = {submodule: submodule.training for submodule in module.modules()}
    captured: list[torch.Tensor] = []
    device = torch.device(device)
    if chunk is None:
        chunk = FORWARD_CHUNK if device.type == "cpu" else FORWARD_CHUNK_ACCELERATOR
    # Results stay on the device until the end: one copy back instead of one per chunk.
    handle = target.register_forward_hook(
        lambda _module, _inputs, output: captured.append(output.detach().flatten(1).float()))
    outputs = []
    batches = inputs.to(device, non_blocking=True).split(chunk)
    params = _channels_last_params(module) if device.type == "cpu" and inputs.dim() == 4 else None
    try:
        module.eval()
        for batch in batches:
            if params is None:
                output = module(batch)
            else:  # the same weights in channels_last, for this call only: the module is not touched
                batch = batch.contiguous(memory_format=torch.channels_last)
                output = torch.func.functional_call(module, params, (batch,))
            outputs.append(output.detach().float() if isinstance(output, torch.Tensor) else torch.empty(0))
    finally:
        handle.remove()
        for submodule, training in modes.items():
            submodule.training = training
    if len(captured) != len(outputs):
        raise ValueError(f"Expected `layer` {layer!r} to run once per forward pass, but it ran "
                         f"{len(captured)} times in {len(outputs)}; choose a layer of the forward path.")
    return torch.cat(captured).cpu().numpy(), torch.cat([output.cpu() for output in outputs])


def _channels_last_params(module: nn.Module) -> dict[str, torch.Tensor] | None:
    """``module``'s parameters with every 4-D (convolution) weight copied to channels_last, or ``None``
    when it has none. oneDNN's convolutions run about a quarter faster on a CPU in that layout
    (``bench/bench_embeddings.py --part capture``); training keeps its own layout, since the copies
    are used for the capture's forward pass only (``torch.func.functional_call``)."""
    params = dict(module.named_parameters())
    if not any(param.dim() == 4 for param in params.values()):
        return None
    return {name: param.detach().contiguous(memory_format=torch.channels_last) if param.dim() == 4 else param.detach()
            for name, param in params.items()}


def find_layer(module: nn.Module, layer: str) -> nn.Module:
    """``module``'s submodule named ``layer`` (dotted names reach nested ones), looked up in
    ``module.model`` too when ``module`` has one (a LightningModule wrapping its network, as
    ``LeNetClassifier`` does: ``"fc2"`` is ``model.fc2``).

    Raises:
        ValueError: There is none; the message lists the names there are.

    Example:
        >>> find_layer(nn.Sequential(nn.Linear(4, 3)), "0")
        Linear(in_features=4, out_features=3, bias=True)
    """
    network = module.model if isinstance(getattr(module, "model", None), nn.Module) else module
    for root in dict.fromkeys((module, network)):
        try:
            return root.get_submodule(layer)
        except AttributeError:
            pass
    names = ", ".join(name for name, _ in network.named_modules() if name)
    raise ValueError(f"Expected `layer` to name a submodule of the model, but got {layer!r}; "
                     f"choose one of: {names}.")


def probe_metadata(probe: ProbeSet, outputs: torch.Tensor) -> tuple[dict[str, list[str]], float | None]:
    """The projector's metadata columns for one capture, and the probe accuracy.

    ``label`` and ``index`` always; ``predicted``, ``correct`` and ``confidence`` (the softmax's
    largest probability) only when ``outputs`` holds one logit per class, ``(N, C)``. The accuracy
    is ``None`` otherwise.

    Example:
        >>> probe = ProbeSet(torch.zeros(2, 3), np.array([0, 1]), ("cat", "dog"), np.array([4, 9]), 10)
        >>> columns, accuracy = probe_metadata(probe, torch.tensor([[2.0, 0.0], [3.0, 0.0]]))
        >>> columns["predicted"], columns["correct"], accuracy
        (['cat', 'cat'], ['yes', 'no'], 0.5)
    """
    names = probe.class_names
    columns = {"label": [names[i] for i in probe.labels]}
    accuracy = None
    if outputs.ndim == 2 and outputs.shape == (len(probe.labels), len(names)):
        probabilities = torch.softmax(outputs.float(), dim=1).numpy()  # (N, C)
        predicted = probabilities.argmax(axis=1)
        correct = predicted == probe.labels
        columns["predicted"] = [names[i] for i in predicted]
        columns["correct"] = ["yes" if ok else "no" for ok in correct]
        columns["confidence"] = [f"{p:.3f}" for p in probabilities.max(axis=1)]
        accuracy = float(correct.mean())
    columns["index"] = [str(i) for i in probe.index]
    return columns, accuracy


def sprite_images(inputs: torch.Tensor) -> np.ndarray | None:
    """The probe inputs as ``uint8`` thumbnails for a sprite, or ``None`` when they are not images.

    Images are ``(N, H, W)`` or ``(N, C, H, W)``: one channel gives grey ``(N, H, W)``, three or four
    give RGB ``(N, H, W, 3)`` (alpha dropped), other counts their channel mean in grey. Floats are
    stretched from their own range to [0, 255]. Anything else (tabular rows, sequences) gets no sprite.

    Example:
        >>> sprite_images(torch.rand(2, 3, 8, 8)).shape, sprite_images(torch.rand(2, 5))
        ((2, 8, 8, 3), None)
    """
    if inputs.ndim == 4 and inputs.shape[1] in (3, 4):
        images = inputs[:, :3].permute(0, 2, 3, 1)  # (N, H, W, 3)
    elif inputs.ndim == 4:
        images = inputs[:, 0] if inputs.shape[1] == 1 else inputs.float().mean(dim=1)
    elif inputs.ndim == 3 and min(inputs.shape[1:]) >= 4:
        images = inputs
    else:
        return None
    if images.dtype == torch.uint8:
        return np.ascontiguousarray(images.numpy())
    values = images.detach().float()
    finite = values[torch.isfinite(values)]
    low, high = (finite.min().item(), finite.max().item()) if finite.numel() else (0.0, 1.0)
    scaled = (values - low).mul_(255.0 / max(high - low, 1e-12)).nan_to_num_(0.0).clamp_(0, 255).round_()
    return np.ascontiguousarray(scaled.to(torch.uint8).numpy())


def class_vectors(module: nn.Module, layer: str, num_classes: int) -> np.ndarray | None:
    """``layer``'s weight ``(C, D)`` when it is a linear layer with one row per class, else ``None``.

    Example:
        >>> class_vectors(nn.Sequential(nn.Linear(4, 3)), "0", num_classes=3).shape
        (3, 4)
    """
    try:
        linear = find_layer(module, layer)
    except ValueError:
        return None
    if not isinstance(linear, nn.Linear) or linear.out_features != num_classes:
        return None
    return linear.weight.detach().float().cpu().numpy()
