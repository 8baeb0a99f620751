"""An animated GIF of how the t-SNE map of the probe points changes from capture to capture.

Two pure functions, no Lightning: :func:`interpolated_frames` plans the frames (the points glide
from one capture's aligned layout to the next, and rest a moment on each capture's own map), and
:func:`evolution_gif` draws that plan into GIF bytes.

The GIF is drawn straight into palette indices rather than through matplotlib: every point is a
solid disc of its class colour (:func:`lenet_lightning.plots.class_color`), text is anti-aliased
onto a few greys, and all frames share one small palette, so colours are exact and never flicker,
the file stays small, and drawing a frame is a few numpy operations.
"""

from __future__ import annotations

import io
import itertools
import math
import numbers
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from matplotlib import font_manager
from matplotlib.colors import to_rgb
from PIL import Image, ImageDraw, ImageFont

from lenet_lightning.plots import class_color, scatter_style

WHITE = (255, 255, 255)
# Text is anti-aliased onto these greys (black first); the lightest also draws the map's frame.
GREYS = ((0, 0, 0), (64, 64, 64), (128, 128, 128), (176, 176, 176), (216, 216, 216))
# Looks white, but is another palette entry: see _keep_distinct.
NEAR_WHITE = (254, 254, 254)
MARGIN = 0.04  # empty border around the points, as a fraction of the map's data span
MIN_FRAME_MS = 20  # browsers show a GIF frame shorter than 20 ms for 100 ms


class Frame(NamedTuple):
    """One frame of the animation: where the points are, whose title shows, and for how long."""

    positions: np.ndarray  # (N, 2)
    capture: int  # index of the capture whose title the frame shows: the nearer one
    seconds: float  # how long the frame is shown


