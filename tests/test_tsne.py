import math
import warnings

import numpy as np
import pytest
from helpers import blobs
from threadpoolctl import threadpool_info

from lenet_lightning.scores import separation_scores
from lenet_lightning.tsne import effective_perplexity, embed_2d


def openmp_threads():
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "openmp"]


def test_effective_perplexity_keeps_a_value_that_fits():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert effective_perplexity(2000, 30.0) == 30.0
        assert effective_perplexity(31, 30) == 30.0


@pytest.mark.parametrize("n_samples", [2, 5, 30])
def test_effective_perplexity_too_large_warns_and_fits(n_samples):
    with pytest.warns(UserWarning, match=rf"perplexity 30\.0 .* {n_samples} points"):
        reduced = effective_perplexity(n_samples, 30.0)
    assert 0 < reduced < n_samples


@pytest.mark.parametrize(
    ("n_samples", "perplexity", "match"),
    [(1, 30.0, "`n_samples`.*got 1"), (0, 5.0, "`n_samples`.*got 0"), (10, 0.0, "`perplexity`.*got 0.0"),
     (10, -3.0, "`perplexity`.*got -3.0"), (10, math.nan, "`perplexity`.*got nan")],
)
def test_effective_perplexity_rejects_bad_inputs(n_samples, perplexity, match):
    with pytest.raises(ValueError, match=match):
        effective_perplexity(n_samples, perplexity)


def test_embed_2d_full_run_separates_blobs():
    features, labels = blobs()
    layout = embed_2d(features)
    assert layout.shape == (200, 2)
    assert layout.dtype == np.float32
    assert np.isfinite(layout).all()
    assert separation_scores(features, layout, labels)["knn_acc_2d"] >= 0.98


def test_embed_2d_warm_start_keeps_clusters_separated():
    features, labels = blobs()
    first = embed_2d(features)
    moved = features + np.random.default_rng(1).normal(scale=0.3, size=features.shape).astype(np.float32)
    warm = embed_2d(moved, init=first)
    assert warm.shape == first.shape
    assert warm.dtype == np.float32
    scores = separation_scores(moved, warm, labels)
    assert scores["knn_acc_2d"] >= 0.98
    assert scores["trustworthiness"] >= 0.9


def test_embed_2d_warm_start_follows_the_previous_layout():
    # The same features warm-started from a layout and from its 90-degree rotation give maps
    # that are rotated by 90 degrees too: the warm start keeps the orientation it is given.
    features, _ = blobs()
    first = embed_2d(features)
    rotation = np.array([[0.0, -1.0], [1.0, 0.0]], dtype=np.float32)
    plain = embed_2d(features, init=first)
    turned = embed_2d(features, init=first @ rotation.T)
    plain, turned = plain - plain.mean(0), turned - turned.mean(0)
    agreement = np.sum((plain @ rotation.T) * turned) / (np.linalg.norm(plain) * np.linalg.norm(turned))
    assert agreement > 0.9


def test_embed_2d_tiny_input_warns_and_works():
    features = np.random.default_rng(0).normal(size=(5, 10))
    with pytest.warns(UserWarning, match="perplexity 30.0"):
        first = embed_2d(features)
    with pytest.warns(UserWarning, match="perplexity 30.0"):
        warm = embed_2d(features, init=first)
    assert first.shape == warm.shape == (5, 2)
    assert np.isfinite(warm).all()


def test_embed_2d_non_finite_rows_warn_and_are_zeroed():
    features, _ = blobs(n_per_class=20)
    features[[3, 7], 2] = np.nan
    features[11, 0] = np.inf
    with pytest.warns(UserWarning, match="3 of 80 feature rows hold NaN or inf"):
        layout = embed_2d(features)
    assert layout.shape == (80, 2)
    assert np.isfinite(layout).all()


def test_embed_2d_constant_features_do_not_crash():
    layout = embed_2d(np.zeros((40, 10)))
    assert layout.shape == (40, 2)
    assert np.isfinite(layout).all()


def test_embed_2d_limits_threads_for_the_call_only():
    before = openmp_threads()
    features, _ = blobs(n_per_class=20)
    embed_2d(features, n_threads=1)
    assert openmp_threads() == before


@pytest.mark.parametrize(
    ("features", "kwargs", "match"),
    [
        (np.zeros(10), {}, r"`features`.*shape \(10,\)"),
        (np.zeros((1, 10)), {}, r"`features`.*shape \(1, 10\)"),
        (np.zeros((20, 0)), {}, r"`features`.*shape \(20, 0\)"),
        (np.ones((20, 3)), {"init": np.zeros((19, 2))}, r"`init`.*\(20, 2\).*shape \(19, 2\)"),
        (np.ones((20, 3)), {"init": np.full((20, 2), np.nan)}, r"`init`.*non-finite"),
        (np.ones((20, 3)), {"max_iter": 1}, r"`max_iter`.*at least 2.*got 1"),
        (np.ones((20, 3)), {"init": np.random.default_rng(0).normal(size=(20, 2)), "max_iter": 0},
         r"`max_iter`.*at least 1.*got 0"),
        (np.ones((20, 3)), {"n_threads": 0}, r"`n_threads`.*got 0"),
        (np.ones((20, 3)), {"perplexity": -1.0}, r"`perplexity`.*got -1.0"),
    ],
)
def test_embed_2d_rejects_bad_inputs(features, kwargs, match):
    with pytest.raises(ValueError, match=match):
        embed_2d(features, **kwargs)
