"""One self-contained HTML page of a run: its aligned t-SNE maps, step by step, with its curves.

:func:`report_html` returns the page as one string: hand-written HTML, CSS and plain JavaScript, a
``<canvas>`` for the map and inline SVG for the curves. Every byte is inline (the sprite is a
``data:`` URI, and a Content-Security-Policy lets the page load nothing else), so the file opens
from disk, offline, mailed or archived, in any current browser. The page shows

* the map of one capture at a time, coloured by class (:func:`lenet_lightning.plots.class_color`)
  or by whether the model was right at that capture, with a legend;
* a step slider (``<input type=range id="step">``, one position per capture) and a play button
  that eases every point from one capture's place to the next;
* on hover, a point's thumbnail (cut from the sprite), label, prediction and ``p(true)``;
* one small chart per curve against the step, with the current step marked and the settled step
  as a dashed line; the hardest images with their label and last prediction.

The data is one ``<script type="application/json" id="report-data">`` block, which
:func:`read_report_data` parses back. For browser tests the page exposes ``window.report``:
``count`` (captures), ``step()`` (the capture shown), ``setStep(i)``, ``play()``, ``pause()``,
``playing()``, ``position()`` (the fractional capture while an animation eases between two),
``frames()`` (maps drawn so far), ``colorBy("class" | "correct")``, ``mode()``, ``pointAt(i)``
(point ``i``'s ``[x, y]`` in client coordinates) and ``tooltip()`` (the tooltip's text, or
``null`` when none is shown). Pure Python and numpy: no Lightning, no torch.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import struct
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from lenet_lightning.plots import class_color

CORRECT_COLOR = "#2ca02c"
WRONG_COLOR = "#d62728"
CURVE_LABELS = {  # curve name -> its chart's heading; other curves are headed by their name
    "probe_acc": "probe accuracy",
    "silhouette": "silhouette (features)",
    "knn_acc_2d": "k-NN accuracy on the map",
    "trustworthiness": "trustworthiness of the map",
    "cka_prev": "CKA to previous capture",
    "knn_overlap_prev": "k-NN overlap with previous",
    "cka_final": "CKA to final capture",
    "nc1": "NC1 (within / between class)",
}
POSITION_DIGITS = 4  # significant digits of the largest coordinate: 1e-4 of a map's extent
P_TRUE_DECIMALS = 3
CURVE_DIGITS = 6  # significant digits

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DATA_BLOCK = re.compile(r'<script type="application/json" id="report-data">(.*?)</script>', re.DOTALL)
_MARKER = re.compile(r"__(TITLE|CSS|SPRITE|DATA|JS)__")
_NO_CURVES: Mapping[str, Sequence[float | None]] = MappingProxyType({})


def report_html(
    *,
    title: str,
    class_names: Sequence[str],
    labels: np.ndarray,
    steps: Sequence[int],
    layouts: Sequence[np.ndarray],
    predicted: Sequence[np.ndarray] | None = None,
    p_true: Sequence[np.ndarray] | None = None,
    curves: Mapping[str, Sequence[float | None]] = _NO_CURVES,
    settled_step: int | None = None,
    sprite_png: bytes | None = None,
    thumb_size: tuple[int, int] | None = None,
    hardest: Sequence[int] | None = None,
) -> str:
    """Returns one self-contained HTML page of a run's captures (see the module docstring).

    Positions are stored with :data:`POSITION_DIGITS` significant digits of the largest
    coordinate, ``p_true`` with :data:`P_TRUE_DECIMALS` decimals, curve values with
    :data:`CURVE_DIGITS` significant digits; ``NaN`` in ``p_true`` or a curve is missing. A page
    of 2,000 points, 20 captures and a 2,000-thumbnail sprite of 28x28 stays well under 10 MB.

    Args:
        title: The page's heading, e.g. the run folder's name.
        class_names: One name per class, in class-index order.
        labels: ``(N,)`` integer class index of each probe point.
        steps: Training step of each capture.
        layouts: One aligned ``(N, 2)`` map per capture, in the order of ``steps``.
        predicted: One ``(N,)`` array of predicted class indices per capture, or ``None`` when
            the model gives no class predictions (then the page offers no colouring by
            correctness).
        p_true: One ``(N,)`` array per capture: the probability given to the true class.
        curves: Name -> one value per capture (``None`` or ``NaN`` where missing), e.g.
            ``probe_acc``, ``silhouette``, ``knn_acc_2d``, ``trustworthiness``, ``cka_prev``,
            ``knn_overlap_prev``, ``cka_final``, ``nc1``; only curves with a value get a chart.
        settled_step: The step at which the representation settled, drawn on every chart.
        sprite_png: The Projector sprite: ``ceil(sqrt(N))`` thumbnails a row, row-major, as
            :func:`lenet_lightning.projector.write_sprite` writes it.
        thumb_size: ``(height, width)`` of one thumbnail in ``sprite_png``.
        hardest: Probe indices of the hardest images, hardest first, e.g. from
            :func:`lenet_lightning.points.hardest`.

    Returns:
        The page, HTML5, as a string (write it as UTF-8).

    Raises:
        TypeError: If ``title`` is not a string or ``sprite_png`` is not bytes.
        ValueError: If there are no layouts; ``steps``, ``predicted``, ``p_true`` or a curve does
            not have one entry per layout; a layout is not ``(N, 2)`` or not finite; a label or
            prediction is not a class index; a ``p_true`` is outside [0, 1]; ``sprite_png`` and
            ``thumb_size`` are not given together or do not hold ``N`` thumbnails; or a
            ``hardest`` index is not a probe index.

    Example:
        >>> layouts = [np.array([[0.0, 0.0], [1.0, 2.0]]), np.array([[0.5, 0.25], [1.5, 2.5]])]
        >>> page = report_html(title="demo", class_names=["cat", "dog"], labels=np.array([0, 1]),
        ...                    steps=[0, 100], layouts=layouts, curves={"probe_acc": [0.5, 1.0]})
        >>> data = read_report_data(page)
        >>> page.startswith("<!doctype html>"), data["steps"], data["layouts"][1]
        (True, [0, 100], [0.5, 0.25, 1.5, 2.5])
    """
    if not isinstance(title, str):
        raise TypeError(f"Expected `title` to be a str, but got {type(title).__name__}.")
    names = [str(name) for name in class_names]
    if not names:
        raise ValueError("Expected `class_names` to hold at least one name, but got none.")
    labels = _check_classes(labels, "labels", len(names), None)
    n_points = len(labels)
    if len(layouts) == 0:
        raise ValueError("Expected `layouts` to hold at least one (N, 2) map, but got none.")
    n_captures = len(layouts)
    stacked = np.stack([_check_layout(layout, c, n_points) for c, layout in enumerate(layouts)])  # (C, N, 2)
    step_list = _check_steps(steps, n_captures)
    predictions = None
    if predicted is not None:
        _check_length(predicted, "predicted", n_captures)
        predictions = [_check_classes(p, f"predicted[{c}]", len(names), n_points).tolist()
                       for c, p in enumerate(predicted)]
    probabilities = None
    if p_true is not None:
        _check_length(p_true, "p_true", n_captures)
        probabilities = [_rounded_p_true(p, c, n_points) for c, p in enumerate(p_true)]
    charts = _check_curves(curves, n_captures)
    if settled_step is not None and (isinstance(settled_step, bool) or not isinstance(settled_step, (int, np.integer))):
        raise ValueError(f"Expected `settled_step` to be an int or None, but got {settled_step!r}.")
    sprite_uri, thumb = _check_sprite(sprite_png, thumb_size, n_points)
    hard = None
    if hardest is not None:
        hard = [int(i) for i in _check_indices(hardest, n_points)]

    digits = _position_decimals(stacked)
    data: dict[str, Any] = {
        "title": title,
        "class_names": names,
        "colors": [class_color(c) for c in range(len(names))],
        "correct_colors": [CORRECT_COLOR, WRONG_COLOR],
        "labels": labels.tolist(),
        "steps": step_list,
        "position_decimals": digits,
        "layouts": [[float(f"{v:.{digits}f}") for v in layout.reshape(-1).tolist()] for layout in stacked],
        "predicted": predictions,
        "p_true": probabilities,
        "curves": charts,
        "settled_step": None if settled_step is None else int(settled_step),
        "thumb_size": thumb,
        "sprite_cols": math.ceil(math.sqrt(n_points)),
        "hardest": hard,
    }
    parts = {
        "TITLE": html.escape(title),
        "CSS": _CSS,
        "SPRITE": "" if sprite_uri is None else f'<img id="sprite" alt="" hidden src="{sprite_uri}">',
        "DATA": _script_json(data),
        "JS": _JS,
    }
    # One pass, so that a title or class name that holds a marker is not filled in itself.
    return _MARKER.sub(lambda match: parts[match.group(1)], _PAGE)


def read_report_data(page: str) -> dict[str, Any]:
    """The data block of a page made by :func:`report_html`, parsed.

    Raises:
        ValueError: If ``page`` has no data block.

    Example:
        >>> page = report_html(title="t", class_names=["a"], labels=np.array([0]), steps=[5],
        ...                    layouts=[np.zeros((1, 2))])
        >>> read_report_data(page)["class_names"]
        ['a']
    """
    match = _DATA_BLOCK.search(page)
    if match is None:
        raise ValueError("Expected a page made by `report_html`, with its report-data block, but got none.")
    return json.loads(match.group(1))


def _script_json(data: Mapping[str, Any]) -> str:
    # Inside <script>, only "</script" or "<!--" could end or confuse the block; JSON has "<", ">"
    # and "&" in strings only, where \u escapes read back the same.
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _position_decimals(layouts: np.ndarray) -> int:
    largest = float(np.abs(layouts).max())
    if largest == 0.0:
        return 0
    return max(0, POSITION_DIGITS - 1 - math.floor(math.log10(largest)))


def _check_length(values: Sequence[Any], name: str, n_captures: int) -> None:
    if len(values) != n_captures:
        raise ValueError(f"Expected `{name}` to have {n_captures} entries, one per layout, but got {len(values)}.")


def _check_classes(values: Any, name: str, n_classes: int, n_points: int | None) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or (n_points is None and len(array) == 0) or (n_points is not None and len(array) != n_points):
        want = "(N,) with N > 0" if n_points is None else f"({n_points},), one per label"
        raise ValueError(f"Expected `{name}` to have shape {want}, but got {array.shape}.")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"Expected `{name}` to hold integer class indices, but got dtype {array.dtype}.")
    bad = np.flatnonzero((array < 0) | (array >= n_classes))
    if bad.size:
        raise ValueError(f"Expected `{name}` to be class indices in [0, {n_classes}), but got {array[bad[0]]} "
                         f"at position {bad[0]}.")
    return array.astype(np.int64)


def _check_layout(layout: Any, index: int, n_points: int) -> np.ndarray:
    array = np.asarray(layout, dtype=np.float64)
    if array.shape != (n_points, 2):
        raise ValueError(f"Expected `layouts[{index}]` to have shape ({n_points}, 2), one row per label, "
                         f"but got {array.shape}.")
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad.size:
        raise ValueError(f"Expected `layouts[{index}]` to be finite, but got {array[bad[0]].tolist()} "
                         f"at point {bad[0]}.")
    return array


def _check_steps(steps: Sequence[int], n_captures: int) -> list[int]:
    _check_length(steps, "steps", n_captures)
    for step in steps:
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise ValueError(f"Expected `steps` to be integers, but got {step!r}.")
    return [int(step) for step in steps]


def _rounded_p_true(values: Any, index: int, n_points: int) -> list[float | None]:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (n_points,):
        raise ValueError(f"Expected `p_true[{index}]` to have shape ({n_points},), one per label, "
                         f"but got {array.shape}.")
    bad = np.flatnonzero(np.isfinite(array) & ((array < 0.0) | (array > 1.0)))
    if bad.size:
        raise ValueError(f"Expected `p_true[{index}]` to be probabilities in [0, 1] (or NaN), but got "
                         f"{array[bad[0]]} at point {bad[0]}.")
    return [round(v, P_TRUE_DECIMALS) if math.isfinite(v) else None for v in array.tolist()]


def _check_curves(curves: Mapping[str, Sequence[float | None]], n_captures: int) -> list[dict[str, Any]]:
    charts = []
    for name, values in curves.items():
        _check_length(values, f"curves[{name!r}]", n_captures)
        numbers: list[float | None] = []
        for value in values:
            if value is None:
                numbers.append(None)
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ValueError(f"Expected `curves[{name!r}]` to hold numbers or None, but got {value!r}.")
            numbers.append(float(f"{float(value):.{CURVE_DIGITS}g}") if math.isfinite(value) else None)
        if any(number is not None for number in numbers):
            charts.append({"name": str(name), "label": CURVE_LABELS.get(str(name), str(name)), "values": numbers})
    return charts


def _check_sprite(sprite_png: bytes | None, thumb_size: tuple[int, int] | None,
                  n_points: int) -> tuple[str | None, list[int] | None]:
    if sprite_png is None and thumb_size is None:
        return None, None
    if sprite_png is None or thumb_size is None:
        given = "sprite_png" if thumb_size is None else "thumb_size"
        raise ValueError(f"Expected `sprite_png` and `thumb_size` together, but got only `{given}`.")
    if not isinstance(sprite_png, (bytes, bytearray, memoryview)):
        raise TypeError(f"Expected `sprite_png` to be the bytes of a PNG, but got {type(sprite_png).__name__}.")
    sprite_png = bytes(sprite_png)
    if len(thumb_size) != 2 or any(isinstance(side, bool) or not isinstance(side, (int, np.integer)) or side < 1
                                   for side in thumb_size):
        raise ValueError(f"Expected `thumb_size` to be a positive (height, width), but got {thumb_size!r}.")
    # A PNG starts with its signature and the IHDR chunk: length, b"IHDR", width, height (big-endian).
    if len(sprite_png) < 24 or not sprite_png.startswith(_PNG_SIGNATURE) or sprite_png[12:16] != b"IHDR":
        raise ValueError(f"Expected `sprite_png` to be a PNG, but got bytes starting {sprite_png[:8]!r}.")
    width, height = struct.unpack(">II", sprite_png[16:24])
    thumb_h, thumb_w = (int(side) for side in thumb_size)
    cols = math.ceil(math.sqrt(n_points))
    rows = math.ceil(n_points / cols)
    if (width, height) != (cols * thumb_w, rows * thumb_h):
        raise ValueError(f"Expected `sprite_png` to be {rows}x{cols} thumbnails of {thumb_h}x{thumb_w} "
                         f"({cols * thumb_w}x{rows * thumb_h} pixels) for {n_points} points, but got "
                         f"{width}x{height} pixels.")
    return "data:image/png;base64," + base64.b64encode(sprite_png).decode("ascii"), [thumb_h, thumb_w]


def _check_indices(indices: Sequence[int], n_points: int) -> np.ndarray:
    array = np.asarray(indices)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"Expected `hardest` to be a 1-D sequence of probe indices, but got {array.dtype} "
                         f"of shape {array.shape}.")
    bad = np.flatnonzero((array < 0) | (array >= n_points))
    if bad.size:
        raise ValueError(f"Expected `hardest` to be probe indices in [0, {n_points}), but got {array[bad[0]]}.")
    return array


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; \
script-src 'unsafe-inline'">
<title>__TITLE__</title>
<style>__CSS__</style>
</head>
<body>
<header>
  <h1 id="title">__TITLE__</h1>
  <div id="status"><strong id="step-text"></strong><span id="capture-text"></span><span id="acc-text"></span>\
<span id="settled-text"></span></div>
</header>
<main>
  <section class="panel" id="map-panel">
    <div id="controls">
      <button id="play" type="button" aria-pressed="false">&#9654; play</button>
      <input type="range" id="step" min="0" max="0" step="1" value="0" aria-label="capture">
      <span id="color-by" hidden>colour by
        <label><input type="radio" name="color-by" value="class" checked> class</label>
        <label><input type="radio" name="color-by" value="correct"> correct</label>
      </span>
    </div>
    <div id="map-wrap">
      <canvas id="map" aria-label="t-SNE map of the probe set at the current capture"></canvas>
      <div id="tooltip" hidden><canvas id="tip-thumb" hidden></canvas><div id="tip-text"></div></div>
    </div>
    <div id="legend"></div>
  </section>
  <aside class="panel" id="curves-panel" hidden><h2>curves</h2><div id="curves"></div></aside>
  <section class="panel" id="hardest-panel" hidden>
    <h2>hardest images <small>label &rarr; last prediction</small></h2><div id="hardest"></div>
  </section>
</main>
__SPRITE__
<script type="application/json" id="report-data">__DATA__</script>
<script>__JS__</script>
</body>
</html>
"""

