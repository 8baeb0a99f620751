"""The ``EmbeddingProjector`` callback: watch what a layer learns, capture by capture.

It decides *when* to capture, *what*, and *where* it goes. The work is done elsewhere:
:mod:`lenet_lightning.capture` (probe set, forward pass, metadata, sprite images),
:mod:`lenet_lightning.analysis` (the background t-SNE queue), :mod:`lenet_lightning.projector`
(TensorBoard Projector files), :mod:`lenet_lightning.tsne` and :mod:`lenet_lightning.plots`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import Dataset
from typing_extensions import override

from lenet_lightning import capture, plots, projector, scores, tsne
from lenet_lightning.analysis import Analysis, BackgroundAnalysis, Capture, CaptureKey
from lenet_lightning.data import InMemoryImages
from lenet_lightning.preflight import absolute
from lenet_lightning.series import FEATURE_SCORES, Series, write_scores_csv
from lenet_lightning.step_order import Released, StepOrder

Schedule = Literal["fixed", "doubling"]
ProbeSplit = Literal["train", "val", "test"]
DEFAULT_LAYER = "fc2"


class EmbeddingProjector(Callback):
    """Sends a layer's output on a fixed probe set to TensorBoard's Projector as training goes.

    Each capture also gets a t-SNE plot and separation scores, and the run an evolution image; in
    TensorBoard, each capture's entry opens labelled by class, with a bookmark that shows its t-SNE
    map, and the plots are in the Images tab.

    Works with any LightningModule and any map-style dataset of ``(input, target)`` pairs. The probe
    set is ``dataset`` when given, else the ``split``'s data: from the datamodule's tensors when it
    is an :class:`~lenet_lightning.data.InMemoryImages` (``LeNetDataModule``), else from the
    dataset of the trainer's (or the datamodule's) ``split`` dataloader. Image inputs get sprite
    thumbnails; ``predicted``, ``correct`` and ``confidence`` appear when the model returns one
    logit per class.

    A capture runs on global rank 0 only, in eval mode and without gradients, at step 0 (before any
    update), at every scheduled step, and at the end of fit; ``validate`` and ``test`` capture once.
    It draws no random numbers, so training is unchanged by it. t-SNE, scores and plots run in a
    background thread at the lowest CPU priority (:class:`~lenet_lightning.analysis.BackgroundAnalysis`),
    newest capture first, each map starting from the layout of the capture nearest in step; they get
    every core when training pauses for validation and at the end. When captures come faster than
    their maps, the older ones waiting get their silhouette at once and their maps at that pause (you
    are told once); every capture keeps its projector entry, row and panel of the evolution image. A
    checkpoint holds the captures not yet analysed, and a resume analyses them. A capture whose files
    cannot be written is skipped with a warning: the run goes on.

    Several instances coexist when they capture different layers (``state_key`` holds the layer).
    The ``fc2`` series writes its plots to ``<log_dir>/embeddings`` and logs ``embeddings/*``
    scalars; another layer's, to ``embeddings_<layer>``.

    Args:
        enabled: Turn the callback off without removing it (``--embeddings.enabled false``).
        layer: Name of the submodule whose output is captured (``fc2``: LeNet's 10-d logits), in the
            LightningModule, or in its ``model`` when it has one.
        every_n_train_steps: Capture every this many optimizer steps (0: only at start and end).
        schedule: ``"fixed"`` captures every ``every_n_train_steps``; ``"doubling"`` captures at
            n, 2n, 4n, 8n, ... steps: dense early, when the representation changes fastest.
        num_samples: Size of the probe set: stratified across classes, seeded, the same points in
            the same order at every capture and on every rank.
        split: The split the probe set is drawn from (``train``, ``val`` or ``test``).
        sprites: Show each image point as its thumbnail in the Projector.
        tsne: Run t-SNE, plots and 2-D scores for each capture.
        perplexity: t-SNE perplexity; lowered with a warning when the probe set is too small.
        class_vectors: Also send ``class_layer``'s weight rows (one vector per class) as their own
            entry, and plot their similarities at the end.
        class_layer: The linear layer with one row per class (skipped, with a note, otherwise).
        dirpath: Folder for plots and ``separation.csv``; default ``<log_dir>/embeddings`` (see
            above). Projector files always go in the log directory itself, where TensorBoard looks
            (with ``logger=False``: a new ``<default_root_dir>/embeddings/version_N`` for each run).
        seed: Seeds the probe set and t-SNE (0 to 2**32 - 1).
        dataset: A map-style dataset of ``(input, target)`` pairs to draw the probe set from,
            instead of ``split``'s data.
        plot_format: File format of the plots: ``"png"``, ``"svg"`` or ``"pdf"`` (for papers and slides).
        plot_dpi: Resolution of the plots, in dots per inch.

    Raises:
        ValueError: An argument is out of range (at construction), ``layer`` names no submodule of
            the model (at setup), or there is no data to draw the probe set from (at the first capture).

    Example:
        >>> callback = EmbeddingProjector(layer="fc1", every_n_train_steps=50)
        >>> callback.state_key
        "EmbeddingProjector{'layer': 'fc1'}"
    """

    def __init__(
        self,
        enabled: bool = True,
        layer: str = DEFAULT_LAYER,
        every_n_train_steps: int = 100,
        schedule: Schedule = "fixed",
        num_samples: int = 2000,
        split: ProbeSplit = "val",
        sprites: bool = True,
        tsne: bool = True,
        perplexity: float = 30.0,
        class_vectors: bool = True,
        class_layer: str = DEFAULT_LAYER,
        dirpath: str | None = None,
        seed: int = 0,
        dataset: Dataset | None = None,
        plot_format: plots.PlotFormat = "png",
        plot_dpi: int = 100,
    ) -> None:
        super().__init__()
        _check_int("every_n_train_steps", every_n_train_steps, minimum=0)
        _check_int("num_samples", num_samples, minimum=2)
        if schedule not in ("fixed", "doubling"):
            raise ValueError(f"Expected `schedule` to be 'fixed' or 'doubling', but got {schedule!r}.")
        if split not in ("train", "val", "test"):
            raise ValueError(f"Expected `split` to be 'train', 'val' or 'test', but got {split!r}.")
        for name, value in (("layer", layer), ("class_layer", class_layer)):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"Expected `{name}` to name a submodule such as 'fc2', but got {value!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise ValueError(f"Expected `seed` to be an integer in [0, 2**32), but got {seed!r}.")
        if isinstance(perplexity, bool) or not (isinstance(perplexity, (int, float)) and math.isfinite(perplexity)
                                                and perplexity > 0):
            raise ValueError(f"Expected `perplexity` to be a positive number, but got {perplexity!r}.")
        if dataset is not None and not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(f"Expected `dataset` to be a map-style dataset of (input, target) pairs, "
                            f"but got {type(dataset).__name__}.")
        self.enabled, self.layer, self.schedule = enabled, layer, schedule
        self.every_n_train_steps = every_n_train_steps
        self.num_samples, self.split, self.seed = num_samples, split, seed
        self.sprites, self.tsne, self.perplexity = sprites, tsne, float(perplexity)
        self.class_vectors, self.class_layer = class_vectors, class_layer
        self.dirpath, self.dataset = dirpath, dataset
        self.plot_format, self.plot_dpi = plots.check_plot_format(plot_format), plots.check_dpi(plot_dpi)
        # Names the plot folder and the scalars: `embeddings` for the default layer.
        self.name = "embeddings" if layer == DEFAULT_LAYER else f"embeddings_{projector.safe_tag(layer)}"
        self._series = Series()  # saved in checkpoints
        self._loaded: dict[str, Any] | None = None  # a checkpoint's state, until the probe set is known
        # Per run.
        self._probe: capture.ProbeSet | None = None
        self._perplexity = self.perplexity  # fitted to the probe set when it is drawn
        self._analysis: BackgroundAnalysis | None = None
        self._order = StepOrder()  # what is logged to TensorBoard, held until it comes in step order
        self._requeue: list[Capture] = []
        self._checkpoint_step: int | None = None  # validate/test: the step of the loaded checkpoint
        self._train_ended = False
        self._log_dir: Path | None = None
        self._sprite: tuple[str, tuple[int, int]] | None = None

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(layer=self.layer)

    # ------------------------------------------------------------------ setup
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self.enabled:
            return
        capture.find_layer(pl_module, self.layer)  # a wrong name fails now, on every rank
        self._log_dir = self._run_dir(trainer)
        if trainer.is_global_zero:  # before this run writes there: what a killed run left half-written
            other = [self.plot_dir, *(cb.dirpath for cb in trainer.checkpoint_callbacks if cb.dirpath)]
            projector.remove_leftovers(self._log_dir, other)
        self._probe, self._sprite = None, None  # the data may differ from an earlier run's
        self._order = StepOrder()

    @staticmethod
    def _run_dir(trainer: pl.Trainer) -> Path:
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

    @property
    def plot_dir(self) -> Path:
        """Where plots and ``separation.csv`` go."""
        if self._log_dir is None:
            raise RuntimeError("The embeddings callback has not been set up by a Trainer yet.")
        return self._log_dir / self.name if self.dirpath is None else Path(absolute(self.dirpath))

    def _ensure_probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> capture.ProbeSet:
        """The probe set, drawn at the run's first capture on every rank (no collectives), checked by
        one input through the model, then reconciled with a loaded checkpoint's series."""
        if self._probe is not None:
            return self._probe
        probe = self._draw_probe(trainer)
        capture.forward_layer(pl_module, self.layer, probe.inputs[:1], pl_module.device)  # in the forward path?
        self._probe = probe
        if self._loaded is not None:
            self._adopt(self._loaded, fitting=trainer.state.fn == "fit")
        if trainer.is_global_zero and self.tsne and self._analysis is None:
            self._perplexity = tsne.effective_perplexity(len(probe.labels), self.perplexity)
            # On a GPU the maps are made there (exact t-SNE); on a CPU by openTSNE.
            device = pl_module.device if pl_module.device.type != "cpu" else None
            self._analysis = BackgroundAnalysis(self._perplexity, self.seed, draw=self._draw_map,
                                                layouts=self._series.layouts, device=device)
            for pending in self._requeue:
                self._submit(trainer, pending)
        elif trainer.is_global_zero:  # no t-SNE now: what was queued gets its fc2-space score
            for pending in self._requeue:
                self._record(trainer, Analysis(pending, scores.separation_scores(pending.features, None, probe.labels)))
        self._requeue = []
        if trainer.is_global_zero and self.class_vectors and self._class_vectors(pl_module) is None:
            rank_zero_info(f"EmbeddingProjector: no class vectors: `class_layer` {self.class_layer!r} is not a "
                           f"linear layer with one row per class ({len(probe.class_names)}).")
        return probe

    def _draw_probe(self, trainer: pl.Trainer) -> capture.ProbeSet:
        datamodule = trainer.datamodule
        if self.dataset is None and isinstance(datamodule, InMemoryImages):  # the fast path: tensors in memory
            images, labels = datamodule.split_tensors(self.split)
            return capture.probe_from_tensors(images, labels, datamodule.class_names, self.num_samples, self.seed)
        dataset = self.dataset if self.dataset is not None else _split_dataset(trainer, self.split)
        if dataset is None:
            raise ValueError(
                f"Expected {self.split} data to draw the embeddings probe set from (`split={self.split!r}`), "
                "but the trainer has no such dataloader; pass `EmbeddingProjector(dataset=...)`, or choose "
                "another `split`.")
        return capture.probe_from_dataset(dataset, self.num_samples, self.seed)

    # ------------------------------------------------------------ when to capture
    def _due(self, step: int) -> bool:
        n = self.every_n_train_steps
        if n == 0 or step <= 0 or step % n:
            return False
        if self.schedule == "fixed":
            return True
        multiple = step // n
        return multiple & (multiple - 1) == 0  # a power of two

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Step 0 before any update. After a resume, the checkpoint's own step only if the earlier run
        # captured it in this run folder (its end-of-fit capture, which came after its last
        # checkpoint, so the state does not list it): the series keeps it, and a run resumed after
        # a kill gets the captures an uninterrupted run would have, no more.
        if not self.enabled:
            return
        step = trainer.global_step
        if step == 0 or self._due(step) or self._listed_in_run_dir((step, "fit")):
            self._capture(trainer, pl_module, "fit")

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self.enabled:
            return
        if self._due(trainer.global_step):
            self._capture(trainer, pl_module, "fit")
        if self._analysis is not None:
            self._record_all(trainer, self._analysis.poll())

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or trainer.sanity_checking:
            return
        if trainer.state.fn == "validate":
            self._capture(trainer, pl_module, "validate")
            self._finish(trainer, pl_module)
        elif self._analysis is not None:
            # Training is paused: the queued analyses get every core now, and the checkpoint saved
            # after this hook (checkpoint callbacks run last) holds them all.
            self._drain(trainer)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.enabled:
            self._capture(trainer, pl_module, "fit")
            self._finish(trainer, pl_module, evolution=True)
        self._train_ended = True

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._train_ended = False

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Resuming a checkpoint whose fit had already reached its last step (a run killed while it
        # made its end-of-fit capture and figures), Lightning skips `on_train_start` and
        # `on_train_end`: complete here what the kill interrupted. Captures and rows are keyed by
        # step, so nothing is listed twice.
        if not self._train_ended:
            self.on_train_end(trainer, pl_module)

    @override
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.enabled:
            self._capture(trainer, pl_module, "test")
            self._finish(trainer, pl_module)

    @override
    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
                           ) -> None:
        # Lightning restores `global_step` only when fitting; validate/test name the checkpoint's.
        self._checkpoint_step = None if trainer.state.fn == "fit" else checkpoint.get("global_step")

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._close()
        self._checkpoint_step = None

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._close()  # a failed or interrupted run should exit now, not after the queued t-SNE jobs

    def _close(self) -> None:
        if self._analysis is not None:
            self._analysis.close()
            self._analysis = None

    # --------------------------------------------------------------- capturing
    def _capture(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Forwards the probe set, writes its projector entry and queues its analysis: rank 0 only,
        no collectives (the other ranks go on training and meet rank 0 at the next all-reduce)."""
        step = trainer.global_step if stage == "fit" or self._checkpoint_step is None else self._checkpoint_step
        key = (step, stage)
        probe = self._ensure_probe(trainer, pl_module)  # adopts a loaded checkpoint's series first
        if stage == "fit" and key in self._series.captured:  # e.g. the resume step, queued in the checkpoint
            return
        self._series.captured.add(key)
        if not trainer.is_global_zero:
            return
        with trainer.precision_plugin.forward_context():
            features, outputs = capture.forward_layer(pl_module, self.layer, probe.inputs, pl_module.device)
        metadata, probe_acc = capture.probe_metadata(probe, outputs)
        self._write_entries(pl_module, key, features, metadata)
        record = Capture(step, stage, features, probe.labels, probe_acc)
        if self._analysis is None:
            self._record(trainer, Analysis(record, scores.separation_scores(features, None, probe.labels)))
        else:
            self._submit(trainer, record)

    def _submit(self, trainer: pl.Trainer, record: Capture) -> None:
        """Queues the capture's analysis; the first time the queue overflows in this run, says what
        that means (the analysis is new in each run, so its count starts at 0)."""
        assert self._analysis is not None
        # Its scalars and image will come out of order (newest first, gaps at the pause): later ones wait.
        if "silhouette" not in self._series.rows.get(record.key, {}):  # else restored with a checkpoint's row
            self._order.expect("scores", record.step)
        self._order.expect("map", record.step)
        skipped = self._analysis.skipped
        self._analysis.submit(record)
        if skipped == 0 < self._analysis.skipped:
            _tell(trainer, f"EmbeddingProjector: captures come faster than their t-SNE maps, so the newest is "
                           f"mapped first and those skipped ({self._analysis.skipped} so far) get their maps when "
                           "training pauses (validation, end of fit). Every capture still gets its projector "
                           "entry and silhouette score as it comes.")

    def _write_entries(self, pl_module: pl.LightningModule, key: CaptureKey, features: np.ndarray,
                       metadata: dict[str, list[str]]) -> None:
        """The capture's projector entry, and the class vectors' beside it. A write that fails costs
        this capture its entries, not the run."""
        assert self._log_dir is not None and self._probe is not None  # set up, and the probe drawn
        tag = self._tag(key)
        try:
            sprite_path, thumb = self._write_sprite_once() if self.sprites else (None, None)
            projector.write_embedding(self._log_dir, tag, features, metadata, sprite_path=sprite_path,
                                      sprite_thumb_size=thumb)
            weight = self._class_vectors(pl_module)
            if weight is not None:
                suffix = tag.removeprefix(f"{self.layer}_")
                projector.write_embedding(self._log_dir, f"{self.class_layer}.weight_{suffix}", weight,
                                          list(self._probe.class_names))
        except OSError as err:
            rank_zero_warn(f"EmbeddingProjector: could not write the projector entry {tag} ({err}); "
                           "skipped it, training goes on.")

    def _write_sprite_once(self) -> tuple[str | None, tuple[int, int] | None]:
        """The probe never changes within a run, so neither does its sprite: written once. Inputs
        that are not images get none."""
        assert self._log_dir is not None and self._probe is not None
        if self._sprite is None:
            images = capture.sprite_images(self._probe.inputs)
            if images is None:
                return None, None
            name = "sprite.png" if self.layer == DEFAULT_LAYER else f"sprite_{projector.safe_tag(self.layer)}.png"
            path = self._log_dir / "projector" / name
            self._sprite = (str(path), projector.write_sprite(images, path))
        return self._sprite

    def _class_vectors(self, pl_module: pl.LightningModule) -> np.ndarray | None:
        if not self.class_vectors or self._probe is None:
            return None
        return capture.class_vectors(pl_module, self.class_layer, len(self._probe.class_names))  # (C, D)

    def _listed_in_run_dir(self, key: CaptureKey) -> bool:
        """Whether this run folder's projector config lists the capture ``key`` already."""
        assert self._log_dir is not None
        try:
            return projector.safe_tag(self._tag(key)) in projector.listed_embeddings(self._log_dir)
        except ValueError:  # an unreadable config: the capture is taken again and replaces it
            return False

    def _tag(self, key: CaptureKey) -> str:
        step, stage = key
        return f"{self.layer}_step{step:07d}" if stage == "fit" else f"{self.layer}_{stage}_step{step:07d}"

    def _draw_map(self, record: Capture, layout: np.ndarray) -> np.ndarray:
        """Analysis thread: saves the capture's t-SNE map and returns it rendered, for TensorBoard's
        Images tab. Reads only what stays fixed during the run."""
        assert self._probe is not None
        title = f"{'' if record.stage == 'fit' else f'{record.stage}, '}step {record.step}"
        if record.probe_acc is not None:
            title += f" · probe acc {record.probe_acc:.3f}"
        figure = plots.plot_embedding(layout, record.labels, self._probe.class_names, title=title)
        image = plots.render_figure(figure)
        self._save(figure, image, f"tsne_{self._tag(record.key)}")
        return image

    def _save(self, figure: Any, image: np.ndarray | None, name: str) -> None:
        """Writes ``figure`` to the plot folder; a PNG at TensorBoard's 100 dpi is the ``image``
        already rendered for the Images tab, not a second drawing."""
        path = self.plot_dir / f"{name}.{self.plot_format}"
        if image is not None and self.plot_format == "png" and self.plot_dpi == 100:
            plots.save_image(image, path)
            figure.clear()
        else:
            plots.save_figure(figure, path, dpi=self.plot_dpi)

    # ------------------------------------------------------------ recording
    def _record_all(self, trainer: pl.Trainer, analyses: list[Analysis]) -> None:
        for analysis in analyses:
            self._record(trainer, analysis)

    def _record(self, trainer: pl.Trainer, analysis: Analysis) -> None:
        """The one place, on the main thread, where a finished analysis joins the series: its row and
        2-D layout are kept, its bookmark written, the CSV rewritten, and its new scores and plot
        logged at its step once the earlier steps' have been (see :mod:`lenet_lightning.step_order`).
        A gap comes here twice: with its silhouette, then with its map and 2-D scores."""
        record = analysis.capture
        tag = self._tag(record.key)
        if analysis.error is not None:
            step, lost = ("t-SNE", "no 2-D scores or plot") if analysis.layout is None else ("plot", "no plot")
            reason = analysis.error.strip().splitlines()[-1]
            rank_zero_warn(f"EmbeddingProjector: {step} of {tag} failed ({reason}); {lost} for it. "
                           f"Traceback from the analysis thread:\n{analysis.error}")
        new = self._series.add(analysis, tag)  # a gap's 2-D scores join its row when its map is made
        self._bookmark(analysis, tag)
        numbers = {name: float(value) for name, value in new.items()
                   if name not in ("tag", "step", "stage") and value is not None}
        early = {name: value for name, value in numbers.items() if name in FEATURE_SCORES}
        released = self._order.put("scores", record.step, (early, None))
        if analysis.layout is not None or analysis.error is not None:  # final: not a gap's scores-only result
            late = {name: value for name, value in numbers.items() if name not in FEATURE_SCORES}
            image: np.ndarray | bytes | None = analysis.image
            if image is not None and self._order.awaits("map", record.step):
                # Held until the gaps before it are mapped: 1 MB raw, about 50 kB as a fast PNG.
                image = plots.png_bytes(image, compress_level=1)
            released += self._order.put("map", record.step, (late, image))
        self._log(trainer, released)
        path = self.plot_dir / "separation.csv"
        try:
            write_scores_csv(path, list(self._series.rows.values()))
        except OSError as err:
            rank_zero_warn(f"EmbeddingProjector: could not write {path} ({err}); its rows stay in memory and in "
                           "the checkpoint.")

    def _drain(self, trainer: pl.Trainer, announce: bool = False) -> None:
        """Waits for every queued analysis, on every core (training is paused or over); says so when
        ``announce`` (at the end, not at every validation)."""
        if self._analysis is None:
            return
        if announce and self._analysis.pending:
            _tell(trainer, f"EmbeddingProjector: waiting for {len(self._analysis.pending)} pending t-SNE plot(s)...")
        self._record_all(trainer, self._analysis.drain())

    def _finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule, evolution: bool = False) -> None:
        """Waits for pending analyses, then draws the evolution (after fit) and the class vectors. A
        figure that cannot be made or written is reported and skipped: the run has finished."""
        if not trainer.is_global_zero or self._probe is None:
            return
        self._drain(trainer, announce=True)
        names = self._probe.class_names
        series = self._series.fit_layouts()
        try:
            if evolution and series:
                titles = [f"step {step}" for (step, _), _ in series]
                figure = plots.plot_evolution([layout for _, layout in series], self._probe.labels, names, titles)
                image = self._log_figure(trainer, f"{self.name}/tsne_evolution", figure, series[-1][0][0])
                self._save(figure, image, "tsne_evolution")
            weight = self._class_vectors(pl_module)
            if weight is not None:
                figure = plots.plot_class_vectors(weight, names)
                step = trainer.global_step if self._checkpoint_step is None else self._checkpoint_step
                image = self._log_figure(trainer, f"{self.name}/class_vectors", figure, step)
                self._save(figure, image, "class_vectors")
        except (OSError, ValueError) as err:
            rank_zero_warn(f"EmbeddingProjector: an end-of-run figure was skipped ({err}).")
        _tell(trainer, f"EmbeddingProjector: projector entries in {self._log_dir}, plots in {self.plot_dir}")

    # --------------------------------------------- TensorBoard: bookmarks and images
    def _bookmark(self, analysis: Analysis, tag: str) -> None:
        """Main thread, rank 0: gives the capture's projector entry a bookmark that shows its offline
        t-SNE layout (the one aligned with its neighbour's, as in its plot) coloured by class, as
        soon as it is made. A failed write costs the bookmark."""
        step = analysis.capture.step
        if analysis.layout is not None and self._log_dir is not None:
            name = f"step {step}: t-SNE of tsne_{tag}.{self.plot_format}"
            bookmark = projector.layout_bookmark(analysis.layout, name, color_by="label", perplexity=self._perplexity)
            try:
                projector.write_bookmarks(self._log_dir, tag, [bookmark])
            except (OSError, ValueError) as err:  # e.g. a capture queued in a checkpoint of another run folder
                rank_zero_warn(f"EmbeddingProjector: could not write the bookmark of {tag} ({err}); skipped it.")

    def _log(self, trainer: pl.Trainer, released: Released) -> None:
        """Logs the scores and plots :class:`StepOrder` released, each stream in step order: the plot
        to TensorBoard's Images tab, the scores to every logger."""
        for _, step, (metrics, image) in released:
            if metrics:
                for logger in trainer.loggers:
                    logger.log_metrics({f"{self.name}/{name}": value for name, value in metrics.items()}, step=step)
            if isinstance(image, bytes):
                image = plots.from_png(image)
            if image is not None:
                self._log_image(trainer, f"{self.name}/tsne", image, step)

    def _log_figure(self, trainer: pl.Trainer, tag: str, figure: Any, step: int) -> np.ndarray | None:
        """Logs ``figure`` to TensorBoard's Images tab, if a TensorBoard logger is there; returns the image."""
        if not any(isinstance(logger, TensorBoardLogger) for logger in trainer.loggers):
            return None
        image = plots.render_figure(figure)
        self._log_image(trainer, tag, image, step)
        return image

    @staticmethod
    def _log_image(trainer: pl.Trainer, tag: str, image: np.ndarray, step: int) -> None:
        """Through the TensorBoard logger's own writer: ``image`` is ``(H, W, 3)`` uint8."""
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(tag, image, global_step=step, dataformats="HWC")

    # ------------------------------------------------------------- checkpointing
    @override
    def state_dict(self) -> dict[str, Any]:
        """The series so far, captures still being analysed included; no side effects. Tensors and
        plain types only, so checkpoints stay loadable with ``weights_only=True``."""
        if self._loaded is not None:
            return self._loaded  # loaded before its probe set was drawn: kept as it came
        pending = self._analysis.pending if self._analysis is not None else self._requeue
        return self._series.to_state(self.layer, self.split, self._probe, pending)

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keeps the checkpoint's series; it is compared with this run's probe set when that is drawn."""
        self._loaded = dict(state_dict)
        if self._probe is not None:
            self._adopt(self._loaded, fitting=True)

    def _adopt(self, state: dict[str, Any], fitting: bool) -> None:
        """Continues the checkpoint's series if it was made on this probe set of this layer, else warns
        once and starts a new one. validate/test only take its layouts, for the map's orientation."""
        self._loaded = None
        if state.get("probe_index") is None:
            return  # saved before any capture, or with the callback off
        adopted = Series.from_state(state, self.layer, self.split, self._probe)
        if isinstance(adopted, str):
            rank_zero_warn(f"EmbeddingProjector: the checkpoint's series does not continue here: {adopted}; "
                           f"starting a new series for `layer={self.layer!r}`, `split={self.split!r}`, "
                           f"`num_samples={self.num_samples}` on this data.")
            return
        series, pending = adopted
        if fitting:
            self._series, self._requeue = series, pending
        else:
            self._series.layouts.update(dict(series.fit_layouts()))


def _split_dataset(trainer: pl.Trainer, split: str) -> Any:
    """The dataset of the trainer's ``split`` dataloader (the first one, when there are several), asking
    the datamodule when the trainer has not loaded it; ``None`` when there is none."""
    loaders: Any = {"train": trainer.train_dataloader, "val": trainer.val_dataloaders,
                    "test": trainer.test_dataloaders}[split]
    if loaders is None and trainer.datamodule is not None:
        try:
            loaders = getattr(trainer.datamodule, f"{split}_dataloader")()
        except NotImplementedError:  # LightningDataModule's default: the datamodule has no such split
            loaders = None
    while isinstance(loaders, (list, tuple, dict)) and loaders:
        loaders = next(iter(loaders.values())) if isinstance(loaders, dict) else loaders[0]
    return getattr(loaders, "dataset", None)


def _tell(trainer: pl.Trainer, message: str) -> None:
    """Prints ``message`` on its own line: through the progress bar while one is shown (a plain
    print would be glued to the end of the bar), else to Lightning's log."""
    bar = trainer.progress_bar_callback
    if bar is not None and trainer.is_global_zero:
        bar.print(message)
    else:
        rank_zero_info(message)


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Expected `{name}` to be an integer >= {minimum}, but got {value!r}.")
