"""The ``EmbeddingProjector`` callback: what needs Lightning to watch a layer learn.

When to capture, the forward pass on rank 0, handing the work over, and checkpoint hooks. The rest
is Lightning-free: :mod:`~lenet_lightning.capture` (probe set, forward pass),
:mod:`~lenet_lightning.recorder` (one series on disk), :mod:`~lenet_lightning.analysis` (the
background t-SNE queue), :mod:`~lenet_lightning.results` (the end of a series, from the run folder).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import Dataset
from typing_extensions import override

from lenet_lightning import capture, plots, projector, trainer_io, tsne
from lenet_lightning.analysis import Analysis, BackgroundAnalysis, Capture, CaptureKey
from lenet_lightning.callback_state import checked_state, series_state
from lenet_lightning.data import InMemoryImages
from lenet_lightning.preflight import absolute
from lenet_lightning.recorder import SeriesRecorder
from lenet_lightning.results import DEFAULT_LAYER, SeriesInfo
from lenet_lightning.scores import separation_scores
from lenet_lightning.trainer_io import LoggersWriter, split_dataset, tell

Schedule = Literal["fixed", "doubling"]
ProbeSplit = Literal["train", "val", "test"]


class EmbeddingProjector(Callback):
    """Sends a layer's output on a fixed probe set to TensorBoard's Projector as training goes.

    Each capture gets a Projector entry (labelled, with sprite thumbnails for image inputs, and a
    bookmark of its aligned t-SNE map), a plot, a row of ``separation.csv`` and TensorBoard scalars;
    the end of fit adds the run's results (:func:`~lenet_lightning.results.write_series_results`).
    Works with any LightningModule and map-style dataset of ``(input, target)`` pairs: the probe set
    is ``dataset`` when given, else the ``split``'s data (the datamodule's tensors for
    ``LeNetDataModule``, else the dataset of that dataloader).

    This class decides only *when*: at step 0, at every scheduled step and at the end of fit
    (``validate`` and ``test`` capture once), on global rank 0, in eval mode, without gradients
    and drawing no random numbers, so training is unchanged. What a capture writes is the
    :class:`~lenet_lightning.recorder.SeriesRecorder`'s job; t-SNE, scores and plots run in a
    background thread at the lowest priority (:class:`~lenet_lightning.analysis.BackgroundAnalysis`),
    and a checkpoint holds the captures not analysed yet. Instances coexist when they capture
    different layers (``state_key`` holds the layer): ``fc2`` writes to ``<log_dir>/embeddings``
    and logs ``embeddings/*``; another layer to ``embeddings_<layer>``.

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
        settle_threshold: The representation has settled at the first capture from which its linear
            CKA to the final capture stays at or above this (said at the end of fit).

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
        settle_threshold: float = 0.95,
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
        if isinstance(settle_threshold, bool) or not isinstance(settle_threshold, (int, float)) or \
                not 0 < settle_threshold <= 1:
            raise ValueError(f"Expected `settle_threshold` to be a number in (0, 1], but got {settle_threshold!r}.")
        if dataset is not None and not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(f"Expected `dataset` to be a map-style dataset of (input, target) pairs, "
                            f"but got {type(dataset).__name__}.")
        self.enabled, self.layer, self.schedule = enabled, layer, schedule
        self.every_n_train_steps = every_n_train_steps
        self.num_samples, self.split, self.seed = num_samples, split, seed
        self.sprites, self.tsne, self.perplexity = sprites, tsne, float(perplexity)
        self.class_vectors, self.class_layer = class_vectors, class_layer
        self.dirpath, self.dataset, self.settle_threshold = dirpath, dataset, float(settle_threshold)
        self.plot_format, self.plot_dpi = plots.check_plot_format(plot_format), plots.check_dpi(plot_dpi)
        # Names the plot folder and the scalars: `embeddings` for the default layer.
        self.name = SeriesInfo.default_name(layer)
        # Per run, made in `setup`: the probe set on every rank; the recorder and analysis on rank 0.
        self._probe: capture.ProbeSet | None = None
        self._recorder: SeriesRecorder | None = None
        self._analysis: BackgroundAnalysis | None = None
        self._fitting = False
        self._taken: set[CaptureKey] = set()  # captured in this run
        self._queued: set[CaptureKey] = set()  # restored from a checkpoint, still being analysed
        self._checkpoint_step: int | None = None  # validate/test: the step of the loaded checkpoint
        self._fit_finished = False
        self._layout: tuple[int, np.ndarray] | None = None  # the newest fit map: the next one starts from it

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(layer=self.layer)

    # ------------------------------------------------------------------ setup
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Draws the probe set on every rank (no collectives), before Lightning restores a checkpoint's
        state into it; on rank 0 clears what a killed run left and starts the recorder and analysis."""
        self._close()
        self._probe, self._recorder, self._taken, self._queued = None, None, set(), set()
        self._fitting, self._fit_finished, self._checkpoint_step = stage == "fit", False, None
        if not self.enabled:
            return
        capture.find_layer(pl_module, self.layer)  # a wrong name fails now, on every rank
        run_dir = trainer_io.run_dir(trainer)
        self._probe = probe = self._draw_probe(trainer)
        if not trainer.is_global_zero:
            return
        plot_dir = run_dir / self.name if self.dirpath is None else Path(absolute(self.dirpath))
        other = [plot_dir, *(cb.dirpath for cb in trainer.checkpoint_callbacks if cb.dirpath)]
        projector.remove_leftovers(run_dir, other)  # before this run writes there
        perplexity = tsne.effective_perplexity(len(probe.labels), self.perplexity) if self.tsne else self.perplexity
        info = SeriesInfo(self.layer, probe.class_names, self.name, plot_dir, self.class_layer, self.plot_format,
                          self.plot_dpi, perplexity, self.seed, self.settle_threshold)
        self._recorder = SeriesRecorder(run_dir, probe, info, sprites=self.sprites, writer=LoggersWriter(trainer))
        if len(probe.labels) < self.num_samples:
            rank_zero_info(f"EmbeddingProjector: the probe set has {len(probe.labels)} points: all of the "
                           f"{self.split} split (`num_samples={self.num_samples}` asked for more).")
        if self.class_vectors and capture.class_vectors(pl_module, self.class_layer, len(probe.class_names)) is None:
            rank_zero_info(f"EmbeddingProjector: no class vectors: `class_layer` {self.class_layer!r} is not a "
                           f"linear layer with one row per class ({len(probe.class_names)}).")
        if self.tsne:
            # On a GPU the maps are made there (exact t-SNE); on a CPU by openTSNE.
            device = trainer.strategy.root_device
            self._analysis = BackgroundAnalysis(perplexity, self.seed, draw=self._recorder.draw_map,
                                                device=None if device.type == "cpu" else device,
                                                reload=self._recorder.read_features, change=self._recorder.change)

    @property
    def plot_dir(self) -> Path:
        """Where plots and ``separation.csv`` go."""
        if self._recorder is None:
            raise RuntimeError("The embeddings callback has not been set up by a Trainer (on rank 0) yet.")
        return self._recorder.plot_dir

    def _draw_probe(self, trainer: pl.Trainer) -> capture.ProbeSet:
        datamodule = trainer.datamodule
        if self.dataset is None and isinstance(datamodule, InMemoryImages):  # the fast path: tensors in memory
            images, labels = datamodule.split_tensors(self.split)
            return capture.probe_from_tensors(images, labels, datamodule.class_names, self.num_samples, self.seed)
        dataset = self.dataset if self.dataset is not None else split_dataset(trainer, self.split)
        if dataset is None:
            raise ValueError(
                f"Expected {self.split} data to draw the embeddings probe set from (`split={self.split!r}`), "
                "but the trainer has no such dataloader; pass `EmbeddingProjector(dataset=...)`, or choose "
                "another `split`.")
        return capture.probe_from_dataset(dataset, self.num_samples, self.seed)

    # ------------------------------------------------------------ when to capture
    def is_capture_step(self, step: int) -> bool:
        """Whether ``step`` is a scheduled capture (step 0 and the end of fit always are, besides)."""
        n = self.every_n_train_steps
        if n == 0 or step <= 0 or step % n:
            return False
        if self.schedule == "fixed":
            return True
        multiple = step // n
        return multiple & (multiple - 1) == 0  # a power of two

    def _skip(self, trainer: pl.Trainer) -> bool:
        """The one predicate for "nothing to do here": disabled, another rank, or not set up."""
        return not self.enabled or not trainer.is_global_zero or self._recorder is None

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Step 0 before any update. After a resume, the checkpoint's own step only if the earlier run
        # captured it in this run folder (its end-of-fit capture, which came after its last
        # checkpoint): a run resumed after a kill gets the captures an uninterrupted run would have.
        if self._skip(trainer):
            return
        step = trainer.global_step
        if step == 0 or self.is_capture_step(step) or self._recorder.captured((step, "fit")):
            self._capture(trainer, pl_module, "fit")

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._skip(trainer):
            return
        if self.is_capture_step(trainer.global_step):
            self._capture(trainer, pl_module, "fit")
        if self._analysis is not None:
            self._record_all(self._analysis.poll())

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._skip(trainer) or trainer.sanity_checking:
            return
        if trainer.state.fn == "validate":
            self._capture(trainer, pl_module, "validate")
            self._finish(trainer)
        elif self._analysis is not None:
            # Training is paused: the queued analyses get every core now, and the checkpoint saved
            # after this hook (checkpoint callbacks run last) holds what is left.
            self._record_all(self._analysis.drain())

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end_fit(trainer, pl_module)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Resuming a checkpoint whose fit had already reached its last step (a run killed while it
        # made its end-of-fit capture and figures), Lightning skips `on_train_end`: end it here.
        self._end_fit(trainer, pl_module)

    def _end_fit(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._skip(trainer) or self._fit_finished:
            return
        self._fit_finished = True
        self._capture(trainer, pl_module, "fit")
        self._finish(trainer)

    @override
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._skip(trainer):
            return
        self._capture(trainer, pl_module, "test")
        self._finish(trainer)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._close()

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._close()  # a failed or interrupted run should exit now, not after the queued t-SNE jobs

    def _close(self) -> None:
        if self._analysis is not None:
            self._analysis.close()
            self._analysis = None

    # --------------------------------------------------------------- capturing
    def _capture(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Rank 0: forwards the probe set, writes its entry and hands its analysis over. No
        collectives: the other ranks go on training and meet rank 0 at the next all-reduce."""
        assert self._recorder is not None and self._probe is not None  # set up on rank 0
        step = trainer.global_step if stage == "fit" or self._checkpoint_step is None else self._checkpoint_step
        key = (step, stage)
        if key in self._taken or key in self._queued or self._recorder.complete(key):
            return
        self._taken.add(key)
        with trainer.precision_plugin.forward_context():
            features, outputs = capture.forward_layer(pl_module, self.layer, self._probe.inputs, pl_module.device)
        weight = capture.class_vectors(pl_module, self.class_layer, len(self._probe.class_names)) \
            if self.class_vectors else None
        record = self._recorder.write_capture(step, stage, features, outputs, weight)
        if record is not None:
            self._hand_over(trainer, record)

    def _hand_over(self, trainer: pl.Trainer | None, record: Capture) -> None:
        """Queues the capture's analysis; without t-SNE, records its feature-space scores now. The
        first time the queue overflows in this run, says what that means."""
        assert self._recorder is not None
        if self._analysis is None:
            scores = separation_scores(record.features, None, record.labels)
            self._recorder.record(Analysis(record, {**scores, **self._recorder.change(record)}))
            return
        self._recorder.expect(record.key)
        skipped = self._analysis.skipped
        self._analysis.submit(record)
        if trainer is not None and skipped == 0 < self._analysis.skipped:
            tell(trainer, "EmbeddingProjector: captures come faster than their t-SNE maps, so the newest is "
                           f"mapped first and those skipped ({self._analysis.skipped} so far) get their maps when "
                           "training pauses (validation, end of fit). Every capture still gets its projector "
                           "entry and silhouette score as it comes.")

    def _record_all(self, analyses: list[Analysis]) -> None:
        assert self._recorder is not None
        for analysis in analyses:
            key = analysis.capture.key
            if analysis.layout is not None or analysis.error is not None:
                self._queued.discard(key)
            if analysis.layout is not None and key[1] == "fit" and (self._layout is None or key[0] >= self._layout[0]):
                self._layout = (key[0], analysis.layout)
            self._recorder.record(analysis)

    def _finish(self, trainer: pl.Trainer) -> None:
        """Waits for the queued analyses, on every core, then ends the series from the run folder."""
        assert self._recorder is not None
        if self._analysis is not None:
            if self._analysis.pending:
                tell(trainer, f"EmbeddingProjector: waiting for {len(self._analysis.pending)} pending t-SNE "
                               "plot(s)...")
            self._record_all(self._analysis.drain())
        settled = self._recorder.finish()
        if settled is not None:
            tell(trainer, settled)
        tell(trainer, f"EmbeddingProjector: projector entries in {self._recorder.run_dir}, plots in "
                       f"{self._recorder.plot_dir}")

    # ------------------------------------------------------------- checkpointing
    @override
    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
                           ) -> None:
        # Lightning restores `global_step` only when fitting; validate/test name the checkpoint's.
        self._checkpoint_step = None if trainer.state.fn == "fit" else checkpoint.get("global_step")

    @override
    def state_dict(self) -> dict[str, Any]:
        """What the run folder cannot give back: the probe set, the newest map (the next one starts
        from it) and the captures not analysed yet. Tensors, ints and strings only, so checkpoints
        load with ``weights_only=True``; no side effects."""
        if self._probe is None:
            return {}
        pending = self._analysis.pending if self._analysis is not None else []
        assert self._recorder is not None or not pending  # only rank 0 analyses
        return series_state(self.layer, self.split, self._probe.split_size, self._probe.index, self._layout,
                            [(p, p.features if p.features is not None else self._recorder.read_features(p.key))
                             for p in pending])

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continues the checkpoint's series if it was made on this probe set of this layer (else
        warns and starts a new one): its newest map seeds the next, and its captures not analysed
        yet go straight to the analysis (validate and test take the map only)."""
        if self._probe is None or not state_dict or state_dict.get("probe_index") is None:
            return  # disabled, saved before any capture, or with the callback off
        state = checked_state(state_dict)
        probe = self._probe
        if (state["layer"], state["split"], state["split_size"]) != (self.layer, self.split, probe.split_size) or \
                not np.array_equal(state["probe_index"], probe.index):
            rank_zero_warn(
                f"EmbeddingProjector: the checkpoint's series does not continue here: its probe set "
                f"({len(state['probe_index'])} of {state['split_size']} {state['split']} inputs, layer "
                f"{state['layer']!r}) is not this one; starting a new series for `layer={self.layer!r}`, "
                f"`split={self.split!r}`, `num_samples={self.num_samples}` on this data.")
            return
        if self._recorder is None:
            return  # another rank
        if state["layout"] is not None:
            self._layout = (state["layout_step"], state["layout"])
            if self._analysis is not None:
                self._analysis.add_layouts({(state["layout_step"], "fit"): state["layout"]})
        if self._fitting:
            for step, stage, probe_acc, features in state["pending"]:
                self._queued.add((step, stage))
                self._hand_over(None, Capture(step, stage, features, probe.labels, probe_acc))


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Expected `{name}` to be an integer >= {minimum}, but got {value!r}.")
