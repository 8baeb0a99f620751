import io

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from PIL import Image

from lenet_lightning.animation import evolution_gif, interpolated_frames
from lenet_lightning.plots import class_color

CLASS_NAMES = ["left-then-right", "right-then-left"]


def random_layouts(n_captures, n_points=40, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n_points, 2)) for _ in range(n_captures)]


def swapping_layouts(n_points=200, n_captures=3, seed=0):
    """Class 0 starts in the left half and ends in the right half of the map; class 1 the other way."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_points) % 2
    side = np.where(labels == 0, -1.0, 1.0)  # (N,) which half at the first capture
    layouts = []
    for capture in range(n_captures):
        x = side * (1.0 - 2.0 * capture / (n_captures - 1)) * 8.0 + rng.uniform(-1.0, 1.0, n_points)
        layouts.append(np.stack([x, rng.uniform(-9.0, 9.0, n_points)], axis=1))
    return layouts, labels


def rgb(colour):
    return tuple(round(255 * channel) for channel in to_rgb(colour))


def decoded_frames(data):
    """Every frame of a GIF as ``(H, W, 3)`` RGB, and its duration in ms."""
    frames, durations = [], []
    with Image.open(io.BytesIO(data)) as gif:
        for index in range(gif.n_frames):
            gif.seek(index)
            frames.append(np.asarray(gif.convert("RGB")))
            durations.append(gif.info["duration"])
    return frames, durations


def mean_column(frame, colour, width):
    """Mean column of the pixels of ``colour`` left of column ``width`` (the legend lies right of the map)."""
    _, columns = np.nonzero((frame[:, :width] == colour).all(axis=2))
    assert len(columns) > 0, f"no pixel of {colour}"
    return columns.mean()


# --- the frame plan


def test_interpolated_frames_plans_holds_and_glides():
    layouts = random_layouts(3)
    # 20 slots: 3 captures x 2 held slots, then 7 in-between frames per transition.
    frames = interpolated_frames(layouts, seconds=2.0, fps=10.0, hold=2)
    assert len(frames) == 3 + 2 * 7
    assert [frame.capture for frame in frames] == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2]
    assert [round(frame.seconds, 9) for frame in frames] == [0.2] + [0.1] * 7 + [0.2] + [0.1] * 7 + [0.2]
    for index, capture in ((0, 0), (8, 1), (16, 2)):
        np.testing.assert_array_equal(frames[index].positions, layouts[capture])


def test_interpolated_frames_starts_and_ends_exactly_on_the_first_and_last_maps():
    layouts = random_layouts(4)
    frames = interpolated_frames(layouts)
    assert np.array_equal(frames[0].positions, layouts[0])
    assert np.array_equal(frames[-1].positions, layouts[-1])
    assert (frames[0].capture, frames[-1].capture) == (0, 3)


def test_interpolated_frames_move_between_the_maps_monotonically_with_the_midpoint_halfway():
    start, end = random_layouts(2)
    frames = interpolated_frames([start, end], seconds=1.3, fps=10.0, hold=2)  # 13 slots: 9 in between
    between = np.stack([frame.positions for frame in frames[1:-1]])  # (9, N, 2)
    assert len(between) == 9
    assert (between >= np.minimum(start, end) - 1e-12).all() and (between <= np.maximum(start, end) + 1e-12).all()
    progress = (between - start) / (end - start)  # (9, N, 2), the same for every coordinate
    np.testing.assert_allclose(progress, progress[:, :1, :1] * np.ones_like(progress))
    assert (np.diff(progress[:, 0, 0]) > 0).all() and 0 < progress[0, 0, 0] < progress[-1, 0, 0] < 1
    np.testing.assert_allclose(between[4], (start + end) / 2)
    assert [frame.capture for frame in frames[1:-1]] == [0] * 4 + [1] * 5  # the nearer capture's title


@pytest.mark.parametrize("n_captures", [2, 3, 20, 60])
def test_interpolated_frames_last_about_the_given_seconds_whatever_the_captures(n_captures):
    frames = interpolated_frames(random_layouts(n_captures, n_points=5), seconds=15.0, fps=10.0)
    assert 10.0 <= sum(frame.seconds for frame in frames) <= 20.0
    assert sorted({frame.capture for frame in frames}) == list(range(n_captures))
    assert len(frames) <= 150  # no more frames than 15 s at 10 fps


def test_interpolated_frames_glide_at_least_one_frame_per_transition_at_60_captures():
    frames = interpolated_frames(random_layouts(60, n_points=5), seconds=15.0, fps=10.0)
    assert len(frames) == 60 + 59


def test_interpolated_frames_cut_when_captures_outnumber_the_slots():
    layouts = random_layouts(200, n_points=3)
    frames = interpolated_frames(layouts, seconds=15.0, fps=10.0)
    assert len(frames) == 200
    for capture, frame in enumerate(frames):
        assert frame.capture == capture and np.array_equal(frame.positions, layouts[capture])
    assert sum(frame.seconds for frame in frames) == pytest.approx(15.0)


def test_interpolated_frames_of_one_capture_is_a_still():
    (layout,) = random_layouts(1)
    (frame,) = interpolated_frames([layout], seconds=15.0)
    assert np.array_equal(frame.positions, layout) and frame.capture == 0 and frame.seconds == 15.0


# --- the GIF


def test_evolution_gif_has_one_frame_per_planned_frame_loops_and_lasts_the_given_seconds():
    layouts, labels = swapping_layouts()
    data = evolution_gif(layouts, labels, CLASS_NAMES, ["a", "b", "c"], seconds=3.0, fps=10.0, size=120)
    plan = interpolated_frames(layouts, seconds=3.0, fps=10.0)
    with Image.open(io.BytesIO(data)) as gif:
        assert gif.format == "GIF" and gif.n_frames == len(plan) and gif.info["loop"] == 0
    _, durations = decoded_frames(data)
    assert sum(durations) == 3000
    assert all(abs(duration - 1000 * frame.seconds) <= 10 for duration, frame in zip(durations, plan, strict=True))


def test_evolution_gif_first_and_last_frames_show_the_first_and_last_maps():
    layouts, labels = swapping_layouts()
    size = 160
    frames, _ = decoded_frames(evolution_gif(layouts, labels, CLASS_NAMES, ["a", "b", "c"], seconds=2.0, size=size))
    first, last = frames[0], frames[-1]
    left, right = rgb(class_color(0)), rgb(class_color(1))
    assert mean_column(first, left, size) < size / 2 < mean_column(first, right, size)
    assert mean_column(last, right, size) < size / 2 < mean_column(last, left, size)


def test_evolution_gif_uses_exactly_the_class_colours_on_white_and_greys():
    layouts, labels = random_layouts(3, n_points=300), np.arange(300) % 10
    names = [f"class {index}" for index in range(10)]
    data = evolution_gif(layouts, labels, names, ["x", "y", "z"], seconds=1.0, size=120)
    class_colours = {rgb(class_color(index)) for index in range(10)}
    with Image.open(io.BytesIO(data)) as gif:
        palette = np.array(gif.getpalette()).reshape(-1, 3)
    assert class_colours <= set(map(tuple, palette.tolist()))
    for frame in decoded_frames(data)[0]:  # one palette: no frame may bring colours of its own
        colours = set(map(tuple, np.unique(frame.reshape(-1, 3), axis=0).tolist()))
        assert class_colours <= colours  # every class is on the map (and in the legend)
        assert all(colour in class_colours or colour[0] == colour[1] == colour[2] for colour in colours)


def test_evolution_gif_keeps_the_frames_of_a_map_that_did_not_move():
    (layout,) = random_layouts(1)
    labels = np.arange(len(layout)) % 2
    data = evolution_gif([layout] * 3, labels, CLASS_NAMES, ["a", "a", "a"], seconds=1.0, size=100)
    frames, _ = decoded_frames(data)
    assert len(frames) == len(interpolated_frames([layout] * 3, seconds=1.0))
    assert all(np.abs(frame.astype(int) - frames[0]).max() <= 1 for frame in frames)  # they look the same


def test_evolution_gif_of_one_capture_is_a_still():
    (layout,) = random_layouts(1)
    data = evolution_gif([layout], np.arange(len(layout)) % 2, CLASS_NAMES, ["step 0"], seconds=4.0, size=100)
    with Image.open(io.BytesIO(data)) as gif:
        assert gif.n_frames == 1


def test_evolution_gif_of_2000_points_and_20_captures_stays_small():
    rng = np.random.default_rng(0)
    labels = np.arange(2000) % 10
    layouts = [rng.normal(size=(2000, 2)) + 5 * rng.normal(size=(10, 2))[labels] for _ in range(20)]
    titles = [f"step {100 * capture} · probe acc 0.9{capture:02d}" for capture in range(20)]
    data = evolution_gif(layouts, labels, [f"class {index}" for index in range(10)], titles)
    assert len(data) <= 3_000_000
    with Image.open(io.BytesIO(data)) as gif:
        assert gif.n_frames == len(interpolated_frames(layouts))


# --- bad inputs

LAYOUTS = random_layouts(2, n_points=4)


@pytest.mark.parametrize(
    ("layouts", "kwargs", "match"),
    [
        ([], {}, "`layouts` to hold at least one layout"),
        ([np.zeros((4, 3))], {}, r"shape \(N, 2\), but got \(4, 3\)"),
        ([np.zeros((4, 2)), np.zeros((5, 2))], {}, r"but got \(5, 2\) at index 1"),
        ([np.zeros((4, 2)), np.full((4, 2), np.nan)], {}, "finite positions, but got nan or inf .* index 1"),
        (LAYOUTS, {"seconds": 0.0}, "`seconds` to be a positive number, but got 0.0"),
        (LAYOUTS, {"fps": -1}, "`fps` to be a positive number, but got -1"),
        (LAYOUTS, {"fps": float("inf")}, "`fps` to be a positive number, but got inf"),
        (LAYOUTS, {"hold": 0}, "`hold` to be a positive integer .* but got 0"),
    ],
)
def test_interpolated_frames_rejects_bad_inputs(layouts, kwargs, match):
    with pytest.raises(ValueError, match=match):
        interpolated_frames(layouts, **kwargs)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"titles": ["only one"]}, "`titles` to have 2 entries, one per layout, but got 1"),
        ({"labels": np.zeros(3, int)}, r"`labels` to have shape \(4,\), one per point, but got \(3,\)"),
        ({"labels": np.zeros(4)}, "integer class indices, but got dtype float64"),
        ({"labels": np.array([0, 1, 2, 1])}, r"in \[0, 2\), one per class name, but got values in \[0, 2\]"),
        ({"size": 10}, "`size` to be an integer of at least 64 .* but got 10"),
        ({"seconds": -2.0}, "`seconds` to be a positive number, but got -2.0"),
        ({"layouts": []}, "`layouts` to hold at least one layout"),
    ],
)
def test_evolution_gif_rejects_bad_inputs(change, match):
    arguments = {"layouts": LAYOUTS, "labels": np.array([0, 1, 0, 1]), "class_names": CLASS_NAMES,
                 "titles": ["a", "b"], "size": 64} | change
    with pytest.raises(ValueError, match=match):
        evolution_gif(**arguments)
