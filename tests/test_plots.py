import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.image import imread

from lenet_lightning import plots
from lenet_lightning.plots import (
    PLOT_FORMATS,
    plot_class_vectors,
    plot_data_map,
    plot_embedding,
    plot_evolution,
    plot_hardest,
    render_figure,
    save_figure,
    scatter_style,
)

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def layout_and_labels(n=100, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    return rng.normal(size=(n, 2)) + 5.0 * labels[:, None], labels


def legend_texts(legend):
    return [text.get_text() for text in legend.get_texts()]


def test_plot_embedding_legend_contains_class_names():
    layout, labels = layout_and_labels()
    fig = plot_embedding(layout, labels, CLASS_NAMES, title="step 300 · probe acc 0.912")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert legend_texts(ax.get_legend()) == CLASS_NAMES
    assert ax.get_title() == "step 300 · probe acc 0.912"


def test_plot_embedding_colours_each_class_the_same_in_every_plot():
    layout, labels = layout_and_labels()
    only_odd = labels % 2 == 1  # a plot where half the classes have no points
    figures = [plot_embedding(layout, labels, CLASS_NAMES),
               plot_embedding(layout[only_odd], labels[only_odd], CLASS_NAMES)]
    for fig in figures:
        for index, handle in enumerate(fig.axes[0].get_legend().legend_handles):
            assert to_hex(handle.get_facecolor()[0]) == plots.PALETTE[index]


def test_plot_embedding_draws_into_the_given_ax():
    fig = Figure()
    left, right = fig.subplots(1, 2)
    layout, labels = layout_and_labels()
    assert plot_embedding(layout, labels, CLASS_NAMES, title="right", ax=right) is fig
    assert right.get_title() == "right"
    assert len(right.collections) == 10
    assert not left.collections


def test_plots_into_a_subfigure_return_the_top_level_figure():
    fig = Figure()
    left, right = fig.subfigures(1, 2)
    layout, labels = layout_and_labels()
    assert plot_embedding(layout, labels, CLASS_NAMES, ax=left.add_subplot()) is fig
    assert plot_class_vectors(np.eye(10, 1024), CLASS_NAMES, ax=right.add_subplot()) is fig
    assert len(right.axes) == 2  # the colour bar stays in its subfigure


@pytest.mark.parametrize(
    ("layout", "labels", "match"),
    [
        (np.zeros((10, 3)), np.arange(10), r"`layout`.*\(N, 2\).*\(10, 3\)"),
        (np.zeros((10, 2)), np.arange(9), r"`labels`.*\(10,\).*\(9,\)"),
        (np.zeros((10, 2)), np.arange(10) + 1, r"`labels`.*\[0, 10\).*\[1, 10\]"),
        (np.zeros((10, 2)), np.arange(10) - 1, r"`labels`.*\[-1, 8\]"),
        (np.zeros((10, 2)), np.linspace(0, 1, 10), r"`labels`.*integer.*float64"),
    ],
)
def test_plot_embedding_rejects_bad_inputs(layout, labels, match):
    with pytest.raises(ValueError, match=match):
        plot_embedding(layout, labels, CLASS_NAMES)


@pytest.mark.parametrize(("n_layouts", "max_cols", "grid"), [(1, 5, (1, 1)), (7, 5, (2, 5)), (10, 5, (2, 5)),
                                                              (3, 2, (2, 2))])
def test_plot_evolution_has_one_axes_per_capture(n_layouts, max_cols, grid):
    layout, labels = layout_and_labels()
    titles = [f"step {100 * i}" for i in range(n_layouts)]
    layouts = [layout + i for i in range(n_layouts)]
    fig = plot_evolution(layouts, labels, CLASS_NAMES, titles, max_cols=max_cols)
    assert len(fig.axes) == n_layouts
    assert [ax.get_title() for ax in fig.axes] == titles
    assert all(ax.get_subplotspec().get_geometry()[:2] == grid for ax in fig.axes)
    (legend,) = fig.legends  # one legend for the whole figure
    assert legend_texts(legend) == CLASS_NAMES
    assert all(ax.get_legend() is None for ax in fig.axes)


@pytest.mark.parametrize(
    ("n_layouts", "n_titles", "max_cols", "match"),
    [(0, 0, 5, "`layouts`.*none"), (3, 2, 5, "`titles`.*3 entries.*got 2"), (3, 3, 0, "`max_cols`.*got 0")],
)
def test_plot_evolution_rejects_bad_inputs(n_layouts, n_titles, max_cols, match):
    layout, labels = layout_and_labels()
    with pytest.raises(ValueError, match=match):
        plot_evolution([layout] * n_layouts, labels, CLASS_NAMES, ["t"] * n_titles, max_cols=max_cols)


def test_scatter_style_markers_shrink_and_fade_as_points_get_denser():
    large, panel = 288.0**2, 150.0**2  # pt²: a single plot's axes, an evolution panel's
    styles = [scatter_style(n, large) for n in (300, 2000, 10_000)]
    sizes, alphas = zip(*styles, strict=True)
    assert sizes[0] > sizes[1] > sizes[2] and alphas[0] > alphas[1] > alphas[2]
    assert alphas[0] == 1.0  # a few hundred points: opaque
    panel_size, panel_alpha = scatter_style(2000, panel)
    assert panel_size < sizes[1] and panel_alpha < alphas[1]  # the same points on a smaller axes
    for n, area in [(1, 1e9), (0, 1.0), (10**7, 1.0)]:  # extremes stay in range
        size, alpha = scatter_style(n, area)
        assert plots.SCATTER_SIZE_RANGE[0] <= size <= plots.SCATTER_SIZE_RANGE[1]
        assert plots.SCATTER_ALPHA_MIN <= alpha <= 1.0


def scatter_styles(fig):
    """(size, alpha) of every class's scatter in a figure."""
    return {(float(c.get_sizes()[0]), c.get_alpha()) for ax in fig.axes for c in ax.collections}


def test_plots_scale_markers_with_the_number_of_points_and_keep_the_legend_opaque():
    legends, styles = [], []
    for n in (300, 2000, 10_000):
        layout, labels = layout_and_labels(n)
        single = plot_embedding(layout, labels, CLASS_NAMES)
        evolution = plot_evolution([layout, layout], labels, CLASS_NAMES, ["a", "b"])
        ((size, alpha),) = scatter_styles(single)  # one style for every class
        ((panel_size, panel_alpha),) = scatter_styles(evolution)
        assert panel_size < size and panel_alpha <= alpha  # smaller panels, smaller markers
        styles.append((size, alpha))
        legends += [single.axes[0].get_legend(), evolution.legends[0]]
    assert styles[0][0] > styles[1][0] > styles[2][0]
    assert styles[0][1] > styles[1][1] > styles[2][1]
    # Whatever the scatter's size and alpha, the legend's markers are the same, opaque ones.
    handle_styles = {(float(h.get_sizes()[0]), h.get_alpha(), float(h.get_facecolor()[0][3]))
                     for legend in legends for h in legend.legend_handles}
    assert handle_styles == {(plots.LEGEND_MARKER_SIZE, 1.0, 1.0)}


def test_save_figure_of_10k_points_as_svg_or_pdf_holds_the_scatter_as_an_image(tmp_path):
    # A vector marker costs about 90 bytes in SVG (926 kB for 10,000 points before this change);
    # rasterized, the scatter is one image of the axes, about what the PNG of the figure costs
    # whatever the number of points.
    layout, labels = layout_and_labels(10_000)
    fig = plot_embedding(layout, labels, CLASS_NAMES)
    assert all(c.get_rasterized() for c in fig.axes[0].collections)
    sizes = {}
    for fmt in ("png", "svg", "pdf"):
        save_figure(plot_embedding(layout, labels, CLASS_NAMES), tmp_path / f"plot.{fmt}")
        sizes[fmt] = (tmp_path / f"plot.{fmt}").stat().st_size
    assert sizes["svg"] < 2 * sizes["png"] and sizes["pdf"] < 2 * sizes["png"], sizes
    small, small_labels = layout_and_labels(300)  # few points stay vector
    assert not any(c.get_rasterized() for c in plot_embedding(small, small_labels, CLASS_NAMES).axes[0].collections)


def test_plot_class_vectors_shows_cosine_similarity_of_fc2_weight():
    weight = np.random.default_rng(0).normal(size=(10, 1024))
    weight[3] = 2.0 * weight[1]  # same direction, twice the length: cosine 1
    fig = plot_class_vectors(weight, CLASS_NAMES)
    heatmap, pca, colorbar = fig.axes
    assert colorbar.get_label() == "<colorbar>"
    (image,) = heatmap.get_images()
    cosine = np.asarray(image.get_array())
    assert cosine.shape == (10, 10)
    np.testing.assert_allclose(np.diag(cosine), 1.0)
    np.testing.assert_allclose(cosine, cosine.T)
    assert cosine[1, 3] == pytest.approx(1.0)
    assert abs(cosine[0, 2]) < 0.2  # random 1024-d vectors are nearly orthogonal
    assert [t.get_text() for t in heatmap.get_yticklabels()] == CLASS_NAMES
    assert len(heatmap.texts) == 100  # every cell annotated
    assert [t.get_text() for t in pca.texts] == CLASS_NAMES
    assert pca.get_xlabel().startswith("PC1")


def test_plot_class_vectors_into_the_given_ax_draws_the_heatmap_only():
    fig = Figure()
    ax = fig.add_subplot()
    assert plot_class_vectors(np.eye(10, 1024), CLASS_NAMES, ax=ax) is fig
    np.testing.assert_allclose(np.asarray(ax.get_images()[0].get_array()), np.eye(10))
    assert len(fig.axes) == 2  # heatmap and its colour bar


@pytest.mark.parametrize(
    ("weight", "match"),
    [
        (np.zeros((9, 1024)), r"`weight`.*\(10,.*shape \(9, 1024\)"),
        (np.zeros(1024), r"`weight`.*shape \(1024,\)"),
        (np.full((10, 4), np.nan), r"`weight`.*finite"),
    ],
)
def test_plot_class_vectors_rejects_bad_weight(weight, match):
    with pytest.raises(ValueError, match=match):
        plot_class_vectors(weight, CLASS_NAMES)


def test_save_figure_writes_a_readable_png(tmp_path):
    layout, labels = layout_and_labels()
    fig = plot_embedding(layout, labels, CLASS_NAMES, title="step 0")
    path = tmp_path / "nested" / "step_000000.png"
    save_figure(fig, path, dpi=50)
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0  # not blank
    assert sorted(p.name for p in path.parent.iterdir()) == ["step_000000.png"]  # no temp file left
    assert not fig.axes  # cleared
    assert path.stat().st_mode & 0o777 == 0o644  # readable by a TensorBoard server run as another user


def test_save_figure_replaces_an_existing_png(tmp_path):
    path = tmp_path / "tsne_evolution.png"
    layout, labels = layout_and_labels()
    save_figure(plot_evolution([layout], labels, CLASS_NAMES, ["step 0"]), path)
    first = path.read_bytes()
    save_figure(plot_evolution([layout] * 3, labels, CLASS_NAMES, ["a", "b", "c"]), path)
    assert path.read_bytes() != first
    assert imread(path).shape[1] > imread(path).shape[0]  # now a wide, three-panel image
    assert [p.name for p in tmp_path.iterdir()] == ["tsne_evolution.png"]


def test_save_figure_failure_keeps_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "plot.png"
    path.write_bytes(b"old")

    class Broken(Figure):
        def savefig(self, *args, **kwargs):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_figure(Broken(), path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_save_figure_refuses_to_replace_what_is_not_a_regular_file(tmp_path, kind):
    path = tmp_path / "target.png"
    path.mkdir() if kind == "directory" else os.mkfifo(path)
    with pytest.raises(ValueError, match="`path`.*regular file.*target.png"):
        save_figure(Figure(), path)
    assert path.is_dir() if kind == "directory" else path.is_fifo()
    assert [p.name for p in tmp_path.iterdir()] == ["target.png"]


def test_plots_module_never_imports_pyplot(tmp_path):
    # Load plots.py on its own, so the check is not about what the rest of the package imports.
    source = Path(plots.__file__)
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('plots', {str(source)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "import numpy as np\n"
        "fig = module.plot_embedding(np.zeros((4, 2)), np.arange(4) % 2, ['a', 'b'])\n"
        "module.save_figure(fig, sys.argv[1])\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "plot.png")], check=True, timeout=60)
    assert imread(tmp_path / "plot.png").size > 0


@pytest.mark.parametrize(("fmt", "magic"), [("png", b"\x89PNG"), ("svg", b"<?xml"), ("pdf", b"%PDF")])
def test_save_figure_writes_the_format_of_the_suffix_or_the_one_asked(tmp_path, fmt, magic):
    layout, labels = layout_and_labels()
    save_figure(plot_embedding(layout, labels, CLASS_NAMES), tmp_path / f"plot.{fmt}")
    save_figure(plot_embedding(layout, labels, CLASS_NAMES), tmp_path / "plot.bin", format=fmt.upper())
    assert (tmp_path / f"plot.{fmt}").read_bytes().startswith(magic)
    assert (tmp_path / "plot.bin").read_bytes().startswith(magic)
    assert fmt in PLOT_FORMATS


def test_save_figure_dpi_sets_the_png_size(tmp_path):
    layout, labels = layout_and_labels()
    for dpi in (50, 200):
        save_figure(plot_embedding(layout, labels, CLASS_NAMES), tmp_path / f"{dpi}.png", dpi=dpi)
    small, large = imread(tmp_path / "50.png"), imread(tmp_path / "200.png")
    assert large.shape[0] == pytest.approx(4 * small.shape[0], abs=4)


@pytest.mark.parametrize(
    ("path", "kwargs", "match"),
    [
        ("plot.jpg", {}, "plot format to be one of png, svg, pdf, but got 'jpg'"),
        ("plot", {}, "plot format"),
        ("plot.png", {"format": "eps"}, "but got 'eps'"),
        ("plot.png", {"dpi": 0}, "`dpi` to be a positive integer"),
        ("plot.png", {"dpi": 72.0}, "`dpi`"),
    ],
)
def test_save_figure_rejects_bad_format_or_dpi(tmp_path, path, kwargs, match):
    layout, labels = layout_and_labels()
    with pytest.raises(ValueError, match=match):
        save_figure(plot_embedding(layout, labels, CLASS_NAMES), tmp_path / path, **kwargs)
    assert not list(tmp_path.iterdir())


def test_render_figure_matches_the_saved_png_and_keeps_the_figure(tmp_path):
    layout, labels = layout_and_labels()
    fig = plot_embedding(layout, labels, CLASS_NAMES, title="step 0")
    image = render_figure(fig, dpi=60)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.std() > 0
    assert fig.axes and fig.dpi != 60  # untouched: it can still be saved
    save_figure(fig, tmp_path / "plot.png", dpi=60)
    saved = imread(tmp_path / "plot.png")
    assert saved.shape[:2] == image.shape[:2]


# How the representation changes: CKA heatmap and dynamics figure, at 3 and at 60 captures.

from lenet_lightning.plots import plot_cka_matrix, plot_dynamics  # noqa: E402


def dynamics_columns(n_captures, seed=0):
    """Made-up columns of a run that settles: scores rising to 1, NC1 falling over decades."""
    rng = np.random.default_rng(seed)
    rising = 1.0 - np.geomspace(0.9, 0.001, n_captures)
    return {
        "probe_acc": list(0.1 + 0.85 * rising),
        "cka_prev": [None, *rising[1:]],  # the first capture has no previous one
        "knn_overlap_prev": [float("nan"), *(0.8 * rising[1:])],
        "cka_final": [*rising[:-1], 1.0],
        "nc1": list(np.geomspace(30.0, 0.01, n_captures) * rng.uniform(0.9, 1.1, n_captures)),
    }


@pytest.mark.parametrize("n_captures", [3, 60])
def test_plot_cka_matrix_shows_every_capture_with_thinned_step_labels(n_captures):
    steps = [25 * i for i in range(n_captures)]
    matrix = np.random.default_rng(0).uniform(size=(n_captures, n_captures))
    fig = plot_cka_matrix(steps, matrix, title="fc2")
    heatmap, colorbar = fig.axes
    assert colorbar.get_ylabel() == "linear CKA"
    (image,) = heatmap.get_images()
    np.testing.assert_array_equal(np.asarray(image.get_array()), matrix)
    assert image.get_clim() == (0.0, 1.0)
    labels = [t.get_text() for t in heatmap.get_xticklabels()]
    assert labels[0] == "0" and labels[-1] == str(steps[-1])
    if n_captures == 3:
        assert labels == ["0", "25", "50"] and len(heatmap.texts) == 9  # every cell annotated
    else:
        assert len(labels) <= plots.MAX_STEP_TICKS and not heatmap.texts
    assert heatmap.get_title() == "fc2"
    image = render_figure(fig, dpi=50)
    assert image.std() > 0


def test_plot_cka_matrix_draws_into_the_given_ax_and_rejects_a_bad_matrix():
    fig = Figure()
    left, right = fig.subplots(1, 2)
    assert plot_cka_matrix([0, 10], np.eye(2), ax=right) is fig
    assert right.get_images() and not left.get_images()
    with pytest.raises(ValueError, match=r"`matrix`.*\(3, 3\).*\(2, 2\)"):
        plot_cka_matrix([0, 10, 20], np.eye(2))
    with pytest.raises(ValueError, match="`steps`.*none"):
        plot_cka_matrix([], np.zeros((0, 0)))


def line_labels(ax):
    return [line.get_label() for line in ax.get_lines()]


@pytest.mark.parametrize("n_captures", [3, 60])
def test_plot_dynamics_draws_each_score_skips_missing_values_and_marks_the_settled_step(n_captures):
    steps = [50 * i for i in range(n_captures)]
    columns = dynamics_columns(n_captures)
    settled = steps[-2]
    fig = plot_dynamics(steps, columns, settled_step=settled, title="fc2")
    scores_ax, nc1_ax = fig.axes
    assert line_labels(scores_ax) == ["probe accuracy", "CKA to previous capture", "k-NN overlap with previous",
                                      "CKA to final capture", "threshold 0.95", f"settled at step {settled}"]
    lines = dict(zip(line_labels(scores_ax), scores_ax.get_lines(), strict=True))
    assert list(lines["probe accuracy"].get_xdata()) == steps
    assert list(lines["CKA to previous capture"].get_xdata()) == steps[1:]  # None skipped
    assert list(lines["k-NN overlap with previous"].get_xdata()) == steps[1:]  # nan skipped
    np.testing.assert_allclose(lines["CKA to final capture"].get_ydata(), columns["cka_final"])
    assert list(lines["threshold 0.95"].get_ydata()) == [0.95, 0.95]
    assert list(lines[f"settled at step {settled}"].get_xdata()) == [settled, settled]
    assert nc1_ax.get_yscale() == "log"
    (nc1_line, marker) = nc1_ax.get_lines()
    np.testing.assert_allclose(nc1_line.get_ydata(), columns["nc1"])
    assert list(marker.get_xdata()) == [settled, settled]
    assert f"settled at step {settled}" in scores_ax.get_title() and scores_ax.get_title().startswith("fc2")
    image = render_figure(fig, dpi=50)
    assert image.std() > 0


def test_plot_dynamics_not_settled_and_with_missing_columns_says_so():
    steps = [0, 100, 200]
    fig = plot_dynamics(steps, {"cka_prev": [None, 0.5, 0.7], "cka_final": [0.2, 0.6, 1.0]}, settled_step=None,
                        threshold=0.9)
    scores_ax, nc1_ax = fig.axes
    assert line_labels(scores_ax) == ["CKA to previous capture", "CKA to final capture", "threshold 0.9"]
    assert "not settled" in scores_ax.get_title()
    assert line_labels(nc1_ax) == ["NC1"] and nc1_ax.get_lines()[0].get_xdata().size == 0  # no marker, no NC1
    assert [t.get_text() for t in nc1_ax.texts] == ["NC1 not available"]
    assert render_figure(fig, dpi=50).std() > 0


def test_plot_dynamics_rejects_a_column_of_the_wrong_length():
    with pytest.raises(ValueError, match=r"column 'nc1' to have 3 values.*got 2"):
        plot_dynamics([0, 1, 2], {"nc1": [1.0, 2.0]})
    with pytest.raises(ValueError, match="`steps`.*none"):
        plot_dynamics([], {})


# --- per-point figures


def data_map_inputs(n=400, seed=0):
    rng = np.random.default_rng(seed)
    mean = rng.random(n)
    std = rng.random(n) * 0.5
    fraction = rng.random(n)
    return mean, std, fraction


def test_plot_data_map_places_points_at_std_and_mean_coloured_by_fraction_correct():
    from lenet_lightning.points import data_map_regions

    mean, std, fraction = data_map_inputs()
    mean[0] = np.nan  # a point without a finite p_true is left out
    fig = plot_data_map(mean, std, fraction)
    ax, colorbar_ax = fig.axes
    (scatter,) = ax.collections
    offsets = np.asarray(scatter.get_offsets())
    kept = ~np.isnan(mean)
    assert len(offsets) == kept.sum()
    drawn = sorted(zip(offsets[:, 0], offsets[:, 1], scatter.get_array(), strict=True))
    np.testing.assert_allclose(drawn, sorted(zip(std[kept], mean[kept], fraction[kept], strict=True)))
    assert np.all(np.diff(scatter.get_array()) <= 0)  # the rarely-correct drawn last, on top
    assert scatter.get_clim() == (0.0, 1.0)
    assert colorbar_ax.get_ylabel() == "fraction of captures correct"
    regions = data_map_regions(mean[kept], std[kept])
    texts = [text.get_text() for text in ax.texts]
    for name in ("easy-to-learn", "hard-to-learn", "ambiguous"):
        assert f"{name}\n{np.count_nonzero(regions == name):,} points" in texts
    assert ax.get_xlim() == (0.0, 0.5) and ax.get_ylim() == (0.0, 1.0)


def test_plot_data_map_of_10k_points_uses_small_translucent_rasterized_markers():
    mean, std, fraction = data_map_inputs(n=10_000)
    fig = plot_data_map(mean, std, fraction)
    (scatter,) = fig.axes[0].collections
    assert scatter.get_sizes()[0] < 5.0 and scatter.get_alpha() < 0.8
    assert scatter.get_rasterized()
    render_figure(fig, dpi=40)


def test_plot_data_map_draws_into_the_given_ax():
    fig = Figure()
    left, right = fig.subplots(1, 2)
    assert plot_data_map(*data_map_inputs(), ax=right) is fig
    assert not left.collections and right.collections


def test_plot_data_map_rejects_arrays_of_different_shapes():
    mean, std, fraction = data_map_inputs()
    with pytest.raises(ValueError, match="one shape"):
        plot_data_map(mean, std[:-1], fraction)


@pytest.mark.parametrize("shape", [(30, 28, 28), (7, 8, 8, 3)])
def test_plot_hardest_shows_each_image_with_its_title(shape):
    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    titles = [f"{i % 10} → {(i + 1) % 10}" for i in range(len(images))]
    fig = plot_hardest(images, titles)
    assert [ax.get_title() for ax in fig.axes] == titles
    for ax, image in zip(fig.axes, images, strict=True):
        np.testing.assert_array_equal(ax.images[0].get_array(), image)
    rows = {round(ax.get_position().y0, 3) for ax in fig.axes}
    assert len(rows) == -(-len(images) // 10)


@pytest.mark.parametrize(
    ("images", "titles", "match"),
    [
        (np.zeros((0, 4, 4), np.uint8), [], "n > 0"),
        (np.zeros((2, 4, 4), np.float32), ["a", "b"], "uint8"),
        (np.zeros((2, 4, 4, 2), np.uint8), ["a", "b"], "shape"),
        (np.zeros((2, 4, 4), np.uint8), ["a"], "one per image"),
    ],
)
def test_plot_hardest_rejects_bad_inputs(images, titles, match):
    with pytest.raises(ValueError, match=match):
        plot_hardest(images, titles)
