"""The notebook's LeNet (a plain ``nn.Module``) and the LightningModule that trains it.

The network is the TensorFlow tutorial's, exactly as the seed notebook built it: two 5x5 'same'
convolutions with ReLU and 2x2 max-pooling, ``fc1`` 3136->1024 with ReLU, dropout, and ``fc2``
1024->10 whose output (the pre-softmax logits) is the representation the projector shows.
"""

from __future__ import annotations

import math
from typing import Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from lenet_lightning.data import InMemoryImages

Init = Literal["pytorch", "notebook"]
LrSchedule = Literal["constant", "onecycle", "cosine"]


class LeNet(nn.Module):
    """The seed notebook's LeNet: 3,274,634 parameters.

    Args:
        num_classes: Width of ``fc2``, the logits layer.
        dropout: Probability of zeroing an ``fc1`` unit in training (the notebook's
            ``keep_prob`` 0.5 is ``dropout=0.5``); evaluation never drops.
        init: ``"pytorch"`` keeps PyTorch's default initialisation; ``"notebook"`` uses the
            notebook's truncated normal (std 0.1) weights and 0.1 biases.

    Example:
        >>> LeNet()(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10, dropout: float = 0.5, init: Init = "pytorch") -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"Expected `num_classes` to be at least 2, but got {num_classes}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"Expected `dropout` to be in [0, 1), but got {dropout}.")
        if init not in ("pytorch", "notebook"):
            raise ValueError(f"Expected `init` to be 'pytorch' or 'notebook', but got {init!r}.")
        self.conv1 = nn.Conv2d(1, 32, kernel_size=5, padding=2)  # 'same'
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5, padding=2)
        self.fc1 = nn.Linear(7 * 7 * 64, 1024)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(1024, num_classes)
        if init == "notebook":
            self._notebook_init()

    def _notebook_init(self) -> None:
        # tf.truncated_normal(stddev=0.1) redraws values beyond two standard deviations.
        for layer in (self.conv1, self.conv2, self.fc1, self.fc2):
            nn.init.trunc_normal_(layer.weight, std=0.1, a=-0.2, b=0.2)
            nn.init.constant_(layer.bias, 0.1)

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (N, 32, 14, 14)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (N, 64, 7, 7)
        x = F.relu(self.fc1(x.flatten(1)))  # (N, 1024)
        return self.fc2(self.dropout(x))  # (N, num_classes) logits


def normalize_images(images: torch.Tensor, mean: torch.Tensor | float, std: torch.Tensor | float) -> torch.Tensor:
    """Pixels to the standardised floats the network trains on: ``uint8`` images are scaled from
    [0, 255] to [0, 1] first, float images are taken to be in [0, 1] already.

    Example:
        >>> normalize_images(torch.tensor([0, 255], dtype=torch.uint8), mean=0.5, std=0.5)
        tensor([-1.,  1.])
    """
    if images.is_floating_point():
        return (images - mean) / std
    return images.float().mul_(1.0 / 255.0).sub_(mean).div_(std)


class LeNetClassifier(pl.LightningModule):
    """Trains :class:`LeNet` with cross-entropy on logits and logs ``stage/loss``, ``stage/acc``.

    It takes images as the data holds them (``uint8`` in [0, 255], or floats in [0, 1]) and
    standardises them itself with the training split's pixel mean and standard deviation. These
    live in the model as buffers (``input_mean``, ``input_std``), copied from the datamodule when a
    fit starts (see :class:`lenet_lightning.data.InMemoryImages`), so a checkpoint predicts
    correctly on its own: ``LeNetClassifier.load_from_checkpoint(path)`` needs no datamodule.

    The notebook's ``-sum(y * log(softmax(h)))`` is ``-inf``-prone once a probability rounds to 0;
    ``F.cross_entropy`` on logits is the numerically safe form of the same loss.

    Args:
        num_classes: Number of classes (``fc2`` width).
        lr: Adam learning rate (the notebook's 1e-4 by default; fused Adam on CPU and CUDA). Ignored when the CLI's
            ``--optimizer`` is given.
        weight_decay: Decoupled weight decay (AdamW) when above 0, else plain Adam.
        lr_schedule: ``"constant"`` (the notebook), ``"onecycle"`` (warm-up then cosine decay to
            the end of training, peaking at ``lr``) or ``"cosine"`` (decay from ``lr``), both
            stepped per batch over ``trainer.estimated_stepping_batches``.
        label_smoothing: Cross-entropy label smoothing.
        dropout: Dropout probability before ``fc2``.
        init: ``"pytorch"`` or ``"notebook"`` initialisation, see :class:`LeNet`.

    Example:
        >>> system = LeNetClassifier(lr=1e-3)
        >>> system.predict_step((torch.zeros(3, 1, 28, 28, dtype=torch.uint8), torch.zeros(3)), 0)["classes"].shape
        torch.Size([3])
    """

    def __init__(
        self,
        num_classes: int = 10,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        lr_schedule: LrSchedule = "constant",
        label_smoothing: float = 0.0,
        dropout: float = 0.5,
        init: Init = "pytorch",
    ) -> None:
        super().__init__()
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"Expected `lr` to be a positive number, but got {lr}.")
        if weight_decay < 0:
            raise ValueError(f"Expected `weight_decay` to be >= 0, but got {weight_decay}.")
        if lr_schedule not in ("constant", "onecycle", "cosine"):
            raise ValueError(
                f"Expected `lr_schedule` to be 'constant', 'onecycle' or 'cosine', but got {lr_schedule!r}."
            )
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"Expected `label_smoothing` to be in [0, 1), but got {label_smoothing}.")
        self.save_hyperparameters()
        self.model = LeNet(num_classes=num_classes, dropout=dropout, init=init)
        # Saved with the weights: a checkpoint standardises its inputs as its training did.
        self.register_buffer("input_mean", torch.tensor(0.0))
        self.register_buffer("input_std", torch.tensor(1.0))
        # One metric object per stage, so their states never mix. Argument validation inspects the
        # tensors' values, a host sync on every step on a GPU; our loaders only yield valid labels.
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.test_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)

    @override
    def setup(self, stage: str) -> None:
        # A resumed fit then loads the checkpoint's statistics over these (the same numbers); a
        # validate, test or predict keeps the model's own, whatever data it is given.
        datamodule = self.trainer.datamodule
        if stage == "fit" and isinstance(datamodule, InMemoryImages):
            mean, std = datamodule.pixel_stats()
            self.input_mean.fill_(mean)
            self.input_std.fill_(std)

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(normalize_images(x, self.input_mean, self.input_std))

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)  # (N, num_classes)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        # update(), not forward(): no per-batch accuracy is logged, so none is computed.
        getattr(self, f"{stage}_acc").update(logits, labels)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True,
                 batch_size=labels.shape[0], sync_dist=not on_step)
        return loss

    def _log_accuracy(self, stage: str) -> None:
        """Logs the epoch's accuracy once, at its end: each ``self.log`` call costs about half a
        millisecond, a visible share of a LeNet step (bench/bench_framework.py)."""
        accuracy = getattr(self, f"{stage}_acc")
        self.log(f"{stage}/acc", accuracy.compute(), prog_bar=True)  # compute() syncs across processes
        accuracy.reset()

    @override
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    @override
    def on_train_epoch_end(self) -> None:
        self._log_accuracy("train")

    @override
    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    @override
    def on_validation_epoch_end(self) -> None:
        self._log_accuracy("val")

    @override
    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    @override
    def on_test_epoch_end(self) -> None:
        self._log_accuracy("test")

    @override
    def predict_step(self, batch: tuple[torch.Tensor, ...] | torch.Tensor, batch_idx: int) -> dict[str, torch.Tensor]:
        """Returns ``{"classes": (N,), "probabilities": (N, num_classes)}`` for a batch of images
        (``uint8``, or floats in [0, 1]), standardised by the model itself."""
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        probabilities = self(images).softmax(dim=1)
        return {"classes": probabilities.argmax(dim=1), "probabilities": probabilities}

    @override
    def configure_optimizers(self):
        hp = self.hparams
        # The fused kernel updates all parameters in one pass: 1.6 ms a step on 2 CPU cores against
        # 13 ms for the default per-tensor loop (a quarter of a batch-50 step). CPU and CUDA have it.
        fused = self.device.type in ("cpu", "cuda")
        if hp.weight_decay > 0:
            optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, fused=fused)
        else:
            optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr, fused=fused)
        if hp.lr_schedule == "constant":
            return optimizer
        total_steps = int(self.trainer.estimated_stepping_batches)
        if hp.lr_schedule == "onecycle":
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=hp.lr, total_steps=total_steps)
        else:
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
