import json
import math
import os
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from PIL import Image
from tensorboard.plugins.projector import projector_plugin
from tensorboard.plugins.projector.projector_config_pb2 import EmbeddingInfo, ProjectorConfig
from torch.utils.tensorboard import SummaryWriter

from lenet_lightning.projector import (
    CONFIG_FILENAME,
    layout_bookmark,
    safe_tag,
    update_projector_config,
    write_bookmarks,
    write_embedding,
    write_sprite,
)

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _config(run_dir):
    return text_format.Parse((run_dir / CONFIG_FILENAME).read_text(), ProjectorConfig())


def _names(run_dir):
    return [e.tensor_name for e in _config(run_dir).embeddings]


def _tensorboard_reads(run_dir, entry):
    """The tensor as the projector plugin reads it: TSV first, raw float32 on a decode error."""
    path = run_dir / entry.tensor_path
    try:
        return projector_plugin._read_tensor_tsv_file(str(path))
    except UnicodeDecodeError:
        return projector_plugin._read_tensor_binary_file(str(path), list(entry.tensor_shape))


def _digits(n, size=28):
    """(n, size, size) uint8 images, image i filled with the value i % 251."""
    return np.broadcast_to((np.arange(n) % 251).astype(np.uint8)[:, None, None], (n, size, size)).copy()


# --- safe_tag ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [("fc2 step 100/x", "fc2_step_100_x"), ("a.b-c_D9", "a.b-c_D9"), ("fc2:0", "fc2_0"), ("..x", "..x")],
)
def test_safe_tag_keeps_only_url_and_file_safe_characters(name, expected):
    assert safe_tag(name) == expected


@pytest.mark.parametrize(("name", "error"), [("", ValueError), ("..", ValueError), (3, TypeError)])
def test_safe_tag_rejects_names_that_are_no_file_name(name, error):
    with pytest.raises(error, match="Expected `name`"):
        safe_tag(name)


# --- write_sprite -----------------------------------------------------------------------------


def test_write_sprite_small_n_keeps_thumbnails_in_a_square_grid(tmp_path):
    images = _digits(10)
    assert write_sprite(images, tmp_path / "sprite.png") == (28, 28)

    sprite = np.asarray(Image.open(tmp_path / "sprite.png"))
    assert sprite.shape == (3 * 28, 4 * 28)  # ceil(sqrt(10)) = 4 columns, 3 rows
    for i in range(10):
        row, col = divmod(i, 4)
        np.testing.assert_array_equal(sprite[row * 28 : (row + 1) * 28, col * 28 : (col + 1) * 28], images[i])
    assert not sprite[2 * 28 :, 2 * 28 :].any()  # the two unused cells are black


def test_write_sprite_accepts_a_channel_dimension(tmp_path):
    images = _digits(4)
    assert write_sprite(images[:, None], tmp_path / "sprite.png") == (28, 28)
    assert Image.open(tmp_path / "sprite.png").size == (56, 56)


