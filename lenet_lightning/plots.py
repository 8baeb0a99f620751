"""Figures of t-SNE layouts, of the ``fc2`` class vectors, and of how the representation changes.

Every function builds a :class:`matplotlib.figure.Figure` directly, never through pyplot: no
global state, no GUI backend, safe in the projector callback's background thread. Plot functions
take an optional ``ax`` and return the figure; :func:`save_figure` writes it atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from typing import Literal, get_args

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from PIL import Image

from lenet_lightning.atomic import write_atomically

# Matplotlib's "tab10", written out so that class c has the same colour in every figure and
# every matplotlib version; class c >= 10 reuses colour c % 10.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip


def class_color(class_index: int) -> str:
    """Returns the fixed colour of class ``class_index``.

    Example:
        >>> class_color(0), class_color(10)
        ('#1f77b4', '#1f77b4')
    """
    return PALETTE[class_index % len(PALETTE)]


# Scatter markers, in pt² (a marker's area): from SCATTER_SIZE_RANGE[1] for a few hundred points on
# a large axes down to SCATTER_SIZE_RANGE[0] for 10,000 on an evolution panel (see scatter_style).
SCATTER_SIZE_RANGE = (1.0, 20.0)
SCATTER_ALPHA_MIN = 0.3  # the most translucent markers; legend markers stay opaque
LEGEND_MARKER_SIZE = 30.0  # pt²
RASTERIZE_ABOVE = 2000  # points per axes above which SVG and PDF files hold the scatter as an image


def scatter_style(n_points: int, axes_area: float) -> tuple[float, float]:
    """Returns a marker size (pt²) and alpha for ``n_points`` scattered on ``axes_area`` pt².

    Both fall with the density ``n_points / axes_area``: a few hundred points on a large axes get
    big opaque dots, 10,000 on a small evolution panel get small translucent ones, so dense
    clusters show their structure instead of a solid blob. Size falls as ``density ** -0.54`` (so
    the ink per area still grows with ``N`` and sparse outliers stay visible) and alpha as
    ``density ** -0.29``, clipped to ``SCATTER_SIZE_RANGE`` and ``[SCATTER_ALPHA_MIN, 1]``. The
    constants were chosen by eye on 300, 2,000 and 10,000 points of a t-SNE map of Fashion-MNIST
    test logits, single plot and evolution panels, at 100 dpi: about 17, 6 and 2.5 pt² with alpha
    1, 0.8 and 0.5 on a single plot's axes.

    Args:
        n_points: Points on the axes, at least 0.
        axes_area: Area of the axes in pt² (a 4 x 4 inch axes has 288² pt²).

    Returns:
        ``(size, alpha)`` for :meth:`matplotlib.axes.Axes.scatter`'s ``s`` and ``alpha``.

    Example:
        >>> scatter_style(300, 288.0**2)
        (16.66, 1.0)
        >>> scatter_style(10_000, 288.0**2)
        (2.51, 0.5)
    """
    density = max(n_points, 1) / max(axes_area, 1.0)  # points per pt²
    size = float(np.clip(0.8 * density**-0.54, *SCATTER_SIZE_RANGE))
    alpha = float(np.clip((0.011 / density) ** 0.29, SCATTER_ALPHA_MIN, 1.0))
    return round(size, 2), round(alpha, 2)  # equal panels get equal styles despite float noise in their sizes


def plot_embedding(
    layout: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    title: str = "",
    ax: Axes | None = None,
) -> Figure:
    """Scatters a 2-D layout coloured by class, with a legend of class names.

    Args:
        layout: ``(N, 2)`` t-SNE layout.
        labels: ``(N,)`` integer class indices into ``class_names``.
        class_names: One name per class, in class-index order.
        title: Axes title, e.g. ``"step 300 · probe acc 0.912"``.
        ax: Axes to draw into; a new figure when ``None``.

    Returns:
        The figure that holds the axes.

    Raises:
        ValueError: If the shapes do not match or a label is not a valid class index.

    Example:
        >>> layout = np.random.default_rng(0).normal(size=(30, 2))
        >>> fig = plot_embedding(layout, np.arange(30) % 3, ["a", "b", "c"], title="step 0")
        >>> [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        ['a', 'b', 'c']
    """
    labels = _check_layout(layout, labels, class_names)
    if ax is None:
        ax = Figure(figsize=(6.4, 5.0), layout="constrained").add_subplot()
    _scatter_classes(ax, np.asarray(layout), labels, class_names)
    ax.set_title(title)
    _opaque_legend(ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize="small"))
    return _root_figure(ax)


def plot_evolution(
    layouts: Sequence[np.ndarray],
    labels: np.ndarray,
    class_names: Sequence[str],
    titles: Sequence[str],
    *,
    max_cols: int = 5,
) -> Figure:
    """Draws every capture's layout side by side, row-major in a grid, with one shared legend.

    Args:
        layouts: One ``(N, 2)`` layout per capture, all of the same probe points.
        labels: ``(N,)`` integer class indices into ``class_names``.
        class_names: One name per class.
        titles: One title per layout, e.g. ``"step 300 · probe acc 0.912"``.
        max_cols: Most layouts per row.

    Returns:
        A figure with exactly one axes per layout.

    Raises:
        ValueError: If there are no layouts, ``titles`` does not match them in length,
            ``max_cols < 1``, or a layout does not match ``labels``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> layouts = [rng.normal(size=(30, 2)) for _ in range(7)]
        >>> fig = plot_evolution(layouts, np.arange(30) % 3, "abc", [f"step {i}" for i in range(7)])
        >>> len(fig.axes)
        7
    """
    if len(layouts) == 0:
        raise ValueError("Expected `layouts` to hold at least one layout, but got none.")
    if len(titles) != len(layouts):
        raise ValueError(
            f"Expected `titles` to have {len(layouts)} entries, one per layout, but got {len(titles)}."
        )
    if max_cols < 1:
        raise ValueError(f"Expected `max_cols` to be a positive integer, but got {max_cols}.")
    checked = [_check_layout(layout, labels, class_names) for layout in layouts]
    n_cols = min(len(layouts), max_cols)
    n_rows = -(-len(layouts) // n_cols)
    fig = Figure(figsize=(2.8 * n_cols + 1.6, 2.8 * n_rows), layout="constrained")
    for index, (layout, title) in enumerate(zip(layouts, titles, strict=True)):
        ax = fig.add_subplot(n_rows, n_cols, index + 1)
        _scatter_classes(ax, np.asarray(layout), checked[index], class_names)
        ax.set_title(title, fontsize="small")
    handles, names = fig.axes[0].get_legend_handles_labels()
    _opaque_legend(fig.legend(handles, names, loc="outside right center", frameon=False, fontsize="small"))
    return fig


def plot_class_vectors(weight: np.ndarray, class_names: Sequence[str], *, ax: Axes | None = None) -> Figure:
    """Shows how the ``fc2`` class vectors (the rows of ``fc2.weight``) relate to each other.

    t-SNE of 10 points is meaningless: the perplexity must stay below 10, so every point's
    neighbourhood is the whole set and the layout mostly reflects the optimiser. For 10 vectors
    the exact answer fits on screen instead: the ``C x C`` cosine-similarity matrix, as an
    annotated heatmap. The logit of class ``c`` is ``w_c · h + b_c``, so two classes whose vectors
    point the same way (cosine near 1) are told apart by few directions of ``h``; untrained
    vectors are near-orthogonal (cosine about 0) and training pushes the pairs of classes apart.
    With ``ax=None`` the figure also has an exact, linear 2-D view: the vectors projected on their
    first two principal components, with the share of variance each one explains (no
    neighbourhood parameter, nothing to tune). With an ``ax`` only the heatmap is drawn into it.

    Args:
        weight: ``(C, F)`` matrix, one class vector per row (``fc2.weight`` is ``(10, 1024)``).
        class_names: One name per row.
        ax: Axes for the heatmap; a new two-panel figure when ``None``.

    Returns:
        The figure that holds the heatmap.

    Raises:
        ValueError: If ``weight`` is not a finite 2-D array with one row per class name and at
            least 2 rows.

    Example:
        >>> weight = np.random.default_rng(0).normal(size=(10, 1024))
        >>> fig = plot_class_vectors(weight, [str(c) for c in range(10)])
        >>> len(fig.axes)  # heatmap, PCA view, colour bar
        3
    """
    weight = np.asarray(weight, dtype=np.float64)
    if weight.ndim != 2 or weight.shape[0] != len(class_names) or weight.shape[0] < 2:
        raise ValueError(
            f"Expected `weight` to be a 2-D array with one row per class name ({len(class_names)}, "
            f"at least 2), but got shape {weight.shape}."
        )
    if not np.isfinite(weight).all():
        raise ValueError("Expected `weight` to be finite, but got NaN or inf values.")
    unit = weight / np.maximum(np.linalg.norm(weight, axis=1, keepdims=True), 1e-12)
    cosine = unit @ unit.T  # (C, C)
    pca_ax = None
    if ax is None:
        fig = Figure(figsize=(12.0, 5.2), layout="constrained")
        ax, pca_ax = fig.subplots(1, 2, width_ratios=(1.25, 1.0))
    fig = _root_figure(ax)
    image = ax.imshow(cosine, cmap="RdBu_r", vmin=-1.0, vmax=1.0)
    n_classes = len(class_names)
    for row in range(n_classes):
        for col in range(n_classes):
            value = cosine[row, col]
            ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize="x-small",
                    color="white" if abs(value) > 0.6 else "black")
    ax.set_xticks(range(n_classes), labels=list(class_names), rotation=45, ha="right", fontsize="small")
    ax.set_yticks(range(n_classes), labels=list(class_names), fontsize="small")
    ax.set_title("cosine similarity of fc2 class vectors")
    ax.figure.colorbar(image, ax=ax, shrink=0.8)
    if pca_ax is not None:
        _plot_pca(pca_ax, weight, class_names)
    return fig


PlotFormat = Literal["png", "svg", "pdf"]
PLOT_FORMATS: tuple[str, ...] = get_args(PlotFormat)


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 100, format: str | None = None) -> None:
    """Writes ``fig`` as a PNG, SVG or PDF atomically, then clears it to free its memory.

    The image goes to a temporary file in the same directory that is then ``os.replace``-d onto
    ``path``, so a reader (TensorBoard, a browser, a test) never sees a half-written file. The
    directory is created if needed. A ``path`` that exists but is not a regular file (``/dev/null``,
    a directory) is refused, because replacing it would destroy it.

    Args:
        fig: Figure to write; cleared afterwards, so do not reuse it.
        path: Destination, e.g. ``tsne_evolution.png``.
        dpi: Resolution in dots per inch (SVG and PDF stay vector; it sizes their raster parts).
        format: ``"png"``, ``"svg"`` or ``"pdf"``; by default the suffix of ``path``.

    Raises:
        ValueError: If the format is not one of those, ``dpi`` is not a positive integer, or
            ``path`` exists and is not a regular file.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     for fmt in PLOT_FORMATS:
        ...         fig = plot_embedding(np.zeros((4, 2)), np.arange(4) % 2, ["a", "b"])
        ...         save_figure(fig, pathlib.Path(tmp) / f"embedding.{fmt}", dpi=72)
        ...     sorted(p.name for p in pathlib.Path(tmp).iterdir())
        ['embedding.pdf', 'embedding.png', 'embedding.svg']
    """
    try:
        fmt = check_plot_format(format if format is not None else os.path.splitext(os.fspath(path))[1].lstrip("."))
        check_dpi(dpi)
        write_atomically(path, lambda stream: fig.savefig(stream, format=fmt, dpi=dpi))
    finally:
        fig.clear()


def figure_png(fig: Figure, *, dpi: int = 100) -> bytes:
    """``fig`` encoded as PNG bytes, once: the same bytes go to the plot file and to TensorBoard's
    Images tab. The figure is left as it is.

    Example:
        >>> fig = plot_embedding(np.zeros((4, 2)), np.arange(4) % 2, ["a", "b"])
        >>> figure_png(fig, dpi=50)[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
        True
    """
    check_dpi(dpi)
    stream = io.BytesIO()
    fig.savefig(stream, format="png", dpi=dpi)
    return stream.getvalue()


def png_bytes(image: np.ndarray, *, compress_level: int = 6) -> bytes:
    """An ``(H, W, 3)`` ``uint8`` image (what :func:`render_figure` returns) encoded as PNG; a low
    ``compress_level`` is faster, a high one smaller.

    Example:
        >>> image = np.zeros((2, 3, 3), dtype=np.uint8)
        >>> np.array_equal(from_png(png_bytes(image, compress_level=1)), image)
        True
    """
    stream = io.BytesIO()
    Image.fromarray(image).save(stream, format="png", compress_level=compress_level)
    return stream.getvalue()


def from_png(data: bytes) -> np.ndarray:
    """PNG bytes back to an ``(H, W, 3)`` ``uint8`` image."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def save_image(image: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Writes an ``(H, W, 3)`` ``uint8`` image as a PNG, atomically: a figure already rendered for
    TensorBoard is not drawn a second time for its file.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     save_image(np.zeros((2, 3, 3), dtype=np.uint8), pathlib.Path(tmp) / "black.png")
        ...     Image.open(pathlib.Path(tmp) / "black.png").size
        (3, 2)
    """
    data = png_bytes(image)
    write_atomically(path, lambda stream: stream.write(data))


def render_figure(fig: Figure, *, dpi: int = 100) -> np.ndarray:
    """Renders ``fig`` to an ``(H, W, 3)`` ``uint8`` RGB image (e.g. for TensorBoard's Images tab).

    The figure is left as it is, so it can be saved afterwards.

    Example:
        >>> fig = plot_embedding(np.zeros((4, 2)), np.arange(4) % 2, ["a", "b"])
        >>> image = render_figure(fig, dpi=50)
        >>> image.dtype, image.shape[2], tuple(image.shape[:2]) == (250, 320)
        (dtype('uint8'), 3, True)
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    check_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    original_dpi = fig.dpi
    fig.set_dpi(dpi)
    try:
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()  # (H, W, 3)
    finally:
        fig.set_dpi(original_dpi)


def check_plot_format(format: str) -> str:
    """Returns ``format`` in lower case when it is a plot format this project writes, else raises.

    Example:
        >>> check_plot_format("SVG")
        'svg'
    """
    fmt = format.lower() if isinstance(format, str) else format
    if fmt not in PLOT_FORMATS:
        raise ValueError(f"Expected the plot format to be one of {', '.join(PLOT_FORMATS)}, but got {format!r}.")
    return fmt


def check_dpi(dpi: int) -> int:
    """Returns ``dpi`` when it is a positive integer, else raises.

    Example:
        >>> check_dpi(150)
        150
    """
    if isinstance(dpi, bool) or not isinstance(dpi, int) or dpi < 1:
        raise ValueError(f"Expected `dpi` to be a positive integer such as 100 or 300, but got {dpi!r}.")
    return dpi


def _root_figure(ax: Axes) -> Figure:
    """The top-level figure of ``ax``, also when ``ax`` sits in a subfigure (matplotlib >= 3.8)."""
    figure = ax.figure
    while not isinstance(figure, Figure):  # a SubFigure: climb to its parent
        figure = figure.figure
    return figure


def _check_layout(layout: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """Validates an ``(N, 2)`` layout against ``(N,)`` labels; returns the labels as int64."""
    layout = np.asarray(layout)
    labels = np.asarray(labels)
    if layout.ndim != 2 or layout.shape[1] != 2:
        raise ValueError(f"Expected `layout` to have shape (N, 2), but got {layout.shape}.")
    if labels.shape != (layout.shape[0],):
        raise ValueError(f"Expected `labels` to have shape ({layout.shape[0]},), but got {labels.shape}.")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"Expected `labels` to be integer class indices, but got dtype {labels.dtype}.")
    if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(
            f"Expected `labels` to be in [0, {len(class_names)}), one per class name, "
            f"but got values in [{labels.min()}, {labels.max()}]."
        )
    return labels.astype(np.int64)


def _scatter_classes(ax: Axes, layout: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> None:
    """One scatter per class (so the legend has one entry per class), t-SNE axes left unticked.

    Marker size and alpha come from :func:`scatter_style` for this many points on this axes; above
    ``RASTERIZE_ABOVE`` points the markers are drawn as one image in SVG and PDF files.
    """
    dpi = _root_figure(ax).dpi
    area = (ax.bbox.width * 72.0 / dpi) * (ax.bbox.height * 72.0 / dpi)  # pt², before any layout engine
    size, alpha = scatter_style(len(layout), area)
    for index, name in enumerate(class_names):
        points = layout[labels == index]  # (n_c, 2)
        ax.scatter(points[:, 0], points[:, 1], s=size, alpha=alpha, color=class_color(index), label=name,
                   linewidths=0, rasterized=len(layout) > RASTERIZE_ABOVE)
    # t-SNE coordinates have no units; only relative positions mean something.
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")


def _opaque_legend(legend: Legend) -> None:
    """Gives every legend marker the same size and full opacity, whatever the scatter's own."""
    for handle in legend.legend_handles:
        handle.set_alpha(1.0)
        handle.set_sizes([LEGEND_MARKER_SIZE])


def _plot_pca(ax: Axes, weight: np.ndarray, class_names: Sequence[str]) -> None:
    """Projects the class vectors on their first two principal components (exact, via SVD)."""
    centred = weight - weight.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    coords = u[:, :2] * s[:2]  # (C, 2)
    if coords.shape[1] < 2:  # two classes have one principal direction
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    variance = s**2 / max(float((s**2).sum()), 1e-300)
    for index, name in enumerate(class_names):
        ax.scatter(coords[index, 0], coords[index, 1], s=60, color=class_color(index))
        ax.annotate(name, coords[index], textcoords="offset points", xytext=(5, 5), fontsize="small")
    ax.axhline(0, color="0.85", linewidth=0.8, zorder=0)
    ax.axvline(0, color="0.85", linewidth=0.8, zorder=0)
    ax.set_xlabel(f"PC1 ({variance[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({variance[1] if len(variance) > 1 else 0.0:.0%} of variance)")
    ax.set_title("class vectors, exact 2-D PCA projection")


# How the representation changes: the capture-by-capture CKA heatmap and the dynamics figure.
MAX_STEP_TICKS = 12  # step labels per axis of the CKA heatmap; more captures get every n-th
ANNOTATE_CKA_UP_TO = 12  # captures up to which every heatmap cell shows its value
DYNAMICS_LINES = {  # column -> (legend label, colour) of the upper panel of plot_dynamics
    "probe_acc": ("probe accuracy", "#1f77b4"),
    "cka_prev": ("CKA to previous capture", "#ff7f0e"),
    "knn_overlap_prev": ("k-NN overlap with previous", "#2ca02c"),
    "cka_final": ("CKA to final capture", "#9467bd"),
}


def plot_cka_matrix(
    steps: Sequence[int],
    matrix: np.ndarray,
    *,
    title: str = "",
    ax: Axes | None = None,
) -> Figure:
    """Draws linear CKA between every pair of captures as a heatmap, captures in step order.

    Cell ``(i, j)`` is the CKA of captures ``i`` and ``j`` (``scores.cka_matrix``), on a fixed
    0-1 colour scale so figures of different runs compare: a bright block in the lower right is
    a representation that stopped changing, a dark first row one that moved far from its start.
    Up to ``ANNOTATE_CKA_UP_TO`` captures every cell shows its value; beyond that the step labels
    are thinned to at most ``MAX_STEP_TICKS`` per axis (the first and last always shown).
    ``nan`` cells (a constant capture) are grey.

    Args:
        steps: Training step of each capture.
        matrix: ``(C, C)`` CKA matrix, ``C = len(steps)``.
        title: Axes title, e.g. the series name; ``"linear CKA between captures"`` when empty.
        ax: Axes to draw into; a new figure when ``None``.

    Returns:
        The figure that holds the heatmap (and its colour bar).

    Raises:
        ValueError: If there are no steps or ``matrix`` is not ``(C, C)``.

    Example:
        >>> fig = plot_cka_matrix([0, 100, 200], np.array([[1, .5, .4], [.5, 1, .9], [.4, .9, 1]]))
        >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
        ['0', '100', '200']
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    n_captures = len(steps)
    if n_captures == 0:
        raise ValueError("Expected `steps` to hold at least one step, but got none.")
    if matrix.shape != (n_captures, n_captures):
        raise ValueError(
            f"Expected `matrix` to have shape ({n_captures}, {n_captures}), one row and column per step, "
            f"but got {matrix.shape}."
        )
    if ax is None:
        side = float(np.clip(3.0 + 0.45 * n_captures, 4.5, 7.5))
        ax = Figure(figsize=(side + 1.2, side), layout="constrained").add_subplot()
    cmap = colormaps["viridis"].with_extremes(bad="0.8")
    image = ax.imshow(matrix, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    if n_captures <= ANNOTATE_CKA_UP_TO:
        for row in range(n_captures):
            for col in range(n_captures):
                value = matrix[row, col]
                ax.text(col, row, "" if np.isnan(value) else f"{value:.2f}", ha="center", va="center",
                        fontsize="x-small", color="black" if value > 0.6 else "white")
    ticks = _thinned_ticks(n_captures, MAX_STEP_TICKS)
    labels = [str(steps[index]) for index in ticks]
    slanted = n_captures > 6  # long step numbers side by side overlap
    ax.set_xticks(ticks, labels=labels, rotation=45 if slanted else 0, ha="right" if slanted else "center",
                  fontsize="small")
    ax.set_yticks(ticks, labels=labels, fontsize="small")
    ax.set_xlabel("step")
    ax.set_ylabel("step")
    ax.set_title(title or "linear CKA between captures")
    _root_figure(ax).colorbar(image, ax=ax, shrink=0.8, label="linear CKA")
    return _root_figure(ax)


def plot_dynamics(
    steps: Sequence[int],
    columns: Mapping[str, Sequence[float | None]],
    settled_step: int | None = None,
    threshold: float = 0.95,
    *,
    title: str = "",
) -> Figure:
    """How the representation changed over the run, against the training step, in two panels.

    Upper panel, in [0, 1]: the columns of ``DYNAMICS_LINES`` present in ``columns``
    (``probe_acc``, ``cka_prev``, ``knn_overlap_prev``, ``cka_final``), with the settling
    threshold as a dotted line. Lower panel: ``nc1`` on a log scale, its own axis because it
    spans decades (it falls as the classes collapse onto their means). Missing values (``None``
    or ``nan``: the first capture has no ``cka_prev``) are skipped and the line joins the points
    either side. The settled step is a labelled vertical line in both panels; when the run did
    not settle, the title says so. Markers shrink as captures grow, so 3 and 60 both read.

    Two stacked panels with a shared step axis read better than a second y axis, so there is no
    ``ax`` argument.

    Args:
        steps: Training step of each capture.
        columns: Name -> one value per step; any of ``probe_acc``, ``cka_prev``,
            ``knn_overlap_prev``, ``cka_final``, ``nc1`` (others are ignored; any may be missing,
            e.g. ``probe_acc`` for a model without predictions).
        settled_step: Step at which the representation settled (``scores.settled_step``), or
            ``None`` for not settled.
        threshold: The CKA-to-final threshold ``settled_step`` used.
        title: Start of the figure title, e.g. the series name.

    Returns:
        A figure with two axes: the scores, then NC1.

    Raises:
        ValueError: If there are no steps or a column's length differs from ``steps``.

    Example:
        >>> fig = plot_dynamics([0, 100, 200], {"cka_prev": [None, 0.9, 0.99], "nc1": [5.0, 1.0, 0.2]},
        ...                     settled_step=100)
        >>> scores_ax, nc1_ax = fig.axes
        >>> [t.get_text() for t in scores_ax.get_legend().get_texts()][:2], nc1_ax.get_yscale()
        (['CKA to previous capture', 'threshold 0.95'], 'log')
    """
    n_captures = len(steps)
    if n_captures == 0:
        raise ValueError("Expected `steps` to hold at least one step, but got none.")
    for name, values in columns.items():
        if len(values) != n_captures:
            raise ValueError(
                f"Expected column {name!r} to have {n_captures} values, one per step, but got {len(values)}."
            )
    x = np.asarray(steps, dtype=np.float64)  # (C,)
    marker_size = float(np.clip(9.0 - 1.5 * np.log2(n_captures), 2.0, 7.0))
    fig = Figure(figsize=(8.0, 6.0), layout="constrained")
    scores_ax, nc1_ax = fig.subplots(2, 1, sharex=True, height_ratios=(2.0, 1.0))
    for name, (label, color) in DYNAMICS_LINES.items():
        if name in columns:
            values = _as_floats(columns[name])
            shown = np.isfinite(values)
            scores_ax.plot(x[shown], values[shown], marker="o", markersize=marker_size, linewidth=1.5,
                           color=color, label=label)
    scores_ax.axhline(threshold, color="0.5", linestyle=":", linewidth=1.0, label=f"threshold {threshold:g}")
    scores_ax.set_ylim(-0.02, 1.02)
    scores_ax.set_ylabel("score")
    scores_ax.grid(True, color="0.92")
    nc1 = _as_floats(columns["nc1"]) if "nc1" in columns else np.full(n_captures, np.nan)
    shown = np.isfinite(nc1) & (nc1 > 0.0)  # a log scale shows no 0
    nc1_ax.plot(x[shown], nc1[shown], marker="o", markersize=marker_size, linewidth=1.5, color="#d62728",
                label="NC1")
    nc1_ax.set_yscale("log")
    nc1_ax.set_ylabel(r"NC1 = tr$(S_W S_B^{+})/K$")
    nc1_ax.set_xlabel("step")
    nc1_ax.grid(True, color="0.92", which="both")
    if not shown.any():
        nc1_ax.text(0.5, 0.5, "NC1 not available", transform=nc1_ax.transAxes, ha="center", va="center",
                    color="0.5")
    if settled_step is not None:
        for ax in (scores_ax, nc1_ax):
            ax.axvline(settled_step, color="black", linestyle="--", linewidth=1.2,
                       label=f"settled at step {settled_step}")
        status = f"settled at step {settled_step} (CKA to final ≥ {threshold:g} from there on)"
    else:
        status = f"not settled (CKA to final < {threshold:g} before the final capture)"
    scores_ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize="small")
    nc1_ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize="small")
    scores_ax.set_title(f"{title} · {status}" if title else status, fontsize="medium")
    return fig


def _thinned_ticks(n: int, most: int) -> list[int]:
    """At most ``most`` evenly spaced indices of ``range(n)``, the first and last included."""
    if n <= most:
        return list(range(n))
    return np.unique(np.linspace(0, n - 1, most).round().astype(int)).tolist()


def _as_floats(values: Sequence[float | None]) -> np.ndarray:
    """``values`` as a float64 array with ``None`` as ``nan``."""
    return np.array([np.nan if value is None else float(value) for value in values], dtype=np.float64)


# --- per-point figures: the data map and the hardest probe images (see lenet_lightning/points.py)

DATA_MAP_CMAP = "viridis"  # fraction of captures correct: dark = rarely right, yellow = always right


def plot_data_map(
    p_true_mean: np.ndarray,
    p_true_std: np.ndarray,
    fraction_correct: np.ndarray,
    *,
    ax: Axes | None = None,
) -> Figure:
    """Draws a data map (Swayamdipta et al. 2020): every point at (std, mean) of its ``p_true``.

    Each point is placed at its variability (std of the probability of its true class across the
    captures) and confidence (their mean), coloured by the fraction of captures it was correct, with a
    colour bar. The regions of :func:`lenet_lightning.points.data_map_regions` are outlined and named
    with their point counts: easy-to-learn (top left), hard-to-learn (bottom left, where mislabelled
    images gather) and ambiguous (right). The rarely-correct points are drawn last, on top; marker size
    and alpha follow :func:`scatter_style`, so 10,000 points stay readable. Points with a ``NaN`` are
    left out.

    Args:
        p_true_mean: ``(N,)`` mean ``p_true`` of each point, in [0, 1].
        p_true_std: ``(N,)`` its standard deviation, in [0, 0.5].
        fraction_correct: ``(N,)`` fraction of captures at which it was predicted correctly.
        ax: Axes to draw into; a new figure when ``None``.

    Returns:
        The figure that holds the axes (and the colour bar's).

    Raises:
        ValueError: If the three arrays are not all of one shape ``(N,)``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> fig = plot_data_map(rng.random(100), rng.random(100) / 2, rng.random(100))
        >>> fig.axes[0].get_xlabel()
        'variability: std of p(true class) across captures'
    """
    from lenet_lightning.points import AMBIGUOUS_STD, EASY_MEAN, REGIONS, data_map_regions

    mean = np.asarray(p_true_mean, dtype=np.float64)
    std = np.asarray(p_true_std, dtype=np.float64)
    fraction = np.asarray(fraction_correct, dtype=np.float64)
    if mean.ndim != 1 or std.shape != mean.shape or fraction.shape != mean.shape:
        raise ValueError(f"Expected `p_true_mean`, `p_true_std` and `fraction_correct` to have one shape (N,), but "
                         f"got {mean.shape}, {std.shape} and {fraction.shape}.")
    keep = np.isfinite(mean) & np.isfinite(std) & np.isfinite(fraction)
    mean, std, fraction = mean[keep], std[keep], fraction[keep]
    if ax is None:
        ax = Figure(figsize=(7.0, 5.6), layout="constrained").add_subplot()
    fig = _root_figure(ax)
    area = (ax.bbox.width * 72.0 / fig.dpi) * (ax.bbox.height * 72.0 / fig.dpi)  # pt²
    size, alpha = scatter_style(len(mean), area)
    order = np.argsort(-fraction, kind="stable")  # the rarely-correct last, on top
    scatter = ax.scatter(std[order], mean[order], c=fraction[order], cmap=DATA_MAP_CMAP, vmin=0.0, vmax=1.0,
                         s=size, alpha=alpha, linewidths=0, rasterized=len(mean) > RASTERIZE_ABOVE)
    colorbar = fig.colorbar(scatter, ax=ax, shrink=0.85)
    colorbar.solids.set_alpha(1.0)
    colorbar.set_label("fraction of captures correct")

    regions = data_map_regions(mean, std)
    counts = {name: int(np.count_nonzero(regions == name)) for name in REGIONS}
    easy, ambiguous, hard = REGIONS
    line = {"color": "0.45", "linestyle": "--", "linewidth": 1.0, "zorder": 0}
    ax.axvline(AMBIGUOUS_STD, **line)
    ax.plot([0.0, AMBIGUOUS_STD], [EASY_MEAN, EASY_MEAN], **line)
    box = {"boxstyle": "round,pad=0.3", "facecolor": "white", "edgecolor": "0.6", "alpha": 0.85}
    for name, x, y, va in ((easy, AMBIGUOUS_STD / 2, EASY_MEAN + 0.03, "bottom"),
                           (hard, AMBIGUOUS_STD / 2, EASY_MEAN - 0.03, "top"),
                           (ambiguous, (AMBIGUOUS_STD + 0.5) / 2, 0.97, "top")):
        ax.text(x, y, f"{name}\n{counts[name]:,} points", ha="center", va=va, fontsize="small", bbox=box)
    ax.set_xlim(0.0, 0.5)  # the std of values in [0, 1] is at most 0.5
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("variability: std of p(true class) across captures")
    ax.set_ylabel("confidence: mean p(true class)")
    ax.set_title(f"data map of {len(mean):,} probe points")
    return fig


def plot_hardest(images: np.ndarray, titles: Sequence[str], *, max_cols: int = 10) -> Figure:
    """Shows probe images as a grid of thumbnails, row-major, each with its title.

    Args:
        images: ``uint8`` thumbnails, grey ``(n, H, W)`` or RGB ``(n, H, W, 3)``, e.g. from
            :func:`lenet_lightning.points.sprite_thumbnails` at :func:`lenet_lightning.points.hardest`.
        titles: One title per image, e.g. ``"7 → 1 · p 0.02"`` (label, last prediction, mean p_true).
        max_cols: Most thumbnails per row.

    Returns:
        A figure with one axes per image.

    Raises:
        ValueError: If there are no images, their shape or dtype is wrong, ``titles`` does not
            match them in length, or ``max_cols < 1``.

    Example:
        >>> fig = plot_hardest(np.zeros((12, 28, 28), np.uint8), [f"{i} → 0" for i in range(12)])
        >>> len(fig.axes), fig.axes[11].get_title()
        (12, '11 → 0')
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or not (images.ndim == 3 or (images.ndim == 4 and images.shape[3] == 3)) \
            or len(images) == 0:
        raise ValueError(f"Expected `images` to be uint8 of shape (n, H, W) or (n, H, W, 3) with n > 0, but got "
                         f"{images.dtype} of shape {images.shape}.")
    if len(titles) != len(images):
        raise ValueError(f"Expected `titles` to have {len(images)} entries, one per image, but got {len(titles)}.")
    if isinstance(max_cols, bool) or not isinstance(max_cols, int) or max_cols < 1:
        raise ValueError(f"Expected `max_cols` to be a positive integer, but got {max_cols!r}.")
    n_cols = min(len(images), max_cols)
    n_rows = -(-len(images) // n_cols)
    fig = Figure(figsize=(1.25 * n_cols, 1.5 * n_rows), layout="constrained")
    for index, (image, title) in enumerate(zip(images, titles, strict=True)):
        ax = fig.add_subplot(n_rows, n_cols, index + 1)
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(str(title), fontsize="small")
        ax.set_axis_off()
    return fig