_CSS = """
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       background: #f6f6f6; }
header { padding: 12px 20px 4px; }
h1 { font-size: 20px; margin: 0 0 4px; font-weight: 600; }
h2 { font-size: 14px; margin: 0 0 8px; font-weight: 600; }
h2 small { font-weight: normal; color: #666; }
#status { display: flex; flex-wrap: wrap; gap: 4px 16px; color: #555; }
#status span:empty { display: none; }
main { display: grid; grid-template-columns: minmax(0, 1fr) 320px; gap: 16px; padding: 8px 20px 20px; }
#hardest-panel { grid-column: 1 / -1; }
@media (max-width: 900px) { main { grid-template-columns: minmax(0, 1fr); } }
.panel { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 10px 12px; }
.panel[hidden] { display: none; }
#controls { display: flex; flex-wrap: wrap; align-items: center; gap: 8px 14px; margin-bottom: 8px; }
#play { min-width: 80px; }
#step { flex: 1 1 220px; }
#color-by label { margin-left: 6px; }
#map-wrap { position: relative; }
#map { display: block; width: 100%; height: min(70vh, 640px); cursor: crosshair; }
#tooltip { position: absolute; z-index: 2; display: flex; gap: 8px; align-items: flex-start; pointer-events: none;
           background: #fff; border: 1px solid #bbb; border-radius: 4px; padding: 6px 8px; font-size: 12px;
           white-space: pre-line; box-shadow: 0 2px 8px rgba(0, 0, 0, .18); }
#tooltip[hidden], canvas[hidden] { display: none; }
#tip-thumb, .hard canvas { image-rendering: pixelated; background: #000; }
#legend { display: flex; flex-wrap: wrap; gap: 4px 14px; margin-top: 8px; font-size: 13px; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 5px; }
.chart { margin-bottom: 12px; cursor: pointer; }
.chart-head { display: flex; justify-content: space-between; gap: 8px; font-size: 12px; }
.chart-value { font-variant-numeric: tabular-nums; }
.chart svg { display: block; width: 100%; height: auto; overflow: visible; }
.curve { fill: none; stroke: #1f77b4; stroke-width: 1.5; }
.dot { fill: #1f77b4; }
.frame { fill: none; stroke: #e3e3e3; }
.cursor { stroke: #888; stroke-width: 1; }
.marker { fill: #d62728; stroke: #fff; stroke-width: 1.5; }
.settled { stroke: #000; stroke-width: 1; stroke-dasharray: 4 3; }
.axis { font-size: 9px; fill: #777; }
#hardest { display: grid; grid-template-columns: repeat(auto-fill, minmax(68px, 1fr)); gap: 8px; }
.hard { margin: 0; text-align: center; font-size: 11px; cursor: default; }
.hard canvas { width: 56px; height: auto; }
"""

