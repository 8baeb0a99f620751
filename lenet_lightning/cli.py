"""LightningCLI wiring: the model, the data, and the always-present ``embeddings`` callback group.

``python cli.py`` and the ``lenet-lightning`` console script both call :func:`cli_main`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from typing_extensions import override

from lenet_lightning.data import LeNetDataModule
from lenet_lightning.embeddings import EmbeddingProjector
from lenet_lightning.model import LeNetClassifier

TRAINER_DEFAULTS = {
    # TensorBoard under `default_root_dir` (its `save_dir` is linked to it); naming the logger here
    # is what makes `--trainer.logger.version N` work, e.g. to resume a run in place.
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": ".", "default_hp_metric": False},
    },
}


class SaveConfigBesideEarlier(SaveConfigCallback):
    """Saves the run's config as ``config.yaml``, or ``config_1.yaml``, ... when the log directory
    already holds one (a resumed run, or a rerun with ``--trainer.logger false``): nothing earlier is
    overwritten and nothing crashes."""

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self.already_saved and self.save_to_log_dir:
            log_dir = trainer.log_dir or trainer.default_root_dir  # broadcasts: call on every rank
            filename = self.config_filename
            if trainer.is_global_zero:
                stem, suffix = os.path.splitext(self.config_filename)
                count = 0
                while os.path.exists(os.path.join(log_dir, filename)):
                    count += 1
                    filename = f"{stem}_{count}{suffix}"
            self.config_filename = trainer.strategy.broadcast(filename)
        super().setup(trainer, pl_module, stage)


class LeNetCLI(LightningCLI):
    """LightningCLI with the projector callback as its own ``embeddings`` group and the data's class
    count linked into the model.

    ``EmbeddingProjector`` entries in ``trainer.callbacks`` (YAML ``class_path``/``init_args``, or
    ``--trainer.callbacks+=``) work as for any callback. The ``embeddings`` group's instance joins
    them unless it is disabled or one of them captures the same layer; disabled entries are left out.
    """

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(EmbeddingProjector, "embeddings")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("trainer.default_root_dir", "trainer.logger.init_args.save_dir",
                              compute_fn=lambda root: root or ".")

    @override
    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        listed = config.get("callbacks") or []
        config["callbacks"] = [c for c in (listed if isinstance(listed, list) else [listed]) if _active(c)]
        layers = [c.layer for c in config["callbacks"] if isinstance(c, EmbeddingProjector)]
        if len(layers) != len(set(layers)):
            raise ValueError(f"Expected each EmbeddingProjector in `trainer.callbacks` to capture its own layer, "
                             f"but got layers {layers}; give each a different `layer`.")
        groups = [self._get(self.config_init, key) for key in self._parser(self.subcommand).callback_keys]
        # The group's projector steps aside for a listed one of the same layer: one state_key each.
        extra = [c for c in groups if _active(c) and not (isinstance(c, EmbeddingProjector) and c.layer in layers)]
        return self._instantiate_trainer(config, extra)

    @override
    def instantiate_classes(self) -> None:
        # Constructors validate their arguments; their messages are for the user, not a traceback.
        # (FileNotFoundError, raised at construction or later, is reported by `cli_main`.)
        try:
            super().instantiate_classes()
        except ValueError as err:
            parser = self._parser(self.subcommand)
            parser.exit(2, f"error: {err}\n")


def _active(callback: object) -> bool:
    """Everything but a disabled EmbeddingProjector, which would do nothing but claim its state_key."""
    return not (isinstance(callback, EmbeddingProjector) and not callback.enabled)


def cli_main(args: list[str] | None = None) -> LeNetCLI:
    """Runs the CLI; ``args`` replaces ``sys.argv[1:]`` (for tests).

    A missing file (data that could not be found or downloaded, a wrong ``--ckpt_path``) ends the
    command with one ``error:`` line and exit status 2, not a traceback.

    Example:
        >>> cli_main(["fit", "--config", "configs/quickstart.yaml"])  # doctest: +SKIP
    """
    try:
        return LeNetCLI(
            LeNetClassifier,
            LeNetDataModule,
            seed_everything_default=42,
            trainer_defaults=TRAINER_DEFAULTS,
            save_config_callback=SaveConfigBesideEarlier,
            args=args,
        )
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def main() -> None:
    """Entry point of the ``lenet-lightning`` console script."""
    cli_main()
