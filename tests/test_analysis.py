"""BackgroundAnalysis on its own: newest first, gaps, warm starts, failures, and cancellation.

A ``draw`` that blocks on an Event makes "analysis slower than captures" deterministic."""

import threading
import time

import numpy as np
import pytest

from lenet_lightning import analysis as analysis_module
from lenet_lightning.analysis import BackgroundAnalysis, Capture


def captures(n, points=40, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(points) % 2
    return [Capture(step, "fit", rng.normal(size=(points, 4)) + labels[:, None] * 3, labels, 0.5)
            for step in range(n)]


@pytest.fixture
def recorded_tsne(monkeypatch):
    """The real t-SNE, with each call's features and keyword arguments recorded."""
    calls = []
    real = analysis_module.tsne.embed_2d

    def embed_2d(features, **kwargs):
        calls.append({"features": features, **kwargs})
        return real(features, **kwargs)

    monkeypatch.setattr(analysis_module.tsne, "embed_2d", embed_2d)
    return calls


class HeldDraw:
    """A ``draw`` that holds the worker in the first capture's plot until ``release`` is set."""

    def __init__(self):
        self.started, self.release, self.drawn = threading.Event(), threading.Event(), []

    def __call__(self, capture, layout):
        self.started.set()
        self.release.wait()
        self.drawn.append(capture.step)


def poll_until(queue, count, timeout=60.0):
    """What ``poll`` hands back, until ``count`` results came (waits on the scores thread, not on a time)."""
    results, deadline = [], time.monotonic() + timeout
    while len(results) < count:
        assert time.monotonic() < deadline, f"only {len(results)} of {count} results came back"
        results += queue.poll()
        threading.Event().wait(0.01)
    return results


@pytest.mark.parametrize("max_waiting", [1, 2])
def test_background_analysis_maps_the_newest_first_and_fills_the_gaps_at_drain(recorded_tsne, max_waiting):
    draw = HeldDraw()
    queue = BackgroundAnalysis(perplexity=5, seed=0, draw=draw, max_waiting=max_waiting)
    series = captures(6)
    queue.submit(series[0])
    draw.started.wait()  # the worker holds capture 0: the next five come faster than it
    for capture in series[1:]:
        queue.submit(capture)
    gaps = list(range(1, 6 - max_waiting))
    assert queue.skipped == len(gaps)  # only `max_waiting` wait, the older ones became gaps
    # The gaps get their fc2-space score at once (in the scores thread), with no map and no error.
    early = poll_until(queue, len(gaps))
    assert [result.capture.step for result in early] == gaps
    assert all(r.layout is None and r.error is None and r.image is None for r in early)
    assert all(set(r.scores) == {"silhouette"} and -1 <= r.scores["silhouette"] <= 1 for r in early)
    # Nothing is finished: every capture is pending, in step order.
    assert [capture.step for capture in queue.pending] == [0, 1, 2, 3, 4, 5]

    draw.release.set()
    full = queue.poll() + queue.drain()
    queue.close()
    assert sorted(result.capture.step for result in full) == [0, 1, 2, 3, 4, 5]  # each exactly once
    assert all(r.error is None and r.layout.shape == (40, 2) and "knn_acc_2d" in r.scores for r in full)
    assert sorted(draw.drawn) == [0, 1, 2, 3, 4, 5] and queue.pending == [] and queue.poll() == []
    # t-SNE order: the newest waiting next, then at drain the rest (gaps included), newest first.
    order = [next(c.step for c in series if c.features is call["features"]) for call in recorded_tsne]
    assert order == [0, 5, 4, 3, 2, 1]
    # Each warm start is the layout of the analysed capture nearest in step (1: 0 and 2 tie, the earlier wins).
    layouts = {r.capture.step: r.layout for r in full}
    starts = {0: None, 5: 0, 4: 5, 3: 4, 2: 3, 1: 0}
    for step, call in zip(order, recorded_tsne, strict=True):
        if starts[step] is None:
            assert call["init"] is None
        else:
            np.testing.assert_array_equal(call["init"], layouts[starts[step]])
    assert sorted(queue.layouts) == [(step, "fit") for step in range(6)]


def test_background_analysis_without_overflow_skips_nothing(recorded_tsne):
    queue = BackgroundAnalysis(perplexity=5, seed=0)
    for capture in captures(2):
        queue.submit(capture)
    results = queue.drain()
    queue.close()
    assert queue.skipped == 0 and [r.capture.step for r in results] == [0, 1]
    assert all(r.layout is not None for r in results)


def test_background_analysis_starts_from_the_nearest_given_layout(recorded_tsne):
    rng = np.random.default_rng(1)
    given = {(0, "fit"): rng.normal(size=(40, 2)).astype(np.float32),
             (10, "fit"): rng.normal(size=(40, 2)).astype(np.float32)}
    queue = BackgroundAnalysis(perplexity=5, seed=0, layouts=given)
    queue.submit(Capture(7, "validate", *[getattr(captures(1)[0], name) for name in ("features", "labels")]))
    queue.drain()
    queue.close()
    np.testing.assert_array_equal(recorded_tsne[0]["init"], given[(10, "fit")])


@pytest.mark.parametrize("max_waiting", [0, -1, 1.5, True, "2"])
def test_background_analysis_rejects_a_bad_max_waiting(max_waiting):
    with pytest.raises(ValueError, match="`max_waiting`.*integer >= 1"):
        BackgroundAnalysis(perplexity=5, seed=0, max_waiting=max_waiting)


def test_background_analysis_poll_does_not_wait_and_pending_lists_the_unreturned():
    draw = HeldDraw()
    queue = BackgroundAnalysis(perplexity=5, seed=0, draw=draw)
    first, second = captures(2)
    queue.submit(first)
    draw.started.wait()
    queue.submit(second)
    assert queue.poll() == []  # the first is held in `draw`
    assert [capture.step for capture in queue.pending] == [0, 1]
    draw.release.set()
    assert [result.capture.step for result in queue.drain()] == [0, 1] and draw.drawn == [0, 1]
    assert queue.pending == [] and queue.poll() == []
    queue.close()


def test_background_analysis_close_cancels_what_is_queued_and_the_gaps():
    draw = HeldDraw()
    queue = BackgroundAnalysis(perplexity=5, seed=0, draw=draw)
    series = captures(5)
    queue.submit(series[0])
    draw.started.wait()  # the first capture is being analysed; two wait, two are gaps
    for capture in series[1:]:
        queue.submit(capture)
    closer = threading.Thread(target=queue.close)
    closer.start()
    while queue.pending:  # close() has dropped the rest once pending is empty
        threading.Event().wait(0.01)
    draw.release.set()
    closer.join()
    assert draw.drawn == [0]  # the running analysis finished; the others never started


def test_background_analysis_failure_keeps_its_traceback_and_the_queue_goes_on(monkeypatch):
    real = analysis_module.tsne.embed_2d
    series = captures(2)

    def fails_for_step_0(features, **kwargs):
        if features is series[0].features:
            raise RuntimeError("simulated t-SNE failure")
        return real(features, **kwargs)

    monkeypatch.setattr(analysis_module.tsne, "embed_2d", fails_for_step_0)
    queue = BackgroundAnalysis(perplexity=5, seed=0)
    for capture in series:
        queue.submit(capture)
    failed, ok = queue.drain()
    queue.close()
    assert failed.layout is None and "Traceback" in failed.error and "simulated t-SNE failure" in failed.error
    assert "silhouette" in failed.scores and "knn_acc_2d" not in failed.scores  # the fc2-space score is kept
    assert ok.error is None and ok.layout is not None


def test_background_analysis_failed_plot_keeps_the_layout_and_scores():
    def draw(capture, layout):
        raise OSError(28, "No space left on device")

    queue = BackgroundAnalysis(perplexity=5, seed=0, draw=draw)
    queue.submit(captures(1)[0])
    (result,) = queue.drain()
    queue.close()
    assert result.layout is not None and "knn_acc_2d" in result.scores
    assert "No space left on device" in result.error


def test_background_analysis_drain_scores_a_gap_once_when_its_silhouette_had_not_started(monkeypatch):
    """At drain, the full analysis scores a gap anyway: a silhouette still queued is cancelled."""
    draw, scored, scoring = HeldDraw(), [], threading.Event()
    mapped = {step: threading.Event() for step in range(6)}
    real_draw = draw.__call__

    def draw_and_tell(capture, layout):
        real_draw(capture, layout)
        mapped[capture.step].set()

    real_silhouette = analysis_module._silhouette

    def slow_silhouette(capture):  # the first gap's is held until gap 1 is mapped, at drain
        scored.append(capture.step)
        scoring.set()
        if capture.step == 1:
            mapped[1].wait()
        return real_silhouette(capture)

    monkeypatch.setattr(analysis_module, "_silhouette", slow_silhouette)
    queue = BackgroundAnalysis(perplexity=5, seed=0, draw=draw_and_tell)
    series = captures(6)
    queue.submit(series[0])
    draw.started.wait()
    for capture in series[1:]:
        queue.submit(capture)  # gaps 1, 2, 3
    scoring.wait()  # the scores thread is held in gap 1's silhouette; 2 and 3 wait behind it
    draw.release.set()
    results = queue.poll() + queue.drain()
    queue.close()
    assert scored == [1]  # the silhouettes of gaps 2 and 3 never ran
    assert [(r.capture.step, r.layout is None) for r in results if r.layout is None] == [(1, True)]
    assert sorted(r.capture.step for r in results if r.layout is not None) == [0, 1, 2, 3, 4, 5]
