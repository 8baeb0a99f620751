"""The background analysis of captures: t-SNE (warm-started), 2-D scores and the map's plot.

:class:`BackgroundAnalysis` owns everything this needs: the worker thread (at the lowest CPU
priority), how many threads its t-SNE may use, the captures waiting for it, and the layouts of the
captures analysed so far, from which each t-SNE starts. Its methods are called from one thread, the
training loop's; results come back there, from :meth:`BackgroundAnalysis.poll` and
:meth:`BackgroundAnalysis.drain`. No Lightning here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from lenet_lightning import tsne
from lenet_lightning.scores import separation_scores

CaptureKey = tuple[int, str]  # (global step, stage: "fit", "validate" or "test")


@dataclass(frozen=True)
class Capture:
    """One capture's layer output on the probe set, waiting for its analysis.

    Args:
        step: The training step the model had reached.
        stage: ``"fit"``, ``"validate"`` or ``"test"``.
        features: ``(N, D)`` layer output.
        labels: ``(N,)`` class indices.
        probe_acc: Accuracy of the model's predictions on the probe set, if it predicts classes.
    """

    step: int
    stage: str
    features: np.ndarray | None  # None: a gap's, released once scored, read back when it is mapped
    labels: np.ndarray
    probe_acc: float | None = None
    reloadable: bool = False  # its features can be read back (from its Projector entry in this run folder)

    @property
    def key(self) -> CaptureKey:
        return self.step, self.stage


@dataclass(frozen=True)
class Analysis:
    """What the analysis of one capture found: ``scores`` (``silhouette``, and ``knn_acc_2d`` and
    ``trustworthiness`` when the 2-D ``layout`` was made), and the error's traceback if a step failed.

    A capture skipped while training runs (see :class:`BackgroundAnalysis`) comes back twice: first
    with its ``silhouette`` only (no layout, no error), then, once analysed, in full."""

    capture: Capture
    scores: dict[str, float] = field(default_factory=dict)
    layout: np.ndarray | None = None
    error: str | None = None
    image: bytes | np.ndarray | None = None  # what `draw` returned: the plot (PNG bytes), for TensorBoard


Draw = Callable[[Capture, np.ndarray], "bytes | np.ndarray | None"]
Reload = Callable[[CaptureKey], np.ndarray]
Change = Callable[["Capture"], dict[str, float]]


class BackgroundAnalysis:
    """Analyses captures in a low-priority thread, newest first, each t-SNE warm-started from the
    layout of the analysed capture nearest to it in step.

    While training runs, the worker takes the newest capture waiting, so the maps follow training.
    When captures come faster than that (a GPU, a short capture interval), more than ``max_waiting``
    would wait: the oldest become *gaps*. A gap leaves the worker's queue (the memory it holds is
    its features, ``(N, D)``), gets its ``silhouette`` at once in a second low-priority thread, and
    its t-SNE, 2-D scores and plot at the next :meth:`drain`, when training pauses and every core is
    free. So the queue stays bounded, and every capture still ends with its map.

    Args:
        perplexity: t-SNE perplexity (it must fit the probe size: see :func:`tsne.effective_perplexity`).
        seed: Seeds t-SNE.
        draw: Called in the worker with each capture and its layout, to save its plot; what it returns
            (the plot as an image, or ``None``) is the analysis' ``image``. A failure there is
            reported in the capture's ``error`` and costs it the plot only.
        layouts: Layouts of captures analysed before (e.g. restored from a checkpoint), by key: the
            t-SNE of a capture starts from the one nearest to it in step.
        max_waiting: How many captures may wait for the worker while training runs (at least 1).
        device: Where t-SNE runs: ``None`` for openTSNE on the CPU, a GPU for exact t-SNE there
            (see :func:`tsne.embed_2d`).
        reload: Reads a capture's features back (from its Projector entry). With it, a gap's
            features leave memory once its silhouette is known and come back when it is mapped,
            so what waits is bounded whatever the layer's size; without it they stay.
        change: More scores of a capture, made in the worker after its map (how it differs from
            earlier captures); what it returns joins the analysis' scores.

    Raises:
        ValueError: ``max_waiting`` is not an integer >= 1.

    Example:
        >>> queue = BackgroundAnalysis(perplexity=5, seed=0)
        >>> features, labels = np.random.default_rng(0).normal(size=(40, 3)), np.arange(40) % 2
        >>> queue.submit(Capture(0, "fit", features, labels))
        >>> [(a.capture.key, a.layout.shape) for a in queue.drain()]
        [((0, 'fit'), (40, 2))]
        >>> queue.skipped
        0
        >>> queue.close()
    """

    def __init__(self, perplexity: float, seed: int, draw: Draw | None = None,
                 layouts: Mapping[CaptureKey, np.ndarray] | None = None, max_waiting: int = 2,
                 device: torch.device | str | None = None, reload: Reload | None = None,
                 change: Change | None = None) -> None:
        if isinstance(max_waiting, bool) or not isinstance(max_waiting, int) or max_waiting < 1:
            raise ValueError(f"Expected `max_waiting` to be an integer >= 1, but got {max_waiting!r}.")
        self.perplexity, self.seed, self.draw, self.max_waiting = perplexity, seed, draw, max_waiting
        self.device, self.reload, self.change = device, reload, change
        self._lock = threading.Lock()  # guards the five fields below, shared with the worker
        self._layouts: dict[CaptureKey, np.ndarray] = dict(layouts or {})
        self._threads = 1
        self._waiting: list[Capture] = []  # oldest first; the worker pops the newest
        self._working = False  # a worker job is running: it takes what waits before it returns
        self._finished: list[Analysis] = []  # the worker's results, not yet handed back
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tsne",
                                            initializer=_yield_cpu_to_training)
        self._scorer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scores",
                                          initializer=_yield_cpu_to_training)
        # Main thread only.
        self._job: Future[None] | None = None
        self._gaps: list[Capture] = []  # skipped while training runs; analysed at the next drain
        self._scoring: list[tuple[Capture, Future[dict[str, float]]]] = []  # the gaps' silhouettes
        self._unfinished: dict[CaptureKey, Capture] = {}  # every capture whose full analysis is not handed back
        self._skipped = 0
        self._silhouettes: dict[CaptureKey, dict[str, float]] = {}  # the gaps' scores: computed once

    @property
    def skipped(self) -> int:
        """How many captures have become gaps so far: the caller can tell its user when it starts."""
        return self._skipped

    @property
    def layouts(self) -> dict[CaptureKey, np.ndarray]:
        """The layouts of the captures analysed so far (and those given), by key."""
        with self._lock:
            return dict(self._layouts)

    @property
    def pending(self) -> list[Capture]:
        """Captures submitted whose full analysis has not been handed back by :meth:`poll` or
        :meth:`drain` (waiting, gaps, and the one being analysed), in step order."""
        return [self._unfinished[key] for key in sorted(self._unfinished)]

    def add_layouts(self, layouts: Mapping[CaptureKey, np.ndarray]) -> None:
        """Layouts of captures mapped before (a checkpoint's newest map): later maps start from them."""
        with self._lock:
            self._layouts.update(layouts)

    def submit(self, capture: Capture) -> None:
        """Queues ``capture``, to be analysed before those waiting longer; past ``max_waiting``
        waiting, the oldest become gaps and get their ``silhouette`` now."""
        self._unfinished[capture.key] = capture
        with self._lock:
            self._waiting.append(capture)
            overflow = len(self._waiting) - self.max_waiting
            gaps, self._waiting = self._waiting[:max(overflow, 0)], self._waiting[max(overflow, 0):]
            self._wake()
        for gap in gaps:
            self._scoring.append((gap, self._scorer.submit(_silhouette, gap)))
        self._gaps += gaps
        self._skipped += len(gaps)

    def poll(self) -> list[Analysis]:
        """The analyses finished so far, gaps' scores-only results included, in step order; does not wait."""
        done = [item[1].done() for item in self._scoring]  # read once: a future may finish meanwhile
        scored = [item for item, is_done in zip(self._scoring, done, strict=True) if is_done]
        self._scoring = [item for item, is_done in zip(self._scoring, done, strict=True) if not is_done]
        with self._lock:
            finished, self._finished = self._finished, []
        return self._hand_back(scored, finished)

    def drain(self) -> list[Analysis]:
        """Analyses everything not yet analysed, gaps included, on every core (training is paused or
        over), and waits for it; returns what :meth:`poll` has not, in step order."""
        for _, future in self._scoring:
            future.cancel()  # not started: its full analysis, due now, scores it anyway
        with self._lock:  # silhouettes done but not handed back yet are not computed again
            self._silhouettes.update({gap.key: future.result() for gap, future in self._scoring
                                      if future.done() and not future.cancelled() and future.result()})
        gaps = [self._with_features(gap) for gap in self._gaps]  # read back before the worker takes them
        with self._lock:
            self._threads = os.cpu_count() or 1
            self._waiting = gaps + self._waiting
            self._wake()
        self._gaps = []
        try:
            if self._job is not None:
                self._job.result()
            scored = [(gap, future) for gap, future in self._scoring if not future.cancelled()]
            self._scoring = []
            for _, future in scored:
                future.result()
            with self._lock:
                finished, self._finished = self._finished, []
            return self._hand_back(scored, finished)
        finally:
            with self._lock:
                self._threads = 1

    def close(self) -> None:
        """Cancels queued analyses and waits for the one running, if any: after an exception the run
        should end now, not after the queue. The captures left are dropped."""
        self._unfinished, self._gaps = {}, []
        with self._lock:
            self._waiting = []
        for _, future in self._scoring:
            future.cancel()
        self._scoring = []
        self._scorer.shutdown(wait=True, cancel_futures=True)
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _hand_back(self, scored: list[tuple[Capture, Future[dict[str, float]]]],
                   finished: list[Analysis]) -> list[Analysis]:
        """Gaps' scores first, then full analyses, each in step order (so are the scalars logged from
        them). A scored gap's features leave memory when they can be read back."""
        for analysis in finished:
            self._unfinished.pop(analysis.capture.key, None)
            with self._lock:
                self._silhouettes.pop(analysis.capture.key, None)
        early = [Analysis(gap, future.result()) for gap, future in scored]
        for analysis in early:
            key = analysis.capture.key
            if "silhouette" in analysis.scores:
                with self._lock:
                    self._silhouettes[key] = analysis.scores
            if self.reload is not None and analysis.capture.reloadable and key in self._unfinished:
                released = dataclasses.replace(analysis.capture, features=None)
                self._unfinished[key] = released
                self._gaps = [released if gap.key == key else gap for gap in self._gaps]
        return sorted(early, key=lambda a: a.capture.key) + sorted(finished, key=lambda a: a.capture.key)

    def _with_features(self, capture: Capture) -> Capture:
        if capture.features is not None or self.reload is None:
            return capture
        return dataclasses.replace(capture, features=self.reload(capture.key))

    def _wake(self) -> None:
        """Starts a worker job unless one runs (it takes what waits before it returns). Lock held."""
        if self._waiting and not self._working:
            self._working = True
            self._job = self._executor.submit(self._work)

    def _work(self) -> None:
        """Worker thread: analyses the newest waiting capture until none waits. It stops under the
        lock that :meth:`submit` appends under, so no capture is left waiting without a worker."""
        try:
            while True:
                with self._lock:
                    if not self._waiting:
                        self._working = False
                        return
                    capture = self._waiting.pop()
                    threads, init = self._threads, nearest_layout(self._layouts, capture.key)
                analysis = self._analyse(capture, init, threads)
                with self._lock:
                    if analysis.layout is not None:
                        self._layouts[capture.key] = analysis.layout
                    self._finished.append(analysis)
        except BaseException:  # a bug here must not leave `_working` set: nothing would start again
            with self._lock:
                self._working = False
            raise

    def _analyse(self, capture: Capture, init: np.ndarray | None, threads: int) -> Analysis:
        """Worker thread: t-SNE, scores, then the plot. A failure costs this capture what it stopped."""
        try:
            layout = tsne.embed_2d(capture.features, init=init, perplexity=self.perplexity, seed=self.seed,
                                   n_threads=threads, device=self.device)  # limits its own threads
            with self._lock:
                known = self._silhouettes.get(capture.key, {})
            with threadpool_limits(limits=threads):  # the scores are BLAS products
                scores = {**separation_scores(capture.features, layout, capture.labels,
                                              silhouette="silhouette" not in known), **known}
                if self.change is not None:
                    scores.update(self.change(capture))
        except Exception:  # reported by the main thread, with this traceback
            error = traceback.format_exc()
            try:
                scores = separation_scores(capture.features, None, capture.labels)
            except Exception:
                scores = {}
            return Analysis(capture, scores, None, error)
        try:
            image = self.draw(capture, layout) if self.draw is not None else None
        except Exception:
            return Analysis(capture, scores, layout, traceback.format_exc())
        return Analysis(capture, scores, layout, image=image)


def nearest_layout(layouts: Mapping[CaptureKey, np.ndarray], key: CaptureKey) -> np.ndarray | None:
    """The layout nearest in step to ``key`` (ties: the earlier), so that a map filled in late keeps
    the orientation of its neighbours; ``None`` when there is none yet.

    Example:
        >>> layouts = {(0, "fit"): np.zeros((1, 2)), (4, "fit"): np.ones((1, 2))}
        >>> nearest_layout(layouts, (2, "fit")), nearest_layout(layouts, (3, "fit"))
        (array([[0., 0.]]), array([[1., 1.]]))
    """
    if not layouts:
        return None
    step = key[0]
    return layouts[min(layouts, key=lambda other: (abs(other[0] - step), other))]


def _silhouette(capture: Capture) -> dict[str, float]:
    """Scorer thread: a gap's fc2-space score, one thread. A failure leaves it to the full analysis."""
    try:
        with threadpool_limits(limits=1):
            return separation_scores(capture.features, None, capture.labels)
    except Exception:  # the full analysis at the next drain scores it again, and reports the error
        return {}


def _yield_cpu_to_training() -> None:
    """Gives the calling (analysis) thread the lowest CPU priority, so it runs on the cycles training
    leaves idle instead of taking a core from it: on 2 cores, training's two OpenMP threads stall
    whenever one of them loses its core (``python bench/bench_embeddings.py --part fit`` measures
    the fit with captures on and off). Linux gives each thread its own nice value; elsewhere this
    does nothing."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not permitted: slower, same results
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
