"""The exact t-SNE the callback runs on a GPU, checked here on the CPU (the same torch code): its
affinities against openTSNE's, its maps against scikit-learn's scores, and the fallback."""

import numpy as np
import pytest
import torch
from openTSNE import affinity
from test_tsne import blobs

from lenet_lightning import analysis, tsne, tsne_torch
from lenet_lightning.analysis import BackgroundAnalysis, Capture
from lenet_lightning.scores import separation_scores
from lenet_lightning.tsne import embed_2d


@pytest.mark.parametrize(("n", "perplexity"), [(200, 30.0), (61, 5.0), (12, 3.0)])
def test_joint_probabilities_equal_opentsne_affinities(n, perplexity):
    features, _ = blobs(n_per_class=n // 4 + 1, spread=2.0)
    features = features[:n]
    ours = tsne_torch.joint_probabilities(torch.from_numpy(features).double(), perplexity).numpy()
    theirs = affinity.PerplexityBasedNN(features.astype(np.float64), perplexity=perplexity, method="exact",
                                        random_state=0, verbose=False).P.toarray()
    np.testing.assert_allclose(ours, theirs, atol=1e-4 / n)
    assert ours.sum() == pytest.approx(1.0) and np.allclose(ours, ours.T)


def test_embed_2d_on_a_device_runs_exact_tsne_and_separates_blobs(monkeypatch):
    features, labels = blobs()
    calls = []
    real = tsne_torch.embed_2d_exact
    monkeypatch.setattr(tsne_torch, "embed_2d_exact", lambda *a, **k: calls.append(k["phases"]) or real(*a, **k))
    first = embed_2d(features, device="cpu")
    moved = features + np.random.default_rng(1).normal(scale=0.3, size=features.shape).astype(np.float32)
    warm = embed_2d(moved, init=first, device="cpu")
    assert calls == [[(100, 12.0), (100, None)], [(tsne.WARM_ITERATIONS, None)]]  # openTSNE's phases
    for layout, points in ((first, features), (warm, moved)):
        assert layout.shape == (200, 2) and layout.dtype == np.float32 and np.isfinite(layout).all()
        scores = separation_scores(points, layout, labels)
        assert scores["knn_acc_2d"] >= 0.98 and scores["trustworthiness"] >= 0.9
    # The warm start keeps the map's orientation, as openTSNE's does.
    a, b = first - first.mean(0), warm - warm.mean(0)
    assert np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.9


def test_embed_2d_falls_back_to_opentsne_when_the_device_fails(monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 400.00 MiB")

    monkeypatch.setattr(tsne_torch, "embed_2d_exact", out_of_memory)
    features, labels = blobs()
    with pytest.warns(UserWarning, match=r"t-SNE on cuda:0 failed \(CUDA out of memory.*using openTSNE"):
        layout = embed_2d(features, device="cuda:0")
    assert separation_scores(features, layout, labels)["knn_acc_2d"] >= 0.98


def test_background_analysis_makes_its_maps_on_its_device(monkeypatch):
    devices = []
    real = analysis.tsne.embed_2d

    def spy(features, **kwargs):
        devices.append(kwargs["device"])
        return real(features, **kwargs)

    monkeypatch.setattr(analysis.tsne, "embed_2d", spy)
    features, labels = blobs(n_per_class=10)
    for device in (None, "cpu"):
        queue = BackgroundAnalysis(perplexity=5, seed=0, device=device)
        queue.submit(Capture(0, "fit", features, labels))
        (result,) = queue.drain()
        queue.close()
        assert result.error is None and result.layout.shape == (40, 2)
    assert devices == [None, "cpu"]
