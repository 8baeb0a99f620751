"""LightningCLI wiring: the model, the data, and the always-present ``embeddings`` callback group.

``python cli.py`` and the ``lenet-lightning`` console script both call :func:`cli_main`. Paths are
made absolute where they enter (here, at parse time), the inputs a run depends on are checked before
anything is written, and a failed start leaves no run folder behind.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

from lenet_lightning import preflight
from lenet_lightning.capture import check_probe_size, find_layer
from lenet_lightning.data import LeNetDataModule
from lenet_lightning.embeddings import EmbeddingProjector
from lenet_lightning.logger import ClaimingTensorBoardLogger
from lenet_lightning.model import LeNetClassifier

TRAINER_DEFAULTS = {
    # TensorBoard under `default_root_dir` (its `save_dir` is linked to it); naming the logger here
    # is what makes `--trainer.logger.version N` work, e.g. to resume a run in place. It claims its
    # `version_N` folder, so fits started at once in one root never share one.
    "logger": {
        "class_path": "lenet_lightning.logger.ClaimingTensorBoardLogger",
        "init_args": {"save_dir": ".", "default_hp_metric": False},
    },
    # Checkpoints replaced atomically in their own folder. A `--trainer.plugins` list replaces this
    # one; `--trainer.plugins+=...` adds to it.
    "plugins": [{"class_path": "lenet_lightning.checkpoint_io.AtomicCheckpointIO"}],
}
# Exit statuses a shell gives a process ended by SIGINT (Ctrl+C) and SIGTERM (schedulers, `kill`):
# a job script must be able to tell a stopped run from a finished one.
EXIT_SIGINT, EXIT_SIGTERM = 130, 143


def shipped_configs() -> dict[str, Path]:
    """The configs installed with the package, by name: ``{"quickstart": .../quickstart.yaml, ...}``.

    Example:
        >>> sorted(shipped_configs())
        ['fashion_mnist', 'mnist', 'mnist_full', 'quickstart']
    """
    folder = Path(str(resources.files("lenet_lightning") / "configs"))
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))}


def expand_config_names(args: list[str]) -> list[str]:
    """Replaces ``--config NAME`` by the shipped config's path when ``NAME`` (with or without
    ``.yaml``) is no file here but names a shipped config, so ``--config quickstart`` works from any
    folder; a path to any YAML file is left as it is.

    Example:
        >>> expand_config_names(["fit", "--config", "quickstart"])[2].endswith("configs/quickstart.yaml")
        True
        >>> expand_config_names(["fit", "--config=my.yaml"])
        ['fit', '--config=my.yaml']
    """
    configs = shipped_configs()

    def expand(value: str) -> str:
        name = value[: -len(".yaml")] if value.endswith(".yaml") else value
        if os.sep in value or os.path.exists(value) or name not in configs:
            return value
        return str(configs[name])

    expanded, after_config = [], False
    for arg in args:
        if after_config:
            arg = expand(arg)
        elif arg.startswith("--config="):
            arg = "--config=" + expand(arg[len("--config="):])
        after_config = arg in ("--config", "-c")
        expanded.append(arg)
    return expanded


# reStructuredText in docstrings, which `--help` shows as plain text: ``x``, :class:`~a.b.X`, :paramref:`x`.
_RST_LITERAL = re.compile(r"``(.+?)``")
_RST_ROLE = re.compile(r":[a-z]+:`~?(?:[\w.]*\.)?([^`.]+)`")


def plain_text(text: str) -> str:
    """``text`` without reStructuredText markup, for a terminal.

    Example:
        >>> plain_text("Logs ``stage/loss`` with :class:`~lightning.pytorch.loggers.TensorBoardLogger`.")
        'Logs stage/loss with TensorBoardLogger.'
    """
    return _RST_ROLE.sub(r"\1", _RST_LITERAL.sub(r"\1", text))


class PlainTextHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help, with the docstrings' reStructuredText markup dropped."""

    @override
    def start_section(self, heading: str | None) -> None:
        super().start_section(plain_text(heading) if heading else heading)

    @override
    def _expand_help(self, action: Any) -> str:
        return plain_text(super()._expand_help(action))


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
    """LightningCLI with the projector callback as its own ``embeddings`` group, the data's class
    count linked into the model, paths made absolute at parse time, and each run's inputs checked
    before it writes anything.

    ``EmbeddingProjector`` entries in ``trainer.callbacks`` (YAML ``class_path``/``init_args``, or
    ``--trainer.callbacks+=``) work as for any callback. The ``embeddings`` group's instance joins
    them unless it is disabled or one of them captures the same layer; disabled entries are left out.
    """

    @override
    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        configs = shipped_configs()
        kwargs.setdefault("formatter_class", PlainTextHelpFormatter)
        kwargs.setdefault("epilog", (
            f"Shipped configs, usable by name from any folder (--config quickstart): {', '.join(configs)}; "
            f"they are in {next(iter(configs.values())).parent}. "
            "And `report RUN_DIR` (re)builds a run folder's plots, GIF and report.html from the folder alone: "
            "`report --help`."))
        parser = super().init_parser(**kwargs)
        parser._option_string_actions["--config"].help = (
            "A YAML config file, or the name of a shipped config: " + ", ".join(configs) + ".")
        return parser

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(EmbeddingProjector, "embeddings")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("trainer.default_root_dir", "trainer.logger.init_args.save_dir",
                              compute_fn=lambda root: preflight.absolute(root or "."))

    @override
    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # Every path is made absolute once, here, as it is parsed: the run then means the same
        # folders whatever the working folder, and every path built from them (sprites, plots,
        # checkpoints) agrees. The checkpoint is checked before Lightning reads its hyperparameters.
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        trainer = config["trainer"]
        trainer["default_root_dir"] = preflight.absolute(trainer["default_root_dir"] or ".")
        if preflight.is_local(trainer["default_root_dir"]):
            self._exit_on_error(preflight.check_writable_folder, trainer["default_root_dir"],
                                "--trainer.default_root_dir")
        config["data"]["data_dir"] = preflight.absolute(config["data"]["data_dir"])
        if config["embeddings"]["dirpath"]:
            config["embeddings"]["dirpath"] = preflight.absolute(config["embeddings"]["dirpath"])
        ckpt_path = config.get("ckpt_path")
        if ckpt_path and ckpt_path not in preflight.LIGHTNING_CKPT_NAMES and preflight.is_local(ckpt_path):
            config["ckpt_path"] = preflight.absolute(ckpt_path)
            self._exit_on_error(preflight.check_checkpoint, config["ckpt_path"])

    @override
    def instantiate_classes(self) -> None:
        # Constructors validate their arguments; their messages are for the user, not a traceback.
        self._exit_on_error(super().instantiate_classes)

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
        # The model exists now and the Trainer does not yet: a bad layer fails here, in one line,
        # before the Trainer prints or writes anything.
        for callback in [*config["callbacks"], *extra]:
            if isinstance(callback, EmbeddingProjector):
                find_layer(self.model, callback.layer)
                if callback.dataset is None:
                    check_probe_size(callback.num_samples, len(self.datamodule.class_names))
        return self._instantiate_trainer(config, extra)

    def _exit_on_error(self, check: Any, *args: Any) -> None:
        """Runs ``check(*args)``; a ``ValueError`` or ``TypeError`` ends the command with its message
        in one ``error:`` line and exit status 2."""
        try:
            check(*args)
        except (ValueError, TypeError) as err:
            self.parser.exit(2, f"error: {err}\n")

    # The subcommands, run through one guard (LightningCLI calls these in place of the Trainer's).
    def fit(self, **kwargs: Any) -> None:
        self._run("fit", kwargs)

    def validate(self, **kwargs: Any) -> None:
        self._run("validate", kwargs)

    def test(self, **kwargs: Any) -> None:
        self._run("test", kwargs)

    def predict(self, **kwargs: Any) -> None:
        self._run("predict", kwargs)

    def _run(self, subcommand: str, kwargs: dict[str, Any]) -> None:
        """Runs the Trainer's ``subcommand``. A start that fails with an error leaves no run folder
        behind (it would hold nothing but the config and an empty events file); a run stopped by a
        signal keeps its folder and exits with the status a shell expects (130 for Ctrl+C, 143 for
        SIGTERM), not 0 or 1."""
        trainer = self.trainer
        log_dir = trainer.log_dir  # every rank; the ClaimingTensorBoardLogger makes the folder on rank 0
        # Only a folder this run made is ever removed: never one given to resume in, nor another logger's.
        new_run_dir = log_dir if isinstance(trainer.logger, ClaimingTensorBoardLogger) and trainer.logger.claimed \
            else None
        try:
            getattr(trainer, subcommand)(**kwargs)
        except SIGTERMException:
            raise SystemExit(EXIT_SIGTERM) from None
        except SystemExit:
            if trainer.interrupted:  # Lightning's exit(1) after Ctrl+C
                raise SystemExit(EXIT_SIGINT) from None
            raise
        except Exception:
            if new_run_dir and trainer.is_global_zero and _failed_at_start(trainer, new_run_dir):
                shutil.rmtree(new_run_dir, ignore_errors=True)
            raise
        if trainer.received_sigterm:
            raise SystemExit(EXIT_SIGTERM)


