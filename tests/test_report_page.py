"""The one-file HTML report: self-contained, its data block round-trips, small enough at 2,000 x 20,
and, in a real headless Chromium, its slider, play button and tooltips work (skipped without Chromium)."""

import io
import json
import math
import re
import time
from html.parser import HTMLParser

import numpy as np
import pytest
from chromium import Chromium, find_chromium
from PIL import Image

from lenet_lightning.plots import class_color
from lenet_lightning.report_page import read_report_data, report_html

CHROMIUM = find_chromium()
CLASS_NAMES = ["zero", "one", "two", "three"]


def sprite_png(n, thumb=(28, 28), values=None, seed=0):
    """A sprite as ``write_sprite`` lays it out: ``ceil(sqrt(n))`` cells a row, row-major; cell ``i``
    holds ``values[i]`` everywhere, or noise (the worst case for PNG's compression) when ``values`` is None."""
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    h, w = thumb
    if values is None:
        cells = np.random.default_rng(seed).integers(0, 256, (rows * cols, h, w), dtype=np.uint8)
    else:
        cells = np.zeros((rows * cols, h, w), np.uint8)
        cells[:n] = np.asarray(values, np.uint8)[:, None, None]
    grid = cells.reshape(rows, cols, h, w).swapaxes(1, 2).reshape(rows * h, cols * w)
    out = io.BytesIO()
    Image.fromarray(grid, "L").save(out, format="PNG")
    return out.getvalue()