_JS = r"""
"use strict";
(() => {
  const D = JSON.parse(document.getElementById("report-data").textContent);
  const N = D.labels.length, C = D.steps.length;
  const $ = (id) => document.getElementById(id);
  const canvas = $("map"), ctx = canvas.getContext("2d"), slider = $("step"), playButton = $("play");
  const tip = $("tooltip"), tipText = $("tip-text"), tipThumb = $("tip-thumb"), sprite = $("sprite");
  const MS_PER_CAPTURE = 900, HOLD = 0.3;  // a capture is held for 30% of its time, then eased into the next
  const RADIUS = Math.max(1.5, Math.min(4, 120 / Math.sqrt(N)));
  const layouts = D.layouts.map((flat) => Float32Array.from(flat));  // (C, 2N): x0, y0, x1, y1, ...
  const current = new Float32Array(2 * N), screenX = new Float32Array(N), screenY = new Float32Array(N);
  let position = C - 1, index = -1, playing = false, lastTime = null, frames = 0;
  let mode = "class", mouse = null, hovered = -1, highlighted = -1, width = 0, height = 0;

  // The maps are aligned, so all share one frame: the bounding box of every capture, y up.
  let minX = Infinity, maxX = -Infinity, minY = Infinity, maxY = -Infinity;
  for (const xy of layouts) {
    for (let k = 0; k < xy.length; k += 2) {
      minX = Math.min(minX, xy[k]); maxX = Math.max(maxX, xy[k]);
      minY = Math.min(minY, xy[k + 1]); maxY = Math.max(maxY, xy[k + 1]);
    }
  }
  const byClass = D.class_names.map(() => []);
  D.labels.forEach((label, i) => byClass[label].push(i));
  const probeAcc = D.curves.find((curve) => curve.name === "probe_acc");
  const accuracy = D.steps.map((_, c) => {
    if (probeAcc && probeAcc.values[c] !== null) return probeAcc.values[c];
    if (!D.predicted) return null;
    let right = 0;
    for (let i = 0; i < N; i++) right += D.predicted[c][i] === D.labels[i] ? 1 : 0;
    return right / N;
  });
  const fmt = (v) => (v === null || v === undefined ? "\u2013" : Math.abs(v) >= 1000 ? v.toFixed(0) : v.toPrecision(3));

  // ---------------------------------------------------------------- the map
  function interpolate() {  // fills `current`, returns the capture the points are nearest to
    const i = Math.min(Math.floor(position), C - 1), f = position - i;
    let t = 0;
    if (i < C - 1 && f > 0) {
      const u = Math.min(1, Math.max(0, (f - HOLD) / (1 - HOLD)));
      t = u * u * (3 - 2 * u);
    }
    const a = layouts[i];
    if (t === 0) current.set(a);
    else {
      const b = layouts[i + 1];
      for (let k = 0; k < 2 * N; k++) current[k] = a[k] + (b[k] - a[k]) * t;
    }
    return t < 0.5 ? i : i + 1;
  }

  function project() {
    const margin = 10, spanX = maxX - minX || 1, spanY = maxY - minY || 1;
    const scale = Math.min((width - 2 * margin) / spanX, (height - 2 * margin) / spanY);
    const left = (width - scale * spanX) / 2, bottom = height - (height - scale * spanY) / 2;
    for (let i = 0; i < N; i++) {
      screenX[i] = left + (current[2 * i] - minX) * scale;
      screenY[i] = bottom - (current[2 * i + 1] - minY) * scale;
    }
  }

  function correctAt(c, i) { return D.predicted[c][i] === D.labels[i]; }

  function groups() {  // [[r, g, b], point indices], drawn in order
    if (mode === "class") return byClass.map((members, c) => [classRGB[c], members]);
    const right = [], wrong = [];
    for (let i = 0; i < N; i++) (correctAt(index, i) ? right : wrong).push(i);
    return [[correctRGB[0], right], [correctRGB[1], wrong]];  // the errors on top
  }

  // The dots are written into the canvas's pixels, not drawn as paths: thousands of arcs a frame are
  // slow wherever the canvas is rasterised in software, pixels are a few per dot everywhere.
  const rgb = (hex) => [1, 3, 5].map((k) => parseInt(hex.slice(k, k + 2), 16));
  const classRGB = D.colors.map(rgb), correctRGB = D.correct_colors.map(rgb);
  const ALPHA = N > 3000 ? 0.6 : 0.85;
  let image = null, dot = null;  // the canvas's ImageData; a dot's (dx, dy, coverage) in device pixels

  function dotMask(radius) {
    const reach = Math.ceil(radius + 0.5), cells = [];
    for (let dy = -reach; dy <= reach; dy++) {
      for (let dx = -reach; dx <= reach; dx++) {
        const coverage = Math.min(1, radius + 0.5 - Math.hypot(dx, dy));  // antialiased edge
        if (coverage > 0) cells.push(dx, dy, coverage * ALPHA);
      }
    }
    return Float32Array.from(cells);
  }

  function draw() {
    const dpr = window.devicePixelRatio || 1, W = canvas.width, H = canvas.height;
    if (!image || image.width !== W || image.height !== H) {
      image = ctx.createImageData(Math.max(1, W), Math.max(1, H));
      dot = dotMask(RADIUS * dpr);
    }
    const px = image.data;  // (H, W, 4) RGBA
    px.fill(255);
    for (const [[r, g, b], members] of groups()) {
      for (const i of members) {
        const cx = Math.round(screenX[i] * dpr), cy = Math.round(screenY[i] * dpr);
        for (let m = 0; m < dot.length; m += 3) {
          const x = cx + dot[m], y = cy + dot[m + 1];
          if (x < 0 || y < 0 || x >= W || y >= H) continue;
          const a = dot[m + 2], o = (y * W + x) * 4;
          px[o] += (r - px[o]) * a;
          px[o + 1] += (g - px[o + 1]) * a;
          px[o + 2] += (b - px[o + 2]) * a;
        }
      }
    }
    ctx.putImageData(image, 0, 0);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    for (const i of [highlighted, hovered]) {
      if (i < 0) continue;
      ctx.beginPath();
      ctx.arc(screenX[i], screenY[i], RADIUS + 3, 0, 2 * Math.PI);
      ctx.lineWidth = 2;
      ctx.strokeStyle = "#000";
      ctx.stroke();
    }
    frames++;
  }

  function nearest() {  // the point under the mouse, or -1
    if (!mouse) return -1;
    let best = -1, bestDistance = Math.max(6, RADIUS + 3) ** 2;
    for (let i = 0; i < N; i++) {
      const dx = screenX[i] - mouse.x, dy = screenY[i] - mouse.y, distance = dx * dx + dy * dy;
      if (distance <= bestDistance) { best = i; bestDistance = distance; }
    }
    return best;
  }

  function render() {
    const shown = interpolate();
    project();
    if (shown !== index) { index = shown; showCapture(); }
    hovered = nearest();
    showTooltip();
    draw();
  }

  // ---------------------------------------------------------------- tooltip and thumbnails
  function drawThumb(target, i) {
    if (!sprite || !D.thumb_size) { target.hidden = true; return; }
    const [h, w] = D.thumb_size, zoom = Math.max(1, Math.floor(84 / Math.max(h, w)));
    target.hidden = false;
    target.width = w * zoom;
    target.height = h * zoom;
    if (!sprite.complete || !sprite.naturalWidth) return;  // drawn again once the sprite is decoded
    const g = target.getContext("2d");
    g.imageSmoothingEnabled = false;
    const col = i % D.sprite_cols, row = Math.floor(i / D.sprite_cols);
    g.drawImage(sprite, col * w, row * h, w, h, 0, 0, w * zoom, h * zoom);
  }

  let tipShown = -1, tipCapture = -1;
  function showTooltip() {
    if (hovered < 0) { tip.hidden = true; tipShown = -1; return; }
    if (hovered !== tipShown || index !== tipCapture) {
      const i = hovered, label = D.labels[i], lines = [`label: ${D.class_names[label]}`];
      if (D.predicted) {
        const p = D.predicted[index][i];
        lines.push(`predicted: ${D.class_names[p]} ${p === label ? "\u2713" : "\u2717"}`);
      }
      if (D.p_true) lines.push(`p(true)=${D.p_true[index][i] === null ? "n/a" : D.p_true[index][i].toFixed(2)}`);
      lines.push(`point #${i} \u00b7 step ${D.steps[index]}`);
      tipText.textContent = lines.join("\n");
      if (hovered !== tipShown) drawThumb(tipThumb, i);
      tipShown = hovered;
      tipCapture = index;
    }
    tip.hidden = false;
    const box = tip.getBoundingClientRect();
    const x = mouse.x + 14 + box.width > width ? mouse.x - 14 - box.width : mouse.x + 14;
    const y = mouse.y + 14 + box.height > height ? mouse.y - 14 - box.height : mouse.y + 14;
    tip.style.left = `${Math.max(0, x)}px`;
    tip.style.top = `${Math.max(0, y)}px`;
  }

  canvas.addEventListener("mousemove", (event) => {
    const rect = canvas.getBoundingClientRect();
    mouse = { x: event.clientX - rect.left, y: event.clientY - rect.top };
    const before = hovered;
    hovered = nearest();
    showTooltip();
    if (hovered !== before) draw();
  });
  canvas.addEventListener("mouseleave", () => { mouse = null; hovered = -1; showTooltip(); draw(); });

  // ---------------------------------------------------------------- header, slider, legend
  function showCapture() {
    slider.value = String(index);
    $("step-text").textContent = `step ${D.steps[index]}`;
    $("capture-text").textContent = `capture ${index + 1} of ${C}`;
    $("acc-text").textContent = accuracy[index] === null ? "" : `probe acc ${accuracy[index].toFixed(3)}`;
    showLegend();
    for (const chart of charts) chart.update();
  }

  function showLegend() {
    const legend = $("legend");
    legend.replaceChildren();
    const items = mode === "class"
      ? D.class_names.map((name, c) => [D.colors[c], `${name} (${byClass[c].length})`])
      : (() => {
        let right = 0;
        for (let i = 0; i < N; i++) right += correctAt(index, i) ? 1 : 0;
        return [[D.correct_colors[0], `correct (${right})`], [D.correct_colors[1], `wrong (${N - right})`]];
      })();
    for (const [color, text] of items) {
      const item = document.createElement("span"), swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = color;
      item.append(swatch, text);
      legend.append(item);
    }
  }

  function setStep(i) {
    if (!Number.isInteger(i) || i < 0 || i >= C) {
      throw new RangeError(`Expected a capture index in [0, ${C - 1}], but got ${i}`);
    }
    pause();
    position = i;
    render();
  }

  function colorBy(name) {
    if (name !== "class" && !(name === "correct" && D.predicted)) {
      throw new Error(`Expected "class"${D.predicted ? ' or "correct"' : ""}, but got ${JSON.stringify(name)}`);
    }
    mode = name;
    for (const radio of document.querySelectorAll('input[name="color-by"]')) radio.checked = radio.value === name;
    showLegend();
    draw();
  }

  // ---------------------------------------------------------------- playing
  let frame = 0;  // the pending animation frame
  function tick(now) {
    if (lastTime !== null) position = Math.min(C - 1, position + (now - lastTime) / MS_PER_CAPTURE);
    lastTime = now;
    render();
    if (position >= C - 1) pause();
    else frame = requestAnimationFrame(tick);
  }

  function play() {
    if (playing) return;
    if (position >= C - 1) { position = 0; render(); }
    playing = true;
    lastTime = null;
    playButton.textContent = "\u275a\u275a pause";
    playButton.setAttribute("aria-pressed", "true");
    frame = requestAnimationFrame(tick);
  }

  function pause() {
    cancelAnimationFrame(frame);
    playing = false;
    playButton.textContent = "\u25b6 play";
    playButton.setAttribute("aria-pressed", "false");
  }

  // ---------------------------------------------------------------- curves
  const CHART_W = 290, CHART_H = 78, PAD_L = 30, PAD_R = 6, PAD_T = 6, PAD_B = 14;
  const firstStep = Math.min(...D.steps), lastStep = Math.max(...D.steps);
  const xOf = (step) => (lastStep === firstStep ? (PAD_L + CHART_W - PAD_R) / 2
    : PAD_L + (step - firstStep) / (lastStep - firstStep) * (CHART_W - PAD_L - PAD_R));

  function makeChart(curve) {
    const finite = curve.values.filter((v) => v !== null);
    let lo = Math.min(...finite), hi = Math.max(...finite);
    // Scores in [0, 1] on a fixed [0, 1] axis, so runs compare; a positive curve spanning decades
    // (NC1) on a log axis; anything else on its own range.
    const log = lo > 0 && hi / lo > 20 && !(lo >= 0 && hi <= 1);
    const unit = lo >= 0 && hi <= 1;
    const f = log ? Math.log10 : (v) => v;
    if (unit) { lo = 0; hi = 1; } else if (hi === lo) { lo -= 0.5; hi += 0.5; }
    const a = f(lo), b = f(hi);
    const yOf = (v) => PAD_T + (1 - (f(v) - a) / (b - a)) * (CHART_H - PAD_T - PAD_B);
    const points = curve.values.map((v, c) => (v === null ? null : [xOf(D.steps[c]), yOf(v)]));
    const drawn = points.filter((p) => p !== null);
    const r = (v) => v.toFixed(1);
    let svg = `<svg viewBox="0 0 ${CHART_W} ${CHART_H}" role="img">`;
    svg += `<rect class="frame" x="${PAD_L}" y="${PAD_T}" width="${CHART_W - PAD_L - PAD_R}" `
      + `height="${CHART_H - PAD_T - PAD_B}"/>`;
    svg += `<text class="axis" x="${PAD_L - 3}" y="${PAD_T + 7}" text-anchor="end">${fmt(hi)}</text>`;
    svg += `<text class="axis" x="${PAD_L - 3}" y="${CHART_H - PAD_B}" text-anchor="end">${fmt(lo)}</text>`;
    svg += `<text class="axis" x="${PAD_L}" y="${CHART_H - 2}">${firstStep}</text>`;
    svg += `<text class="axis" x="${CHART_W - PAD_R}" y="${CHART_H - 2}" text-anchor="end">${lastStep}</text>`;
    if (log) svg += `<text class="axis" x="${CHART_W / 2}" y="${CHART_H - 2}" text-anchor="middle">log scale</text>`;
    if (D.settled_step !== null && D.settled_step >= firstStep && D.settled_step <= lastStep) {
      const x = r(xOf(D.settled_step));
      svg += `<line class="settled" x1="${x}" x2="${x}" y1="${PAD_T}" y2="${CHART_H - PAD_B}">`
        + `<title>settled at step ${D.settled_step}</title></line>`;
    }
    svg += `<polyline class="curve" points="${drawn.map(([x, y]) => `${r(x)},${r(y)}`).join(" ")}"/>`;
    for (const [x, y] of drawn) svg += `<circle class="dot" cx="${r(x)}" cy="${r(y)}" r="1.8"/>`;
    svg += `<line class="cursor" y1="${PAD_T}" y2="${CHART_H - PAD_B}"/><circle class="marker" r="3.5"/></svg>`;

    const box = document.createElement("div"), head = document.createElement("div");
    const name = document.createElement("span"), value = document.createElement("span");
    box.className = "chart";
    box.dataset.curve = curve.name;
    head.className = "chart-head";
    name.textContent = curve.label;
    name.title = curve.name;
    value.className = "chart-value";
    head.append(name, value);
    box.append(head);
    box.insertAdjacentHTML("beforeend", svg);  // numbers only: every name went in through textContent
    const cursor = box.querySelector(".cursor"), marker = box.querySelector(".marker");
    box.addEventListener("click", (event) => {  // jump to the capture nearest the click
      const rect = box.querySelector("svg").getBoundingClientRect();
      const x = (event.clientX - rect.left) / rect.width * CHART_W;
      let best = 0;
      D.steps.forEach((step, c) => { if (Math.abs(xOf(step) - x) < Math.abs(xOf(D.steps[best]) - x)) best = c; });
      setStep(best);
    });
    $("curves").append(box);
    return {
      update() {  // on a change of capture only: repainting charts every frame is slow without a GPU
        const x = r(xOf(D.steps[index]));
        cursor.setAttribute("x1", x);
        cursor.setAttribute("x2", x);
        value.textContent = fmt(curve.values[index]);
        marker.style.display = points[index] ? "" : "none";
        if (points[index]) {
          marker.setAttribute("cx", r(points[index][0]));
          marker.setAttribute("cy", r(points[index][1]));
        }
      },
    };
  }
  const charts = D.curves.map(makeChart);
  $("curves-panel").hidden = charts.length === 0;

  // ---------------------------------------------------------------- hardest images
  const hardThumbs = [];
  if (D.hardest && D.hardest.length) {
    $("hardest-panel").hidden = false;
    for (const i of D.hardest) {
      const figure = document.createElement("figure"), thumb = document.createElement("canvas");
      const caption = document.createElement("figcaption"), label = D.class_names[D.labels[i]];
      figure.className = "hard";
      figure.title = `point #${i}`;
      caption.textContent = D.predicted ? `${label} \u2192 ${D.class_names[D.predicted[C - 1][i]]}` : label;
      figure.append(thumb, caption);
      figure.addEventListener("mouseenter", () => { highlighted = i; draw(); });
      figure.addEventListener("mouseleave", () => { highlighted = -1; draw(); });
      $("hardest").append(figure);
      drawThumb(thumb, i);
      hardThumbs.push([thumb, i]);
    }
  }
  if (sprite && !(sprite.complete && sprite.naturalWidth)) {
    sprite.addEventListener("load", () => {
      for (const [thumb, i] of hardThumbs) drawThumb(thumb, i);
      if (tipShown >= 0) drawThumb(tipThumb, tipShown);
    }, { once: true });
  }

  // ---------------------------------------------------------------- wiring
  slider.max = String(C - 1);
  if (D.settled_step !== null) $("settled-text").textContent = `settled at step ${D.settled_step}`;
  slider.addEventListener("input", () => setStep(Number(slider.value)));
  playButton.addEventListener("click", () => (playing ? pause() : play()));
  if (D.predicted) {
    $("color-by").hidden = false;
    for (const radio of document.querySelectorAll('input[name="color-by"]')) {
      radio.addEventListener("change", () => { if (radio.checked) colorBy(radio.value); });
    }
  }
  document.addEventListener("keydown", (event) => {  // space plays; arrows step, unless a control has focus
    if (event.target instanceof HTMLInputElement || event.target instanceof HTMLButtonElement) return;
    if (event.key === " ") { event.preventDefault(); playing ? pause() : play(); }
    else if (event.key === "ArrowRight" && index < C - 1) setStep(index + 1);
    else if (event.key === "ArrowLeft" && index > 0) setStep(index - 1);
  });
  function resize() {
    const rect = canvas.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
    width = rect.width;
    height = rect.height;
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
    render();
  }
  window.addEventListener("resize", resize);
  resize();

  window.report = Object.freeze({
    count: C,
    step: () => index,
    setStep,
    play,
    pause,
    playing: () => playing,
    position: () => position,
    frames: () => frames,
    colorBy,
    mode: () => mode,
    pointAt(i) {
      if (!Number.isInteger(i) || i < 0 || i >= N) {
        throw new RangeError(`Expected a point index in [0, ${N - 1}], but got ${i}`);
      }
      const rect = canvas.getBoundingClientRect();
      return [rect.left + screenX[i], rect.top + screenY[i]];
    },
    tooltip: () => (tip.hidden ? null : tipText.textContent),
  });
})();
"""
