"""BackgroundAnalysis on its own: order, warm starts, failures, and cancellation."""

import threading

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
    """The real t-SNE, with each call's ``init`` and ``n_threads`` recorded."""
    calls = []
    real = analysis_module.tsne.embed_2d

    def embed_2d(features, **kwargs):
        calls.append(kwargs)
        return real(features, **kwargs)

    monkeypatch.setattr(analysis_module.tsne, "embed_2d", embed_2d)
    return calls


def test_background_analysis_returns_results_in_order_each_warm_started_from_the_last(recorded_tsne):
    queue = BackgroundAnalysis(perplexity=5, seed=0)
    for capture in captures(3):
        queue.submit(capture)
    results = queue.drain()
    queue.close()
    assert [result.capture.step for result in results] == [0, 1, 2]
    assert all(result.error is None and result.layout.shape == (40, 2) for result in results)
    assert {"silhouette", "knn_acc_2d", "trustworthiness"} <= set(results[0].scores)
    assert recorded_tsne[0]["init"] is None
    np.testing.assert_array_equal(recorded_tsne[1]["init"], results[0].layout)
    np.testing.assert_array_equal(recorded_tsne[2]["init"], results[1].layout)
    np.testing.assert_array_equal(queue.last_layout, results[2].layout)


def test_background_analysis_starts_from_a_given_layout(recorded_tsne):
    start = np.random.default_rng(1).normal(size=(40, 2)).astype(np.float32)
    queue = BackgroundAnalysis(perplexity=5, seed=0, layout=start)
    queue.submit(captures(1)[0])
    queue.drain()
    queue.close()
    np.testing.assert_array_equal(recorded_tsne[0]["init"], start)


def test_background_analysis_poll_does_not_wait_and_pending_lists_the_unreturned():
    release, drawn = threading.Event(), []

    def draw(capture, layout):
        release.wait()
        drawn.append(capture.step)

    queue = BackgroundAnalysis(perplexity=5, seed=0, draw=draw)
    for capture in captures(2):
        queue.submit(capture)
    assert queue.poll() == []  # the first is held in `draw`
    assert [capture.step for capture in queue.pending] == [0, 1]
    release.set()
    assert [result.capture.step for result in queue.drain()] == [0, 1] and drawn == [0, 1]
    assert queue.pending == [] and queue.poll() == []
    queue.close()


def test_background_analysis_close_cancels_what_is_queued():
    started, release, drawn = threading.Event(), threading.Event(), []

    def draw(capture, layout):
        started.set()
        release.wait()
        drawn.append(capture.step)

    queue = BackgroundAnalysis(perplexity=5, seed=0, draw=draw)
    for capture in captures(3):
        queue.submit(capture)
    started.wait()  # the first capture is being analysed, two are queued
    closer = threading.Thread(target=queue.close)
    closer.start()
    while queue.pending:  # close() has cancelled the queued ones once pending is empty
        threading.Event().wait(0.01)
    release.set()
    closer.join()
    assert drawn == [0]  # the running analysis finished; the queued ones never started


def test_background_analysis_failure_keeps_its_traceback_and_the_queue_goes_on(monkeypatch):
    real = analysis_module.tsne.embed_2d

    def flaky(features, **kwargs):
        if not flaky.failed:
            flaky.failed = True
            raise RuntimeError("simulated t-SNE failure")
        return real(features, **kwargs)

    flaky.failed = False
    monkeypatch.setattr(analysis_module.tsne, "embed_2d", flaky)
    queue = BackgroundAnalysis(perplexity=5, seed=0)
    for capture in captures(2):
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
