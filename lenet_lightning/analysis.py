"""The background analysis of captures: t-SNE (warm-started), 2-D scores and the map's plot.

:class:`BackgroundAnalysis` owns everything this needs: the worker thread (at the lowest CPU
priority), how many threads its t-SNE may use, and the previous capture's layout, from which each
t-SNE starts. Its methods are called from one thread, the training loop's; results come back there,
in submission order, from :meth:`BackgroundAnalysis.poll` and :meth:`BackgroundAnalysis.drain`.
No Lightning here.
"""

from __future__ import annotations

import contextlib
import os
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from lenet_lightning import tsne

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
    features: np.ndarray
    labels: np.ndarray
    probe_acc: float | None = None

    @property
    def key(self) -> CaptureKey:
        return self.step, self.stage


@dataclass(frozen=True)
class Analysis:
    """What the analysis of one capture found: ``scores`` (``silhouette``, and ``knn_acc_2d`` and
    ``trustworthiness`` when the 2-D ``layout`` was made), and the error's traceback if a step failed."""

    capture: Capture
    scores: dict[str, float] = field(default_factory=dict)
    layout: np.ndarray | None = None
    error: str | None = None
    image: np.ndarray | None = None  # what `draw` returned: the plot as (H, W, 3) uint8, for TensorBoard


Draw = Callable[[Capture, np.ndarray], "np.ndarray | None"]


class BackgroundAnalysis:
    """Analyses captures one after another in a low-priority thread, each t-SNE warm-started from the
    previous capture's layout.

    Args:
        perplexity: t-SNE perplexity (it must fit the probe size: see :func:`tsne.effective_perplexity`).
        seed: Seeds t-SNE.
        draw: Called in the worker with each capture and its layout, to save its plot; what it returns
            (the plot as an image, or ``None``) is the analysis' ``image``. A failure there is
            reported in the capture's ``error`` and costs it the plot only.
        layout: The layout the first t-SNE starts from (e.g. restored from a checkpoint).

    Example:
        >>> queue = BackgroundAnalysis(perplexity=5, seed=0)
        >>> features, labels = np.random.default_rng(0).normal(size=(40, 3)), np.arange(40) % 2
        >>> queue.submit(Capture(0, "fit", features, labels))
        >>> [(a.capture.key, a.layout.shape) for a in queue.drain()]
        [((0, 'fit'), (40, 2))]
        >>> queue.close()
    """

    def __init__(self, perplexity: float, seed: int, draw: Draw | None = None,
                 layout: np.ndarray | None = None) -> None:
        self.perplexity, self.seed, self.draw = perplexity, seed, draw
        self._lock = threading.Lock()  # guards the two fields below, shared with the worker
        self._last_layout = layout
        self._threads = 1
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tsne",
                                            initializer=_yield_cpu_to_training)
        self._queue: list[tuple[Capture, Future[Analysis]]] = []  # main thread only

    @property
    def last_layout(self) -> np.ndarray | None:
        """The layout of the latest capture analysed (the next t-SNE starts from it)."""
        with self._lock:
            return self._last_layout

    @property
    def pending(self) -> list[Capture]:
        """Captures submitted whose analysis has not been handed back by :meth:`poll` or :meth:`drain`."""
        return [capture for capture, _ in self._queue]

    def submit(self, capture: Capture) -> None:
        """Queues ``capture``; it is analysed after every capture submitted before it."""
        self._queue.append((capture, self._executor.submit(self._analyse, capture)))

    def poll(self) -> list[Analysis]:
        """The analyses finished so far, in submission order; does not wait."""
        done = 0
        while done < len(self._queue) and self._queue[done][1].done():
            done += 1
        finished, self._queue = self._queue[:done], self._queue[done:]
        return [future.result() for _, future in finished]

    def drain(self) -> list[Analysis]:
        """Waits for every queued analysis, giving it every core (training is paused or over)."""
        with self._lock:
            self._threads = os.cpu_count() or 1
        try:
            finished, self._queue = self._queue, []
            return [future.result() for _, future in finished]
        finally:
            with self._lock:
                self._threads = 1

    def close(self) -> None:
        """Cancels queued analyses and waits for the one running, if any: after an exception the run
        should end now, not after the queue. The captures left are dropped."""
        for _, future in self._queue:
            future.cancel()
        self._queue = []
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _analyse(self, capture: Capture) -> Analysis:
        """Worker thread: t-SNE, scores, then the plot. A failure costs this capture what it stopped."""
        with self._lock:
            threads, init = self._threads, self._last_layout
        try:
            with threadpool_limits(limits=threads, user_api="openmp"):
                layout = tsne.embed_2d(capture.features, init=init, perplexity=self.perplexity, seed=self.seed,
                                       n_threads=threads)
                scores = tsne.separation_scores(capture.features, layout, capture.labels)
        except Exception:  # reported by the main thread, with this traceback
            error = traceback.format_exc()
            try:
                scores = tsne.separation_scores(capture.features, None, capture.labels)
            except Exception:
                scores = {}
            return Analysis(capture, scores, None, error)
        with self._lock:
            self._last_layout = layout
        try:
            image = self.draw(capture, layout) if self.draw is not None else None
        except Exception:
            return Analysis(capture, scores, layout, traceback.format_exc())
        return Analysis(capture, scores, layout, image=image)


def _yield_cpu_to_training() -> None:
    """Gives the calling (analysis) thread the lowest CPU priority, so it runs on the cycles training
    leaves idle instead of taking a core from it: on 2 cores, training's two OpenMP threads stall
    whenever one of them loses its core (``python bench/bench_embeddings.py --part fit`` measures
    the fit with captures on and off). Linux gives each thread its own nice value; elsewhere this
    does nothing."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not permitted: slower, same results
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
