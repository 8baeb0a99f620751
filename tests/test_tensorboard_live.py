"""The live reload: a TensorBoard started before the files lists every capture written after it."""

import json
import logging
import os
import time
import urllib.parse
import urllib.request
from importlib import metadata

import numpy as np
import pytest
from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin

from lenet_lightning import projector, tensorboard_live
from lenet_lightning.tensorboard_live import ProjectorLiveReload, config_signature, install, unexpected_internals

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url, path, **params):
    with NO_PROXY.open(f"{url}/data/plugin/projector/{path}?{urllib.parse.urlencode(params)}", timeout=30) as reply:
        return reply.read()


def poll(read, until, what, timeout=60.0):
    """Calls ``read()`` until ``until(value)``; fails with the last value after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if until(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: still {value!r} after {timeout} s")
        time.sleep(0.2)


def listed(url, run):
    runs = json.loads(get(url, "runs"))
    if run not in runs:
        return []
    return [embedding["tensorName"] for embedding in json.loads(get(url, "info", run=run))["embeddings"]]


def write_events_file(run_dir):
    """An events file, so that TensorBoard lists the folder as a run (as a Lightning logger does)."""
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(run_dir))
    writer.flush()
    writer.close()


# Loading every dynamic plugin imports TensorBoard's vendored bleach, which warns about itself.
@pytest.mark.filterwarnings("ignore:html5lib's sanitizer is deprecated:DeprecationWarning")
def test_live_reload_is_a_tensorboard_plugins_entry_point():
    (entry,) = [ep for ep in metadata.entry_points(group="tensorboard_plugins") if ep.value.startswith("lenet_")]
    assert entry.load() is ProjectorLiveReload
    from tensorboard import default

    assert ProjectorLiveReload in default.get_dynamic_plugins()  # what `tensorboard` itself loads


@pytest.mark.slow
def test_live_reload_lists_captures_written_after_the_server_started(tmp_path, tensorboard_server):
    logdir = tmp_path / "lightning_logs"
    logdir.mkdir()
    url = tensorboard_server(logdir, "--reload_interval", "1")  # started before any file exists
    run_dir = logdir / "version_0"
    write_events_file(run_dir)
    rng = np.random.default_rng(0)
    written = []
    for step in (0, 25, 50, 75):
        tag = f"fc2_step{step:07d}"
        values = rng.normal(size=(40, 10)).astype(np.float32)
        projector.write_embedding(run_dir, tag, values, [f"digit {i % 10}" for i in range(40)])
        written.append(tag)
        # Stock TensorBoard 2.21 without TensorFlow lists only the first capture, until restarted.
        assert poll(lambda: listed(url, "version_0"), lambda names: names == written, f"entries after {tag}") == written
        served = np.frombuffer(get(url, "tensor", run="version_0", name=tag), dtype="<f4").reshape(40, 10)
        np.testing.assert_array_equal(served, values)

    # A bookmark written later is served too: it rewrites the config.
    layout = rng.normal(size=(40, 2))
    projector.write_bookmarks(run_dir, written[-1], [projector.layout_bookmark(layout, "step 75")])
    bookmarks = poll(lambda: get_or_none(url, "bookmarks", run="version_0", name=written[-1]), bool, "bookmarks")
    (state,) = json.loads(bookmarks)
    assert [[p["linear-x"], p["linear-y"]] for p in state["projections"]] == layout.tolist()


def get_or_none(url, path, **params):
    try:
        return get(url, path, **params)
    except urllib.error.HTTPError:
        return None


def test_install_patches_the_installed_tensorboard_once(monkeypatch):
    monkeypatch.setattr(ProjectorPlugin, "_update_configs", ProjectorPlugin._update_configs)  # restored after
    original = ProjectorPlugin._update_configs
    assert unexpected_internals(ProjectorPlugin) is None  # the installed TensorBoard is what the patch expects
    assert install() and install()
    assert ProjectorPlugin._update_configs is not original
    assert ProjectorPlugin._update_configs.__wrapped__ is original  # wrapped once, not twice


def test_install_rereads_a_changed_config_in_process(tmp_path, monkeypatch):
    """The wrapped method on a real ProjectorPlugin, with the run list held fixed as TensorBoard's
    data provider would hold it: a rewritten config is read on the next call."""
    monkeypatch.setattr(ProjectorPlugin, "_update_configs", ProjectorPlugin._update_configs)
    run_dir = tmp_path / "version_0"
    projector.write_embedding(run_dir, "a", np.ones((3, 2), np.float32) * 3)

    class Run:
        run_name = "version_0"

    class Provider:
        def list_runs(self, ctx, experiment_id):
            return [Run()]

    class Context:
        data_provider, logdir = Provider(), str(tmp_path)

    plugin = ProjectorPlugin(Context())
    plugin._update_configs()
    assert [e.tensor_name for e in plugin._configs["version_0"].embeddings] == ["a"]
    projector.write_embedding(run_dir, "b", np.ones((3, 2), np.float32) * 3)
    plugin._update_configs()
    assert [e.tensor_name for e in plugin._configs["version_0"].embeddings] == ["a"]  # stock: not re-read
    install()
    plugin._update_configs()  # first call of the wrapper: remembers the signature
    projector.write_embedding(run_dir, "c", np.ones((3, 2), np.float32) * 3)
    plugin._update_configs()
    assert [e.tensor_name for e in plugin._configs["version_0"].embeddings] == ["a", "b", "c"]


def _update_without_run_paths(self):
    self._read_latest_config_files([])


class Init:
    def __init__(self, context):
        self.logdir, self._run_paths, self._configs = context.logdir, None, {}


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ({}, "_update_configs` is not a function"),
        ({"_update_configs": lambda self, force: None}, "takes arguments other than `self`"),
        ({"_update_configs": _update_without_run_paths}, "does not use _run_paths"),
        ({"__init__": lambda self: None, "_update_configs": _update_without_run_paths}, "does not set"),
    ],
)
def test_install_changes_nothing_when_tensorboard_internals_differ(members, reason, caplog):
    plugin_class = type("ProjectorPlugin", (Init,), dict(members))
    before = dict(vars(plugin_class))
    with caplog.at_level(logging.WARNING, logger=tensorboard_live.__name__):
        assert install(plugin_class) is False
    assert dict(vars(plugin_class)) == before
    assert reason in caplog.text and "restart TensorBoard" in caplog.text


def test_config_signature_sees_a_replaced_file_of_the_same_size(tmp_path):
    path = tmp_path / "projector_config.pbtxt"
    path.write_text("a")
    before = config_signature([str(path), str(tmp_path / "absent")])
    replacement = tmp_path / "new"
    replacement.write_text("b")
    os.replace(replacement, path)
    after = config_signature([str(path), str(tmp_path / "absent")])
    assert before != after and before[0][1] is None and after[0][1] is None  # sorted: "absent" first


def test_installed_wrapper_falls_back_to_the_original_on_an_unexpected_instance(monkeypatch):
    calls = []

    class Plugin(Init):
        def _update_configs(self):
            calls.append(self._run_paths)
            self._read_latest_config_files([])

        def _read_latest_config_files(self, pairs):
            return {}, {}

    assert install(Plugin)
    plugin = Plugin(type("Context", (), {"logdir": "/x"})())
    plugin._run_paths = 42  # not the dict of run paths the wrapper reads
    plugin._update_configs()
    assert calls == [42]