def interpolated_frames(
    layouts: Sequence[np.ndarray],
    *,
    seconds: float = 15.0,
    fps: float = 10.0,
    hold: int = 5,
) -> list[Frame]:
    """Plans an animation of ``seconds`` that moves the points through the captures' layouts.

    The time is cut into ``round(seconds * fps)`` slots. Each capture's own map is shown for
    ``hold`` slots, as *one* frame of that duration; between captures ``i`` and ``i + 1`` the
    points move along straight lines with smoothstep easing (slow out of a map, slow into the
    next), one frame per remaining slot, shared evenly among the transitions. With many captures
    the holds shrink to one slot first, then the in-between frames per transition, down to none
    (plain cuts); then each capture's map is shown for ``seconds / C``. The slots are stretched so
    that the durations add up to ``seconds`` exactly, whatever the number of captures; one capture
    gives a single still frame.

    Args:
        layouts: One ``(N, 2)`` layout per capture, all of the same points, aligned with each other
            (e.g. each t-SNE run initialised from the previous one).
        seconds: Length of the whole animation.
        fps: Nominal frame rate, which sets the number of slots.
        hold: Slots each capture's own map rests on screen, at least 1.

    Returns:
        The frames in order; the first frame's positions are ``layouts[0]`` and the last's are
        ``layouts[-1]``, exactly, and the frames at captures show those captures' layouts exactly.

    Raises:
        ValueError: If there are no layouts, their shapes differ or are not ``(N, 2)``, a position
            is not finite, ``seconds`` or ``fps`` is not a positive number, or ``hold < 1``.

    Example:
        >>> layouts = [np.zeros((3, 2)), np.ones((3, 2))]
        >>> frames = interpolated_frames(layouts, seconds=0.9, fps=10.0, hold=2)
        >>> [frame.capture for frame in frames]
        [0, 0, 0, 1, 1, 1, 1]
        >>> frames[3].positions[0].tolist(), round(sum(frame.seconds for frame in frames), 6)
        ([0.5, 0.5], 0.9)
    """
    checked = _check_layouts(layouts)
    _check_positive("seconds", seconds)
    _check_positive("fps", fps)
    if isinstance(hold, bool) or not isinstance(hold, int) or hold < 1:
        raise ValueError(f"Expected `hold` to be a positive integer (slots on each capture's map), but got {hold!r}.")
    n_captures = len(checked)
    if n_captures == 1:
        return [Frame(checked[0], 0, float(seconds))]
    n_slots = max(1, round(seconds * fps))
    n_transitions = n_captures - 1
    # Shorter holds before fewer in-between frames: a glide reads better than a long rest.
    while hold > 1 and n_slots - n_captures * hold < n_transitions:
        hold -= 1
    n_between = max(0, (n_slots - n_captures * hold) // n_transitions)  # frames strictly between two captures
    slot = seconds / (n_captures * hold + n_transitions * n_between)
    t = np.arange(1, n_between + 1) / (n_between + 1)  # (n_between,) in (0, 1)
    eased = t * t * (3.0 - 2.0 * t)  # smoothstep: 0 -> 0, 0.5 -> 0.5, 1 -> 1, flat at both ends
    frames = []
    for index, (start, end) in enumerate(itertools.pairwise(checked)):
        frames.append(Frame(start, index, hold * slot))
        for fraction, weight in zip(t, eased, strict=True):
            frames.append(Frame((1.0 - weight) * start + weight * end, index + int(fraction >= 0.5), slot))
    frames.append(Frame(checked[-1], n_transitions, hold * slot))
    return frames


def evolution_gif(
    layouts: Sequence[np.ndarray],
    labels: np.ndarray,
    class_names: Sequence[str],
    titles: Sequence[str],
    *,
    seconds: float = 15.0,
    fps: float = 10.0,
    size: int = 400,
) -> bytes:
    """Animates the captures' layouts as a looping GIF, one GIF frame per frame of the plan.

    The frames are those of :func:`interpolated_frames` (``hold`` at its default), each shown for
    its duration rounded to the GIF's 10 ms (the rounding error does not add up; no frame is
    shorter than 20 ms, so more than ``50 * seconds`` captures play for longer than ``seconds``).
    Every class keeps its :func:`lenet_lightning.plots.class_color`; the axis limits are those of
    all layouts together, square, so the points do not jump; above the map is the title of the
    capture nearest to the frame, to its right a legend of the class names. Points are drawn in one
    fixed shuffled order, so that no class always hides another, as discs of
    :func:`lenet_lightning.plots.scatter_style`'s size for this many points (without its alpha: the
    GIF's palette holds only solid colours). All frames share one global palette: white, a few
    greys and the class colours.

    Args:
        layouts: One ``(N, 2)`` layout per capture, all of the same points, aligned with each other.
        labels: ``(N,)`` integer class indices into ``class_names``.
        class_names: One name per class, in class-index order.
        titles: One title per capture, e.g. ``"step 300 · probe acc 0.912"``.
        seconds: Length of one loop of the animation.
        fps: Nominal frame rate (see :func:`interpolated_frames`).
        size: Side of the square map, in pixels; the title and the legend add to it.

    Returns:
        The GIF file's bytes; it loops forever (a single capture gives a still image).

    Raises:
        ValueError: If the layouts are not valid for :func:`interpolated_frames`, ``titles`` does
            not have one entry per layout, ``labels`` does not match the layouts or
            ``class_names``, ``seconds`` or ``fps`` is not a positive number, or ``size < 64``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> layouts = [rng.normal(size=(50, 2)) for _ in range(3)]
        >>> data = evolution_gif(layouts, np.arange(50) % 5, "abcde", ["step 0", "step 1", "step 2"],
        ...                      seconds=2.0, size=100)
        >>> gif = Image.open(io.BytesIO(data))
        >>> gif.n_frames == len(interpolated_frames(layouts, seconds=2.0)), gif.info["loop"]
        (True, 0)
    """
    checked = _check_layouts(layouts)
    if len(titles) != len(checked):
        raise ValueError(f"Expected `titles` to have {len(checked)} entries, one per layout, but got {len(titles)}.")
    classes = _check_labels(labels, len(checked[0]), class_names)
    if isinstance(size, bool) or not isinstance(size, int) or size < 64:
        raise ValueError(f"Expected `size` to be an integer of at least 64 (pixels), but got {size!r}.")
    frames = interpolated_frames(checked, seconds=seconds, fps=fps)

    palette = _Palette(class_names)
    font_path = font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans"))
    title_px = max(9, round(0.038 * size))
    band = round(2.2 * title_px)  # height of the title band above the map
    pad = max(4, size // 40)
    legend = _legend(class_names, palette, font_path, max(8, round(0.032 * size)), size)
    height, width = band + size + pad, pad + size + legend.shape[1]
    base = np.zeros((height, width), np.uint8)  # palette index 0 is white
    base[band:band + size, width - legend.shape[1]:] = legend
    map_box = (band, pad, band + size, pad + size)  # top, left, bottom, right in pixels
    _draw_frame(base, map_box, palette.index(GREYS[-1]))
    title_strips = [_text_strip(str(title), width, band, font_path, title_px, palette) for title in titles]

    # Points to pixel coordinates, once for all frames: every frame's positions lie in the union of
    # the layouts (the in-between ones are convex combinations), so one square box holds them all.
    stacked = np.concatenate(checked)  # (C * N, 2)
    low, high = (stacked.min(axis=0), stacked.max(axis=0)) if len(stacked) else (np.zeros(2), np.zeros(2))
    centre, half = (low + high) / 2.0, max(float(np.max(high - low)) / 2.0, 1e-12) * (1.0 + 2.0 * MARGIN)
    marker_area, _ = scatter_style(len(classes), (size * 72.0 / 100.0) ** 2)  # pt², the map as if at 100 dpi
    radius = max(0.5, math.sqrt(marker_area) * 100.0 / 72.0 / 2.0)  # pixels: a marker's diameter is √area pt
    inner = size - 2.0 * (radius + 1.0)  # the discs stay inside the frame
    order = np.random.default_rng(0).permutation(len(classes))
    colours = palette.class_indices[classes[order]]  # (N,) palette index per point, in drawing order

    images = []
    previous = None
    for frame in frames:
        canvas = base.copy()
        canvas[:band] = title_strips[frame.capture]
        pixels = (frame.positions[order] - centre) / (2.0 * half) * inner  # (N, 2), 0 at the centre
        _stamp_discs(canvas, map_box[1] + size / 2.0 + pixels[:, 0], map_box[0] + size / 2.0 - pixels[:, 1],
                     radius, colours)
        _keep_distinct(canvas, previous, palette)
        previous = canvas
        image = Image.fromarray(canvas, mode="P")
        image.putpalette(palette.flat)
        images.append(image)

    ends = np.round(np.cumsum([frame.seconds for frame in frames]) * 100.0).astype(np.int64) * 10  # ms
    durations = np.maximum(np.diff(ends, prepend=0), MIN_FRAME_MS).tolist()
    stream = io.BytesIO()
    # optimize=False keeps the one palette as it is in every frame; Pillow still stores each frame
    # as the rectangle that changed since the one before.
    images[0].save(stream, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0,
                   optimize=False, disposal=1)
    return stream.getvalue()


class _Palette:
    """The GIF's one palette: white (index 0, the background), greys, near-white, class colours."""

    def __init__(self, class_names: Sequence[str]) -> None:
        colours = [WHITE, *GREYS, NEAR_WHITE]
        class_indices = []
        for index in range(len(class_names)):
            rgb = tuple(round(255 * channel) for channel in to_rgb(class_color(index)))
            if rgb not in colours:  # class c >= 10 shares the colour of class c % 10
                colours.append(rgb)
            class_indices.append(colours.index(rgb))
        self.colours = colours
        self.class_indices = np.array(class_indices, dtype=np.uint8)  # (K,)
        self.flat = [channel for colour in colours for channel in colour]
        # Anti-aliased text: grey level 0..255 -> index of the nearest grey (or white).
        levels = np.array([255, *(grey[0] for grey in GREYS)])  # palette indices 0..len(GREYS)
        self.grey_lut = np.abs(np.arange(256)[:, None] - levels[None, :]).argmin(axis=1).astype(np.uint8)

    def index(self, colour: tuple[int, int, int]) -> int:
        return self.colours.index(colour)


def _check_layouts(layouts: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Validates the layouts; returns them as float64 copies."""
    if len(layouts) == 0:
        raise ValueError("Expected `layouts` to hold at least one layout, but got none.")
    checked = [np.array(layout, dtype=np.float64) for layout in layouts]
    shape = checked[0].shape
    if len(shape) != 2 or shape[1] != 2:
        raise ValueError(f"Expected every layout to have shape (N, 2), but got {shape} at index 0.")
    for index, layout in enumerate(checked):
        if layout.shape != shape:
            raise ValueError(f"Expected every layout to have the shape of the first, {shape}, but got "
                             f"{layout.shape} at index {index}.")
        if not np.isfinite(layout).all():
            raise ValueError(f"Expected finite positions, but got nan or inf in the layout at index {index}.")
    return checked


def _check_labels(labels: np.ndarray, n_points: int, class_names: Sequence[str]) -> np.ndarray:
    """Validates ``(N,)`` labels against the layouts and class names; returns them as int64."""
    labels = np.asarray(labels)
    if labels.shape != (n_points,):
        raise ValueError(f"Expected `labels` to have shape ({n_points},), one per point, but got {labels.shape}.")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"Expected `labels` to be integer class indices, but got dtype {labels.dtype}.")
    if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(f"Expected `labels` to be in [0, {len(class_names)}), one per class name, but got values "
                         f"in [{labels.min()}, {labels.max()}].")
    return labels.astype(np.int64)


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"Expected `{name}` to be a positive number, but got {value!r}.")


def _stamp_discs(canvas: np.ndarray, x: np.ndarray, y: np.ndarray, radius: float, colours: np.ndarray) -> None:
    """Paints a disc of ``radius`` pixels around each ``(x[i], y[i])``, later points on top."""
    reach = math.ceil(radius)
    offsets = np.arange(-reach, reach + 1)
    columns = np.floor(x).astype(np.int64)[:, None, None] + offsets[None, None, :]  # (N, 1, 2r+1)
    rows = np.floor(y).astype(np.int64)[:, None, None] + offsets[None, :, None]  # (N, 2r+1, 1)
    # A pixel is in the disc when its centre is: sub-pixel positions keep the motion smooth.
    inside = (columns + 0.5 - x[:, None, None]) ** 2 + (rows + 0.5 - y[:, None, None]) ** 2 <= radius**2
    rows, columns = np.broadcast_arrays(rows, columns)
    # Boolean indexing keeps point-major order, and numpy assigns repeated indices in order.
    canvas[rows[inside], columns[inside]] = np.broadcast_to(colours[:, None, None], inside.shape)[inside]


def _keep_distinct(canvas: np.ndarray, previous: np.ndarray | None, palette: _Palette) -> None:
    """Makes ``canvas`` differ from ``previous`` in one corner pixel if it is otherwise equal.

    Pillow's GIF writer drops a frame identical to the one before (and adds its duration to that
    one), so a map that did not move would lose frames and the file would no longer match the plan.
    Swapping the corner between white and near-white keeps every frame, invisibly.
    """
    if previous is not None and np.array_equal(canvas, previous):
        white, near_white = palette.index(WHITE), palette.index(NEAR_WHITE)
        canvas[-1, -1] = white if previous[-1, -1] == near_white else near_white


def _font(path: str, pixels: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.truetype(path, pixels)
    except OSError:  # a Pillow built without FreeType
        return ImageFont.load_default()


def _text_strip(text: str, width: int, height: int, font_path: str, pixels: int, palette: _Palette) -> np.ndarray:
    """``text`` centred on a white ``(height, width)`` strip of palette indices, shrunk to fit."""
    font = _font(font_path, pixels)
    while pixels > 6 and font.getlength(text) > width - 8:
        pixels -= 1
        font = _font(font_path, pixels)
    strip = Image.new("L", (width, height), 255)
    ImageDraw.Draw(strip).text((width / 2, height / 2), text, fill=0, font=font, anchor="mm")
    return palette.grey_lut[np.asarray(strip)]


def _legend(class_names: Sequence[str], palette: _Palette, font_path: str, pixels: int, height: int) -> np.ndarray:
    """The legend, a ``(height, W)`` block of palette indices: a disc and a name per class, in
    as many columns as it takes, vertically centred."""
    font = _font(font_path, pixels)
    row = round(1.5 * pixels)
    disc = max(2.0, 0.35 * pixels)  # radius
    per_column = max(1, (height - row) // row)
    n_columns = -(-len(class_names) // per_column)
    name_width = max((math.ceil(font.getlength(str(name))) for name in class_names), default=0)
    column_width = round(4 * disc) + name_width + pixels
    text = Image.new("L", (pixels + n_columns * column_width, height), 255)
    draw = ImageDraw.Draw(text)
    rows_used = min(per_column, len(class_names))
    top = (height - rows_used * row) / 2.0
    centres = []
    for index, name in enumerate(class_names):
        column, line = divmod(index, per_column)
        x, y = pixels + column * column_width, top + (line + 0.5) * row
        draw.text((x + 3 * disc, y), str(name), fill=0, font=font, anchor="lm")
        centres.append((x + disc, y))
    legend = palette.grey_lut[np.asarray(text)]
    if centres:
        x, y = np.array(centres).T
        _stamp_discs(legend, x, y, disc, palette.class_indices[: len(class_names)])
    return legend


def _draw_frame(canvas: np.ndarray, box: tuple[int, int, int, int], colour: int) -> None:
    """A one-pixel frame just inside ``box`` (top, left, bottom, right)."""
    top, left, bottom, right = box
    canvas[top, left:right] = canvas[bottom - 1, left:right] = colour
    canvas[top:bottom, left] = canvas[top:bottom, right - 1] = colour