def test_write_sprite_huge_n_shrinks_thumbnails_to_fit_max_size(tmp_path):
    n = 100_000
    thumb = write_sprite(_digits(n), tmp_path / "sprite.png")

    cols = math.ceil(math.sqrt(n))  # 317
    assert thumb == (8192 // cols,) * 2 == (25, 25)
    sprite = np.asarray(Image.open(tmp_path / "sprite.png"))
    assert sprite.shape == (math.ceil(n / cols) * 25, cols * 25)
    assert max(sprite.shape) <= 8192
    for i in (0, 1, cols - 1, cols, 54_321, n - 1):  # each thumbnail is exactly its own image, shrunk
        row, col = divmod(i, cols)
        assert (sprite[row * 25 : (row + 1) * 25, col * 25 : (col + 1) * 25] == i % 251).all()


def test_write_sprite_non_square_images_keep_their_aspect(tmp_path):
    height, width = write_sprite(np.zeros((9, 20, 40), np.uint8), tmp_path / "sprite.png", max_size=60)
    assert (height, width) == (10, 20)  # 3 columns of at most 20 px
    assert Image.open(tmp_path / "sprite.png").size == (60, 30)


@pytest.mark.parametrize(
    ("images", "kwargs", "error"),
    [
        (np.zeros((2, 28, 28), np.float32), {}, TypeError),
        ([[[0]]], {}, TypeError),
        (np.zeros((28, 28), np.uint8), {}, ValueError),
        (np.zeros((2, 3, 28, 28), np.uint8), {}, ValueError),
        (np.zeros((0, 28, 28), np.uint8), {}, ValueError),
        (np.zeros((10, 28, 28), np.uint8), {"max_size": 3}, ValueError),
    ],
)
def test_write_sprite_rejects_bad_input(tmp_path, images, kwargs, error):
    with pytest.raises(error, match="Expected `"):
        write_sprite(images, tmp_path / "sprite.png", **kwargs)
    assert not list(tmp_path.iterdir())


def test_write_sprite_failed_write_keeps_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "sprite.png"
    write_sprite(_digits(4), path)
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        write_sprite(_digits(9), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["sprite.png"]


# --- write_embedding --------------------------------------------------------------------------


def test_write_embedding_writes_binary_tensor_and_config_entry(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 10))
    entry = write_embedding(tmp_path, "fc2 step 1", x)

    assert entry.tensor_name == "fc2_step_1"
    assert entry.tensor_path == "projector/fc2_step_1/tensor.bytes"
    np.testing.assert_array_equal(_tensorboard_reads(tmp_path, entry), x.astype(np.float32))
    (info,) = _config(tmp_path).embeddings
    assert info == entry
    assert list(info.tensor_shape) == [50, 10]
    assert not info.metadata_path and not info.HasField("sprite")
    assert not list(tmp_path.rglob(".*.tmp"))


@pytest.mark.parametrize(
    "x",
    [np.zeros((6, 10)), np.frombuffer(b"    " * 12 + "\u00e9\u00e9".encode() * 4, "<f4").reshape(4, 4)],
    ids=["zeros", "text-like"],
)
def test_write_embedding_utf8_decodable_bytes_write_tsv(tmp_path, x):
    raw = x.astype("<f4").tobytes()
    raw.decode("utf-8")  # the premise: TensorBoard would parse these bytes as text
    entry = write_embedding(tmp_path, "fc2", x)

    assert entry.tensor_path == "projector/fc2/tensor.tsv"
    tsv = projector_plugin._read_tensor_tsv_file(str(tmp_path / entry.tensor_path))
    np.testing.assert_array_equal(tsv, x.astype(np.float32))
    assert list(_config(tmp_path).embeddings[0].tensor_shape) == list(x.shape)


def test_write_embedding_metadata_mapping_writes_header(tmp_path):
    entry = write_embedding(
        tmp_path, "e", np.ones((3, 2)), {"label": [7, 1, 2], "name": ["a\tb", "c\nd", "e\r\u2028f"]}
    )
    lines = (tmp_path / entry.metadata_path).read_text().splitlines()
    assert lines == ["label\tname", "7\ta b", "1\tc d", "2\te  f"]


@pytest.mark.parametrize("metadata", [["3", "1", "4"], (3, 1, 4), np.array([3, 1, 4]), {"label": [3, 1, 4]}], ids=type)
def test_write_embedding_single_column_metadata_has_no_header(tmp_path, metadata):
    entry = write_embedding(tmp_path, "e", np.ones((3, 2)), metadata)
    assert (tmp_path / entry.metadata_path).read_text() == "3\n1\n4\n"
    assert entry.metadata_path == "projector/e/metadata.tsv"


def test_write_embedding_blank_metadata_row_is_kept(tmp_path):
    entry = write_embedding(tmp_path, "e", np.ones((3, 2)), ["a", "\t", "c"])
    assert (tmp_path / entry.metadata_path).read_text() == "a\n<empty>\nc\n"


@pytest.mark.parametrize(
    ("metadata", "error", "match"),
    [
        (["a", "b"], ValueError, "Expected `metadata` to have 3 rows"),
        ({"label": [1, 2, 3], "pred": [1, 2]}, ValueError, "Expected `metadata\\['pred'\\]` to have 3 rows"),
        ({}, ValueError, "at least one column"),
        ("abc", TypeError, "Expected `metadata`"),
        (np.zeros((3, 2)), ValueError, "1-D"),
    ],
)
def test_write_embedding_rejects_bad_metadata(tmp_path, metadata, error, match):
    with pytest.raises(error, match=match):
        write_embedding(tmp_path, "e", np.ones((3, 2)), metadata)
    assert not (tmp_path / CONFIG_FILENAME).exists()


@pytest.mark.parametrize(
    ("x", "error"),
    [
        ([[1.0, 2.0]], TypeError),
        (np.ones((2, 2), np.complex64), TypeError),
        (np.ones(3), ValueError),
        (np.ones((0, 10)), ValueError),
    ],
)
def test_write_embedding_rejects_bad_embeddings(tmp_path, x, error):
    with pytest.raises(error, match="Expected `embeddings`"):
        write_embedding(tmp_path, "e", x)


def test_write_embedding_nonfinite_rows_become_zero_with_warning(tmp_path):
    x = np.arange(12, dtype=np.float64).reshape(4, 3) + 1
    x[1, 0] = np.nan
    x[3] = [np.inf, -np.inf, 1e300]  # 1e300 overflows float32 to inf
    with pytest.warns(RuntimeWarning, match="'fc2 step 5': 2 of 4 rows"):
        entry = write_embedding(tmp_path, "fc2 step 5", x)

    with np.errstate(over="ignore"):
        expected = x.astype(np.float32)
    expected[1, 0] = 0
    expected[3] = 0
    np.testing.assert_array_equal(_tensorboard_reads(tmp_path, entry), expected)


def test_write_embedding_sprite_is_referenced_relative_to_run_dir(tmp_path):
    thumb = write_sprite(_digits(5, size=8), tmp_path / "projector" / "sprite.png")
    entry = write_embedding(
        tmp_path,
        "e",
        np.ones((5, 2)),
        sprite_path=tmp_path / "projector" / "sprite.png",
        sprite_thumb_size=thumb,
    )
    assert entry.sprite.image_path == "projector/sprite.png"
    sprite = _config(tmp_path).embeddings[0].sprite
    assert (sprite.image_path, list(sprite.single_image_dim)) == ("projector/sprite.png", [8, 8])

    # A relative sprite path is relative to the run dir; single_image_dim is [width, height].
    write_sprite(np.zeros((5, 4, 6), np.uint8), tmp_path / "wide.png")
    write_embedding(tmp_path, "e", np.ones((5, 2)), sprite_path="wide.png", sprite_thumb_size=(4, 6))
    assert list(_config(tmp_path).embeddings[0].sprite.single_image_dim) == [6, 4]


def test_write_embedding_sprite_outside_run_dir_raises(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    thumb = write_sprite(_digits(4), tmp_path / "sprite.png")
    for sprite_path in (tmp_path / "sprite.png", "../sprite.png", run_dir):
        with pytest.raises(ValueError, match="Expected `sprite_path` to resolve inside the run directory"):
            write_embedding(run_dir, "e", np.ones((4, 2)), sprite_path=sprite_path, sprite_thumb_size=thumb)
    (run_dir / "link.png").symlink_to(tmp_path / "sprite.png")  # TensorBoard resolves links too
    with pytest.raises(ValueError, match="resolve inside the run directory"):
        write_embedding(run_dir, "e", np.ones((4, 2)), sprite_path="link.png", sprite_thumb_size=thumb)
    assert os.listdir(run_dir) == ["link.png"]


def test_write_embedding_symlinked_assets_folder_outside_run_dir_raises(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (run_dir / "projector").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="Expected `the assets folder` to resolve inside"):
        write_embedding(run_dir, "e", np.ones((4, 2)))


@pytest.mark.parametrize(
    ("thumb", "n", "error", "match"),
    [
        (None, 4, TypeError, "Expected `sprite_thumb_size`"),
        ((28,), 4, TypeError, "Expected `sprite_thumb_size`"),
        ((28, 28), 5, ValueError, "to hold 5 thumbnails of 28x28, but it holds 4"),
    ],
)
def test_write_embedding_rejects_sprite_that_does_not_match(tmp_path, thumb, n, error, match):
    write_sprite(_digits(4), tmp_path / "sprite.png")
    with pytest.raises(error, match=match):
        write_embedding(tmp_path, "e", np.ones((n, 2)), sprite_path="sprite.png", sprite_thumb_size=thumb)


def test_write_embedding_missing_sprite_raises(tmp_path):
    with pytest.raises(ValueError, match="Expected `sprite_path` to be an existing image file"):
        write_embedding(tmp_path, "e", np.ones((4, 2)), sprite_path="nope.png", sprite_thumb_size=(28, 28))


# --- update_projector_config ------------------------------------------------------------------


def test_update_projector_config_keeps_earlier_entries_and_replaces_same_tag(tmp_path):
    rng = np.random.default_rng(0)
    for step in (1, 2, 3):
        write_embedding(tmp_path, f"fc2 step {step}", rng.normal(size=(4, 3)), [str(i) for i in range(4)])
    # A resumed run writes step 2 again (now all zeros, so TSV, and without metadata) and step 4.
    write_embedding(tmp_path, "fc2 step 2", np.zeros((4, 3)))
    write_embedding(tmp_path, "fc2 step 4", rng.normal(size=(4, 3)))

    config = _config(tmp_path)
    assert _names(tmp_path) == ["fc2_step_1", "fc2_step_2", "fc2_step_3", "fc2_step_4"]
    step2 = config.embeddings[1]
    assert (step2.tensor_path, step2.metadata_path) == ("projector/fc2_step_2/tensor.tsv", "")
    assert config.embeddings[0].metadata_path == "projector/fc2_step_1/metadata.tsv"


def test_update_projector_config_collapses_duplicates_and_keeps_other_fields(tmp_path):
    (tmp_path / CONFIG_FILENAME).write_text(
        'model_checkpoint_dir: "ckpt"\n'
        'embeddings { tensor_name: "a" tensor_path: "a_old.tsv" }\n'
        'embeddings { tensor_name: "b" tensor_path: "b.tsv" }\n'
        'embeddings { tensor_name: "a" tensor_path: "a_dup.tsv" }\n'
    )
    new_a = EmbeddingInfo(tensor_name="a", tensor_path="a_new.tsv")
    new_c = EmbeddingInfo(tensor_name="c", tensor_path="c.bytes", tensor_shape=[2, 2])
    update_projector_config(tmp_path, [new_a, new_c])

    config = _config(tmp_path)
    assert config.model_checkpoint_dir == "ckpt"
    assert [(e.tensor_name, e.tensor_path) for e in config.embeddings] == [
        ("a", "a_new.tsv"),
        ("b", "b.tsv"),
        ("c", "c.bytes"),
    ]
    assert sorted(os.listdir(tmp_path)) == [CONFIG_FILENAME]  # no temporary file left


@pytest.mark.parametrize(
    ("entry", "error", "match"),
    [
        (EmbeddingInfo(tensor_name="a", tensor_path="../a.tsv"), ValueError, "tensor_path` to resolve"),
        (EmbeddingInfo(tensor_name="a", tensor_path="/etc/passwd"), ValueError, "resolve inside"),
        (EmbeddingInfo(tensor_name="a", tensor_path="a.tsv", sprite={"image_path": "../s.png"}), ValueError,
         "sprite.image_path"),
        (EmbeddingInfo(tensor_path="a.tsv"), ValueError, "tensor_name"),
        ("a", TypeError, "Expected `entries`"),
    ],
)
def test_update_projector_config_rejects_bad_entries(tmp_path, entry, error, match):
    with pytest.raises(error, match=match):
        update_projector_config(tmp_path, [entry])
    assert not (tmp_path / CONFIG_FILENAME).exists()


def test_update_projector_config_unparsable_config_raises(tmp_path):
    (tmp_path / CONFIG_FILENAME).write_text("embeddings {")
    with pytest.raises(ValueError, match="ProjectorConfig text proto"):
        update_projector_config(tmp_path, [EmbeddingInfo(tensor_name="a", tensor_path="a.tsv")])


# --- a real TensorBoard server ----------------------------------------------------------------


def _get(url, path, **params):
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with _NO_PROXY.open(f"{url}/data/plugin/projector/{path}{query}", timeout=30) as response:
        return response.read()


def _wait_for_runs(url, expected, timeout=30.0):
    """The server loads runs in the background after it answers: poll until they are listed."""
    deadline = time.monotonic() + timeout
    while (runs := json.loads(_get(url, "runs"))) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert runs == expected


def _write_events(run_dir):
    with SummaryWriter(run_dir) as writer:
        writer.add_scalar("train/loss", 1.0, 0)


def _assert_served(url, run, expected, sprite_bytes):
    """Checks that the server lists exactly ``expected`` ({name: (tensor, metadata lines)}), in order,
    and serves every tensor, metadata file and the sprite."""
    info = json.loads(_get(url, "info", run=run))
    assert [e["tensorName"] for e in info["embeddings"]] == list(expected)
    for embedding in info["embeddings"]:
        name = embedding["tensorName"]
        tensor, metadata_lines = expected[name]
        assert embedding["tensorShape"] == list(tensor.shape)
        served = _get(url, "tensor", run=run, name=name)
        assert len(served) == tensor.size * 4
        np.testing.assert_array_equal(np.frombuffer(served, np.float32).reshape(tensor.shape), tensor)
        assert len(_get(url, "metadata", run=run, name=name).decode().splitlines()) == metadata_lines
        assert _get(url, "sprite_image", run=run, name=name) == sprite_bytes


@pytest.fixture(scope="module")
def probe():
    """A probe set of 30 images with labels, predictions and (30, 10) activations."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 30)
    return {
        "images": _digits(30),
        "labels": labels,
        "preds": (labels + rng.integers(0, 2, 30)) % 10,
        "x": rng.normal(size=(30, 10)).astype(np.float32),
    }


def _write_run(run_dir, probe, steps, zero_step=None, nan_step=None):
    """Writes the sprite and one entry per step as the callback would; returns {name: (tensor, lines)}.

    ``zero_step``'s activations are all zeros (written as TSV) with one metadata column;
    ``nan_step``'s have two NaN rows.
    """
    sprite = run_dir / "projector" / "sprite.png"
    thumb = write_sprite(probe["images"], sprite)
    expected = {}
    for step in steps:
        x = probe["x"] * step
        metadata = {"label": probe["labels"], "pred": probe["preds"]}
        lines = 31  # header + 30 rows
        if step == zero_step:
            x, metadata, lines = np.zeros_like(x), [str(label) for label in probe["labels"]], 30
        if step == nan_step:
            x = x.copy()
            x[[4, 9]] = np.nan
            with pytest.warns(RuntimeWarning, match="2 of 30 rows"):
                entry = write_embedding(run_dir, f"fc2 step {step}", x, metadata, sprite, thumb)
        else:
            entry = write_embedding(run_dir, f"fc2 step {step}", x, metadata, sprite, thumb)
        expected[entry.tensor_name] = (np.nan_to_num(x, nan=0.0), lines)
    return expected


@pytest.mark.slow
def test_tensorboard_server_serves_every_entry(tmp_path, tensorboard_server, probe):
    run_dir = tmp_path / "logs" / "version_0"
    _write_events(run_dir)
    expected = _write_run(run_dir, probe, steps=(1, 2, 3), zero_step=2, nan_step=3)
    assert [Path(e.tensor_path).name for e in _config(run_dir).embeddings] == [
        "tensor.bytes",
        "tensor.tsv",
        "tensor.bytes",
    ]

    url = tensorboard_server(tmp_path / "logs")
    _wait_for_runs(url, ["version_0"])
    _assert_served(url, "version_0", expected, (run_dir / "projector" / "sprite.png").read_bytes())


@pytest.mark.slow
def test_tensorboard_server_serves_all_entries_after_resume(tmp_path, tensorboard_server, probe):
    logdir = tmp_path / "logs"
    run_dir = logdir / "version_0"
    _write_events(run_dir)
    before = _write_run(run_dir, probe, steps=(1, 2), zero_step=2)
    url = tensorboard_server(logdir)
    _wait_for_runs(url, ["version_0"])
    sprite = (run_dir / "projector" / "sprite.png").read_bytes()
    _assert_served(url, "version_0", before, sprite)

    # Resume into the same run: a second events file, step 2 again (now non-zero, so binary), new steps.
    _write_events(run_dir)
    after = _write_run(run_dir, probe, steps=(2, 3, 4), nan_step=3)
    assert _names(run_dir) == ["fc2_step_1", "fc2_step_2", "fc2_step_3", "fc2_step_4"]

    # The running server keeps the config it read (without TensorFlow it re-reads only when the
    # run list changes), and every entry it lists is still served.
    for embedding in json.loads(_get(url, "info", run="version_0"))["embeddings"]:
        name = embedding["tensorName"]
        assert len(_get(url, "tensor", run="version_0", name=name)) == 30 * 10 * 4
        assert _get(url, "metadata", run="version_0", name=name)
    # A restarted server lists every entry once and serves the new data.
    url = tensorboard_server(logdir)
    _wait_for_runs(url, ["version_0"])
    _assert_served(url, "version_0", {**before, **after}, sprite)


# The fields the Projector reads when it loads a server bookmark: without any of them it shows a
# blank plot and a TypeError (TensorBoard 2.21, measured in headless Chromium).
BOOKMARK_FIELDS = {
    "selectedProjection", "projections", "pcaComponentDimensions", "tSNEPerplexity", "tSNELearningRate",
    "tSNEIteration", "selectedPoints", "customXLeftText", "customXRightText", "customYUpText", "customYDownText",
    "selectedColorOptionName", "selectedLabelOption",
}


def test_layout_bookmark_is_a_custom_projection_of_the_layout_coloured_by_class():
    layout = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    state = layout_bookmark(layout, "step 25", perplexity=12.5)
    assert not BOOKMARK_FIELDS - set(state)
    assert state["selectedProjection"] == "custom"  # "tsne" would restart the browser's t-SNE and drift
    assert state["selectedColorOptionName"] == state["selectedLabelOption"] == "label"
    assert [[p["linear-x"], p["linear-y"]] for p in state["projections"]] == layout.tolist()
    assert all(isinstance(state[key], str) for key in BOOKMARK_FIELDS if key.startswith("custom"))
    assert state["tSNEPerplexity"] == 12.5 and state["tSNELearningRate"] == 1.0  # log10 of the default 10
    assert json.loads(json.dumps(state, allow_nan=False)) == state


@pytest.mark.parametrize(
    "layout", [np.zeros((3, 3)), np.zeros(4), np.zeros((0, 2)), np.array([[0.0, np.nan]]), np.array([["a", "b"]])]
)
def test_layout_bookmark_rejects_what_the_projector_cannot_place(layout):
    with pytest.raises(ValueError, match="Expected `layout`"):
        layout_bookmark(layout, "step 0")


def test_write_bookmarks_lists_them_in_the_entry_and_keeps_the_rest(tmp_path):
    rng = np.random.default_rng(0)
    first = write_embedding(tmp_path, "fc2_step0000000", rng.normal(size=(6, 10)), [f"c{i}" for i in range(6)])
    write_embedding(tmp_path, "fc2_step0000025", rng.normal(size=(6, 10)))
    layout = rng.normal(size=(6, 2))
    rel = write_bookmarks(tmp_path, "fc2_step0000000", [layout_bookmark(layout, "step 0")])
    assert rel == "projector/fc2_step0000000/bookmarks.json"
    (info, other) = _config(tmp_path).embeddings
    assert info.bookmarks_path == rel and not other.bookmarks_path
    assert (info.tensor_path, info.metadata_path, list(info.tensor_shape)) == (
        first.tensor_path, first.metadata_path, [6, 10])
    (state,) = json.loads((tmp_path / rel).read_text())
    assert state["dataSetDimensions"] == [6, 10]
    assert [[p["linear-x"], p["linear-y"]] for p in state["projections"]] == layout.tolist()
    # Written again: replaced, still one entry per tag.
    write_bookmarks(tmp_path, "fc2_step0000000", [layout_bookmark(layout * 2, "again")] * 2)
    assert len(json.loads((tmp_path / rel).read_text())) == 2
    assert _names(tmp_path) == ["fc2_step0000000", "fc2_step0000025"]
    # What the plugin serves, read the way it reads them.
    assert projector_plugin._rel_to_abs_asset_path(rel, str(tmp_path / CONFIG_FILENAME)) == str(tmp_path / rel)


@pytest.mark.parametrize(
    ("tag", "states", "match"),
    [
        ("fc2_step0000099", [{"projections": [{}] * 4}], "to list the embedding 'fc2_step0000099'"),
        ("a", [], "non-empty sequence"),
        ("a", {"projections": []}, "non-empty sequence"),
        ("a", [{"projections": [{}] * 3}], "4 projections, one per row of 'a', but got 3"),
        ("a", [{"label": "no projections"}], "4 projections"),
    ],
)
def test_write_bookmarks_rejects_states_that_do_not_fit_the_entry(tmp_path, tag, states, match):
    write_embedding(tmp_path, "a", np.ones((4, 3)))
    before = (tmp_path / CONFIG_FILENAME).read_text()
    with pytest.raises(ValueError, match=match):
        write_bookmarks(tmp_path, tag, states)
    assert (tmp_path / CONFIG_FILENAME).read_text() == before
    assert not list(tmp_path.rglob("bookmarks.json"))