def _failed_at_start(trainer: Trainer, run_dir: str) -> bool:
    """Whether a run that failed had done nothing worth keeping: no optimizer step and no checkpoint."""
    return trainer.global_step == 0 and not any(Path(run_dir).rglob("*.ckpt"))


class _DropUpstreamTips(logging.Filter):
    """Lightning advertises other logging services at start-up; they say nothing about this run."""

    @override
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def _quiet_upstream_noise() -> None:
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropUpstreamTips())
    # Lightning 2.6 on torch >= 2.10 calls a deprecated pytree API: upstream's to fix, not the user's.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)


def _active(callback: object) -> bool:
    """Everything but a disabled EmbeddingProjector, which would do nothing but claim its state_key."""
    return not (isinstance(callback, EmbeddingProjector) and not callback.enabled)


def cli_main(args: list[str] | None = None) -> LeNetCLI:
    """Runs the CLI; ``args`` replaces ``sys.argv[1:]`` (for tests).

    Bad input ends the command with one ``error:`` line naming the value and the fix, not a
    traceback: exit status 2 for a value, a missing file or a checkpoint that cannot be read, 1 for
    a file system error during the run (a full disk, a folder that cannot be written), with the
    files written before it intact.

    Example:
        >>> cli_main(["fit", "--config", "quickstart"])  # doctest: +SKIP
    """
    given = sys.argv[1:] if args is None else list(args)
    if given[:1] == ["report"]:  # not a Trainer subcommand: it reads a run folder, nothing else
        from lenet_lightning import report

        raise SystemExit(report.main(given[1:]))
    _quiet_upstream_noise()
    if args is None:
        # In place, so that DDP's launcher, which re-runs this command line, gets the same paths.
        sys.argv[1:] = expand_config_names(sys.argv[1:])
    else:
        args = expand_config_names(list(args))
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
    except OSError as err:
        print(f"error: {_describe_os_error(err)}", file=sys.stderr)
        raise SystemExit(1) from None


def _describe_os_error(err: OSError) -> str:
    """One line for a file system error: what failed, on which path, and what to do."""
    where = f" on {err.filename!r}" if err.filename else ""
    return f"{err.strerror or err}{where}; free some space or choose a folder you can write to " \
           "(--trainer.default_root_dir)."


def main() -> None:
    """Entry point of the ``lenet-lightning`` console script."""
    cli_main()