def run_inputs(n=60, captures=4, seed=0, **overrides):
    """Keyword arguments of a small run: ``n`` points of ``len(CLASS_NAMES)`` classes, ``captures`` maps."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASS_NAMES)
    layouts = [rng.normal(scale=30.0, size=(n, 2)) for _ in range(captures)]
    predicted = [np.where(rng.random(n) < 0.3 + 0.6 * c / captures, labels, (labels + 1) % len(CLASS_NAMES))
                 for c in range(captures)]
    inputs = {
        "title": "version_0 · fc2",
        "class_names": CLASS_NAMES,
        "labels": labels,
        "steps": [100 * c for c in range(captures)],
        "layouts": layouts,
        "predicted": predicted,
        "p_true": [rng.random(n) for _ in range(captures)],
        "curves": {"probe_acc": [float(np.mean(p == labels)) for p in predicted],
                   "cka_prev": [None, *rng.random(captures - 1).tolist()],
                   "nc1": [10.0 / (c + 1) ** 2 for c in range(captures)]},
        "settled_step": 100,
        "sprite_png": sprite_png(n),
        "thumb_size": (28, 28),
        "hardest": [3, 1, 4],
    }
    inputs.update(overrides)
    return inputs


class _References(HTMLParser):
    """Every tag and every src/href attribute of a page."""

    def __init__(self):
        super().__init__()
        self.tags, self.references = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self.references += [value for name, value in attrs if name in ("src", "href")]


def test_report_html_is_one_self_contained_page():
    page = report_html(**run_inputs())
    assert isinstance(page, str) and page.startswith("<!doctype html>")
    assert "http://" not in page and "https://" not in page
    parser = _References()
    parser.feed(page)
    assert parser.references, "the sprite is an <img src=data:...>"
    assert all(ref.startswith(("data:", "#")) for ref in parser.references), parser.references
    assert not any(tag == "link" for tag, _ in parser.tags)
    scripts = [attrs for tag, attrs in parser.tags if tag == "script"]
    assert [attrs.get("type") for attrs in scripts] == ["application/json", None]
    assert not any("src" in attrs for attrs in scripts)
    assert not re.search(r"url\((?!data:)", page) and "@import" not in page
    # The browser is told to load nothing that is not inline.
    assert "default-src 'none'; img-src data:;" in page


def test_report_data_round_trips():
    inputs = run_inputs(n=50, captures=3)
    inputs["p_true"][1][7] = np.nan
    inputs["curves"]["silhouette"] = [0.1, float("nan"), 0.3]
    inputs["curves"]["knn_acc_2d"] = [None, None, None]  # no value: no chart
    data = read_report_data(report_html(**inputs))
    assert data["class_names"] == CLASS_NAMES
    assert data["colors"] == [class_color(c) for c in range(len(CLASS_NAMES))]
    assert data["labels"] == inputs["labels"].tolist() and data["steps"] == [0, 100, 200]
    scale = max(np.abs(layout).max() for layout in inputs["layouts"])
    for stored, layout in zip(data["layouts"], inputs["layouts"], strict=True):
        # 4 significant digits of the largest coordinate: off by at most half a unit of the 4th.
        np.testing.assert_allclose(np.reshape(stored, (-1, 2)), layout, rtol=0, atol=5e-4 * scale)
        assert all(len(repr(v).split(".")[-1]) <= data["position_decimals"] for v in stored)
    assert data["predicted"] == [p.tolist() for p in inputs["predicted"]]
    stored_p = np.array(data["p_true"], dtype=np.float64)  # None -> nan
    np.testing.assert_allclose(stored_p, np.stack(inputs["p_true"]), atol=5e-4)
    assert data["p_true"][1][7] is None
    curves = {curve["name"]: curve["values"] for curve in data["curves"]}
    assert list(curves) == ["probe_acc", "cka_prev", "nc1", "silhouette"]
    assert curves["cka_prev"][0] is None and curves["silhouette"] == [0.1, None, 0.3]
    np.testing.assert_allclose(curves["probe_acc"], inputs["curves"]["probe_acc"], rtol=1e-6)
    assert data["settled_step"] == 100 and data["hardest"] == [3, 1, 4]
    assert data["thumb_size"] == [28, 28] and data["sprite_cols"] == 8


def test_report_html_without_predictions_or_sprite_has_neither():
    inputs = run_inputs(predicted=None, p_true=None, curves={}, sprite_png=None, thumb_size=None, hardest=None,
                        settled_step=None)
    page = report_html(**inputs)
    data = read_report_data(page)
    assert data["predicted"] is None and data["p_true"] is None and data["curves"] == []
    assert data["thumb_size"] is None and data["hardest"] is None
    assert 'id="sprite"' not in page


def test_report_html_stays_under_10_mb_at_2000_points_and_20_captures():
    n, captures = 2000, 20
    inputs = run_inputs(n=n, captures=captures, sprite_png=sprite_png(n), hardest=list(range(30)))
    page = report_html(**inputs)
    size = len(page.encode("utf-8"))
    assert size <= 10 * 2**20, f"{size:,} bytes"
    data = read_report_data(page)
    assert len(data["layouts"]) == captures and len(data["layouts"][0]) == 2 * n


def test_report_html_escapes_script_ends_in_names_and_title():
    evil = "</script><script>alert(1)</script><!--"
    page = report_html(**run_inputs(class_names=[evil, "b", "c", "d"], title=f"run {evil} __DATA__"))
    assert page.count("</script>") == 2  # the data block's and the code's, nothing else
    assert "<!--" not in page
    data = read_report_data(page)
    assert data["class_names"][0] == evil and data["title"] == f"run {evil} __DATA__"
    assert "<title>run &lt;/script&gt;" in page


def replace(**changes):
    return changes


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (replace(layouts=[], steps=[], predicted=None, p_true=None, curves={}), r"`layouts` to hold at least one"),
        (replace(steps=[0, 100, 200]), r"`steps` to have 4 entries, one per layout, but got 3"),
        (replace(steps=[0, 1, 2, 2.5]), r"`steps` to be integers, but got 2.5"),
        (replace(layouts=[np.zeros((60, 2))] * 3 + [np.zeros((60, 3))]), r"`layouts\[3\]` to have shape \(60, 2\)"),
        (replace(layouts=[np.zeros((60, 2))] * 3 + [np.zeros((59, 2))]), r"shape \(60, 2\).*but got \(59, 2\)"),
        (replace(layouts=[np.zeros((60, 2))] * 3 + [np.full((60, 2), np.nan)]),
         r"`layouts\[3\]` to be finite, but got \[nan, nan\] at point 0"),
        (replace(layouts=[np.where(np.arange(120).reshape(60, 2) == 9, np.inf, 0.0)] * 4),
         r"`layouts\[0\]` to be finite, but got \[0.0, inf\] at point 4"),
        (replace(labels=np.r_[np.zeros(59, int), 4]), r"`labels` to be class indices in \[0, 4\), but got 4 at "
                                                       r"position 59"),
        (replace(labels=np.r_[-1, np.zeros(59, int)]), r"`labels` to be class indices in \[0, 4\), but got -1"),
        (replace(labels=np.zeros(60)), r"`labels` to hold integer class indices, but got dtype float64"),
        (replace(labels=np.zeros((60, 1), int)), r"`labels` to have shape \(N,\) with N > 0, but got \(60, 1\)"),
        (replace(class_names=[]), r"`class_names` to hold at least one name"),
        (replace(predicted=[np.zeros(60, int)] * 3), r"`predicted` to have 4 entries"),
        (replace(predicted=[np.zeros(60, int)] * 3 + [np.full(60, 7)]), r"`predicted\[3\]` to be class indices"),
        (replace(predicted=[np.zeros(60, int)] * 3 + [np.zeros(61, int)]), r"`predicted\[3\]` to have shape \(60,\)"),
        (replace(p_true=[np.zeros(60)] * 5), r"`p_true` to have 4 entries"),
        (replace(p_true=[np.zeros(60)] * 3 + [np.full(60, 1.5)]), r"`p_true\[3\]` to be probabilities in \[0, 1\]"),
        (replace(p_true=[np.zeros(60)] * 3 + [np.zeros(6)]), r"`p_true\[3\]` to have shape \(60,\)"),
        (replace(curves={"probe_acc": [0.5]}), r"`curves\['probe_acc'\]` to have 4 entries"),
        (replace(curves={"nc1": [1.0, "x", 2.0, 3.0]}), r"`curves\['nc1'\]` to hold numbers or None, but got 'x'"),
        (replace(settled_step=1.5), r"`settled_step` to be an int or None, but got 1.5"),
        (replace(thumb_size=None), r"`sprite_png` and `thumb_size` together, but got only `sprite_png`"),
        (replace(sprite_png=None), r"together, but got only `thumb_size`"),
        (replace(sprite_png=b"GIF89a" + bytes(40)), r"`sprite_png` to be a PNG, but got bytes starting b'GIF89a"),
        (replace(sprite_png=sprite_png(30)), r"8x8 thumbnails of 28x28 \(224x224 pixels\) for 60 points, "
                                             r"but got 168x140 pixels"),
        (replace(thumb_size=(14, 14)), r"thumbnails of 14x14 \(112x112 pixels\) for 60 points"),
        (replace(thumb_size=(0, 28)), r"`thumb_size` to be a positive \(height, width\), but got \(0, 28\)"),
        (replace(hardest=[0, 60]), r"`hardest` to be probe indices in \[0, 60\), but got 60"),
        (replace(hardest=[0.5]), r"`hardest` to be a 1-D sequence of probe indices"),
    ],
)
def test_report_html_rejects_bad_inputs(changes, match):
    with pytest.raises(ValueError, match=match):
        report_html(**run_inputs(**changes))


@pytest.mark.parametrize(("changes", "match"), [(replace(title=None), r"`title` to be a str, but got NoneType"),
                                                (replace(sprite_png="x"), r"`sprite_png` to be the bytes of a PNG")])
def test_report_html_rejects_bad_types(changes, match):
    with pytest.raises(TypeError, match=match):
        report_html(**run_inputs(**changes))


# ---------------------------------------------------------------------------------------------- the browser
def grid_layouts(n, captures):
    """Maps whose points lie far apart (a jittered grid, turned a little each capture), so the point
    under the mouse is unambiguous."""
    side = math.ceil(math.sqrt(n))
    base = np.stack([np.arange(n) % side, np.arange(n) // side], axis=1).astype(np.float64) * 10.0
    layouts = []
    for c in range(captures):
        angle = 0.15 * c
        rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        layouts.append(base @ rotation.T + 2.0 * c)
    return layouts


def console_errors(browser):
    browser.evaluate("0")  # reads the events the page sent since the last command
    errors = [event["params"]["entry"]["text"] for event in browser.events
              if event.get("method") == "Log.entryAdded" and event["params"]["entry"]["level"] in ("error", "warning")]
    errors += [" ".join(str(arg.get("value", arg.get("description", ""))) for arg in event["params"]["args"])
               for event in browser.events
               if event.get("method") == "Runtime.consoleAPICalled" and event["params"]["type"] in ("error", "warning")]
    return browser.exceptions() + errors


def press(browser, key, key_code):
    for kind in ("rawKeyDown", "keyUp"):
        browser.send("Input.dispatchKeyEvent", session=True, type=kind, key=key, code=key,
                     windowsVirtualKeyCode=key_code, nativeVirtualKeyCode=key_code)


def click(browser, x, y):
    browser.send("Input.dispatchMouseEvent", session=True, type="mouseMoved", x=x, y=y)
    for kind in ("mousePressed", "mouseReleased"):
        browser.send("Input.dispatchMouseEvent", session=True, type=kind, x=x, y=y, button="left", clickCount=1)


def centre(browser, selector, at=0.5):
    """Client coordinates of a point on an element, ``at`` of the way across it."""
    return browser.evaluate(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                            f".getBoundingClientRect(); return [r.left + {at} * r.width, r.top + r.height / 2]; }})()")


ARROW_RIGHT, HOME = 39, 36


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian package `chromium`) to run the page")
def test_report_page_in_chromium_steps_plays_and_shows_tooltips(tmp_path):
    n, captures = 60, 5
    values = (np.arange(n) * 4 + 10).astype(np.uint8)  # thumbnail i is one grey: 4i + 10
    inputs = run_inputs(n=n, captures=captures, layouts=grid_layouts(n, captures), steps=[0, 50, 100, 200, 400],
                        sprite_png=sprite_png(n, values=values), settled_step=200)
    page = tmp_path / "report.html"
    page.write_text(report_html(**inputs), encoding="utf-8")
    with Chromium(CHROMIUM, tmp_path / "profile", log_path=tmp_path / "chromium.log") as browser:
        browser.send("Log.enable", session=True)
        browser.navigate(page.as_uri())
        browser.wait_for("window.report !== undefined && document.getElementById('sprite').complete",
                         what="the report to start")
        assert browser.evaluate("[report.count, report.step(), report.playing()]") == [captures, captures - 1, False]
        assert browser.evaluate("document.getElementById('step-text').textContent") == "step 400"
        assert browser.evaluate("document.getElementById('settled-text').textContent") == "settled at step 200"
        assert browser.evaluate("document.querySelectorAll('#curves .chart').length") == 3
        assert browser.evaluate("document.querySelectorAll('#hardest figcaption').length") == 3

        # The slider, by real key presses: Home, then one step right at a time, through every capture.
        browser.evaluate("document.getElementById('step').focus()")
        press(browser, "Home", HOME)
        shown = [browser.evaluate("[report.step(), document.getElementById('step-text').textContent, "
                                  "document.getElementById('acc-text').textContent]")]
        for _ in range(captures - 1):
            press(browser, "ArrowRight", ARROW_RIGHT)
            shown.append(browser.evaluate("[report.step(), document.getElementById('step-text').textContent, "
                                          "document.getElementById('acc-text').textContent]"))
        assert [s[0] for s in shown] == list(range(captures))
        assert [s[1] for s in shown] == [f"step {step}" for step in inputs["steps"]]
        assert [s[2] for s in shown] == [f"probe acc {acc:.3f}" for acc in inputs["curves"]["probe_acc"]]
        # ... and by a real click at its left end.
        click(browser, *centre(browser, "#step", at=0.0))
        assert browser.evaluate("report.step()") == 0
        for _ in range(2):
            press(browser, "ArrowRight", ARROW_RIGHT)
        assert browser.evaluate("report.step()") == 2

        # Play: a click on the button animates through the captures, easing between them, and stops at the last.
        frames_before = browser.evaluate("report.frames()")
        click(browser, *centre(browser, "#play"))
        assert browser.evaluate("report.playing()")
        seen, positions = set(), set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            step, position, playing = browser.evaluate("[report.step(), report.position(), report.playing()]")
            seen.add(step)
            positions.add(round(position, 2))
            if not playing:
                break
            time.sleep(0.05)
        assert not browser.evaluate("report.playing()"), "played to the end and stopped"
        assert seen == {2, 3, 4} and browser.evaluate("report.step()") == captures - 1
        assert any(p != int(p) for p in positions), f"no frame between captures: {sorted(positions)}"
        assert browser.evaluate("report.frames()") - frames_before >= 10
        assert browser.evaluate("document.getElementById('step-text').textContent") == "step 400"

        # Hover: the real mouse over a point shows its thumbnail, label, prediction and p(true) now.
        point = 13
        browser.evaluate("report.setStep(2)")
        x, y = browser.evaluate(f"report.pointAt({point})")
        browser.send("Input.dispatchMouseEvent", session=True, type="mouseMoved", x=x, y=y)
        text = browser.wait_for("report.tooltip()", timeout=5, what="the tooltip")
        label, predicted = CLASS_NAMES[inputs["labels"][point]], CLASS_NAMES[inputs["predicted"][2][point]]
        assert f"label: {label}" in text and f"predicted: {predicted}" in text
        assert f"p(true)={inputs['p_true'][2][point]:.2f}" in text and "step 100" in text
        grey = browser.evaluate("Array.from(document.getElementById('tip-thumb').getContext('2d')"
                                ".getImageData(20, 20, 1, 1).data)")
        assert grey == [values[point]] * 3 + [255]
        browser.evaluate("report.setStep(3)")  # the point moved away from under the mouse ...
        assert browser.evaluate("report.tooltip()") is None
        x, y = browser.evaluate(f"report.pointAt({point})")  # ... and shows this capture's numbers there
        browser.send("Input.dispatchMouseEvent", session=True, type="mouseMoved", x=x, y=y)
        assert f"p(true)={inputs['p_true'][3][point]:.2f}" in browser.evaluate("report.tooltip()")
        corner = centre(browser, "#map", at=0.0)
        browser.send("Input.dispatchMouseEvent", session=True, type="mouseMoved", x=corner[0] + 1, y=corner[1])
        assert browser.evaluate("report.tooltip()") is None

        # Colour by correctness, through its radio button: the legend counts this capture's errors.
        click(browser, *centre(browser, 'input[value="correct"]'))
        wrong = int(np.sum(inputs["predicted"][3] != inputs["labels"]))
        assert browser.evaluate("[report.mode(), document.getElementById('legend').textContent]") == [
            "correct", f"correct ({n - wrong})wrong ({wrong})"]
        assert console_errors(browser) == []

        # A model without class predictions, and no sprite: no correctness toggle, a tooltip of labels only.
        bare = tmp_path / "bare.html"
        bare.write_text(report_html(**run_inputs(n=n, captures=2, layouts=grid_layouts(n, 2), predicted=None,
                                                 p_true=None, curves={}, sprite_png=None, thumb_size=None,
                                                 hardest=None)), encoding="utf-8")
        browser.navigate(bare.as_uri())
        browser.wait_for("window.report !== undefined", what="the bare report to start")
        assert browser.evaluate("document.getElementById('color-by').hidden")
        assert browser.evaluate("document.getElementById('curves-panel').hidden")
        with pytest.raises(RuntimeError, match="Expected \"class\", but got \"correct\""):
            browser.evaluate("report.colorBy('correct')")
        x, y = browser.evaluate("report.pointAt(5)")
        browser.send("Input.dispatchMouseEvent", session=True, type="mouseMoved", x=x, y=y)
        assert browser.wait_for("report.tooltip()", timeout=5) == f"label: {CLASS_NAMES[5 % 4]}\npoint #5 · step 100"
        assert console_errors(browser) == []
