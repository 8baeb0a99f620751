"""What the callback reads from a Trainer and writes through it: the probe split's dataset, the
run folder, the console, and TensorBoard values through its loggers."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

from lenet_lightning.preflight import absolute
from lenet_lightning.recorder import image_summary


def run_dir(trainer: pl.Trainer) -> Path:
    """The logger's run folder, made absolute once, here: loggers and ``default_root_dir`` may be
    relative to the working folder (TensorBoard's default ``save_dir`` is ``.``), and every path
    built from it must mean the same folder. Without a logger, a new ``embeddings/version_N`` so
    that reruns in the same ``default_root_dir`` never overwrite each other."""
    log_dir = trainer.log_dir  # broadcasts: every rank must call it
    if trainer.logger is not None:
        return Path(absolute(log_dir))
    root = Path(absolute(trainer.default_root_dir)) / "embeddings"
    version = 0
    if trainer.is_global_zero:
        while (root / f"version_{version}").exists():
            version += 1
    return root / f"version_{trainer.strategy.broadcast(version)}"


class LoggersWriter:
    """The series' TensorBoard values through the trainer's loggers: scalars to each, images (as
    encoded, never encoded again) to each TensorBoard logger's own writer."""

    def __init__(self, trainer: pl.Trainer) -> None:
        self.trainer = trainer

    def add_scalars(self, values: Mapping[str, float], step: int) -> None:
        for logger in self.trainer.loggers:
            logger.log_metrics(dict(values), step=step)

    def add_image(self, tag: str, encoded: bytes, step: int) -> None:
        for logger in self.trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment._get_file_writer().add_summary(image_summary(tag, encoded), step)


def split_dataset(trainer: pl.Trainer, split: str) -> Any:
    """The dataset of the ``split`` dataloader the trainer was given (the first one, when there are
    several), from the datamodule or the dataloaders passed to ``fit``/``validate``/``test``; ``None``
    when there is none. Read before the loops load them: the probe set is drawn in ``setup``."""
    loops: Any = {"train": [trainer.fit_loop], "val": [trainer.fit_loop.epoch_loop.val_loop, trainer.validate_loop],
                  "test": [trainer.test_loop]}[split]
    for loop in loops:
        source = getattr(loop, "_data_source", None)  # Lightning's own record of what it was given
        if source is None or source.instance is None or not source.is_defined():
            continue
        try:
            loaders = source.dataloader()
        except NotImplementedError:  # LightningDataModule's default: the datamodule has no such split
            continue
        while isinstance(loaders, (list, tuple, dict)) and loaders:
            loaders = next(iter(loaders.values())) if isinstance(loaders, dict) else loaders[0]
        dataset = getattr(loaders, "dataset", None)
        if dataset is not None:
            return dataset
    return None


def tell(trainer: pl.Trainer, message: str) -> None:
    """Prints ``message`` on its own line: through the progress bar while one is shown (a plain
    print would be glued to the end of the bar), else to Lightning's log."""
    bar = trainer.progress_bar_callback
    if bar is not None and trainer.is_global_zero:
        bar.print(message)
    else:
        rank_zero_info(message)
