"""Real fits killed with SIGKILL, or stopped by a full disk, at moments chosen by what they have written.

Each fit runs as ``python cli.py fit`` in a folder of its own, with relative paths and its system temp
folder (``TMPDIR``) in the test's folder, so "no temporary file anywhere" can be checked. A kill is
aimed by polling for a temporary file of the write to interrupt; the process is then stopped
(SIGSTOP), and killed only if that file is still there, i.e. the write is still under way.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from google.protobuf import text_format
from helpers import REPO, read_csv, read_projector
from PIL import Image
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
from tmpfs import small_tmpfs

from lenet_lightning.atomic import TEMPORARY_NAME
from lenet_lightning.projector import remove_leftovers

pytestmark = pytest.mark.slow

EPOCHS, BATCHES = 3, 3  # 3 optimizer steps an epoch: every epoch saves best.ckpt (if better) and last.ckpt
SMALL = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--trainer.limit_train_batches", str(BATCHES), "--trainer.limit_val_batches", "1",
         "--embeddings.num_samples", "60", "--embeddings.tsne", "false"]
RUN = Path("lightning_logs", "version_0")


def start_fit(cwd, system_tmp, *overrides):
    """``python cli.py fit`` on the quickstart config, with relative paths, in ``cwd``."""
    shutil.copy(REPO / "configs" / "quickstart.yaml", cwd / "quickstart.yaml")
    log = open(cwd / f"fit{len(list(cwd.glob('fit*.log')))}.log", "w")  # noqa: SIM115 - closed by finish()
    env = {**os.environ, "TMPDIR": str(system_tmp), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "fit", "--config", "quickstart.yaml", *SMALL,
                             "--trainer.max_epochs", str(EPOCHS), *overrides],
                            cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def finish(proc, timeout=300):
    """Waits for ``proc``; returns its exit status and output."""
    try:
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.log.close()
    return code, Path(proc.log.name).read_text()


def temporary_files(folder):
    return sorted(path for path in Path(folder).rglob(".*.tmp") if TEMPORARY_NAME.fullmatch(path.name))


def wait_stopped(pid, timeout=30):
    """Returns once every thread of ``pid`` is stopped (a thread inside a system call stops after it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/stat") as stream:
                    states.append(stream.read().rsplit(")", 1)[1].split()[0])
            except FileNotFoundError:  # a thread that just ended
                continue
        if all(state in "tT" for state in states):
            return
        time.sleep(0.001)
    raise AssertionError(f"process {pid} did not stop within {timeout} s")


def kill_during(proc, find, what):
    """Polls ``find()`` for a temporary file of a write under way; kills ``proc`` while that file exists.

    A file seen whose write completed before the process stopped is passed over (the process goes on
    to its next write). Returns the temporary file the kill interrupted.
    """
    passed_over = []
    try:
        while proc.poll() is None:
            path = find()
            if path is not None:
                os.kill(proc.pid, signal.SIGSTOP)
                wait_stopped(proc.pid)
                if path.exists():
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    print(f"killed during {path.name} after passing over {len(passed_over)}: {passed_over}")
                    return path
                passed_over.append(path.name)
                os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.0005)
    finally:
        if proc.poll() is None:  # an assertion above failed
            proc.kill()
            proc.wait()
        proc.log.close()
    pytest.fail(f"the fit ended (exit {proc.returncode}) before it was caught {what} (seen too late: {passed_over}):\n"
                f"{Path(proc.log.name).read_text()[-3000:]}")


def replacing_a_checkpoint(run_dir):
    """A checkpoint's temporary file while the checkpoint it replaces exists (a previous one to lose)."""
    def find():
        for path in temporary_files(run_dir / "checkpoints"):
            if (path.parent / path.name[1:].rsplit(".", 2)[0]).exists():
                return path
        return None
    return find


def in_a_capture(run_dir):
    """A projector file's temporary file once the config lists earlier captures (which must survive)
    and there is a checkpoint to resume from."""
    def find():
        if not (run_dir / "projector_config.pbtxt").exists() or not (run_dir / "checkpoints" / "last.ckpt").exists():
            return None
        found = temporary_files(run_dir / "projector") or [
            path for path in run_dir.glob(".projector_config.pbtxt.*.tmp") if TEMPORARY_NAME.fullmatch(path.name)]
        return found[0] if found else None
    return find


def assert_listed_files_whole(run_dir):
    """Every file projector_config.pbtxt lists is complete: tensors of their listed shape, a metadata
    row for each point, a sprite that decodes with a cell for each point."""
    config = text_format.Parse((run_dir / "projector_config.pbtxt").read_text(), ProjectorConfig())
    entries = read_projector(run_dir)  # raises on a truncated tensor
    assert list(entries) == [embedding.tensor_name for embedding in config.embeddings]
    for embedding in config.embeddings:
        tensor, rows = entries[embedding.tensor_name]
        assert tensor.shape == tuple(embedding.tensor_shape)
        if rows is not None:
            assert len(rows) - (1 if "\t" in (run_dir / embedding.metadata_path).read_text().split("\n")[0] else 0) \
                == tensor.shape[0]
        if embedding.sprite.image_path:
            with Image.open(run_dir / embedding.sprite.image_path) as sprite:
                sprite.load()
                width, height = embedding.sprite.single_image_dim
                assert (sprite.width // width) * (sprite.height // height) >= tensor.shape[0]
    return entries


def assert_checkpoints_load(run_dir):
    """Every checkpoint file in the run loads; returns ``{name: global_step}``."""
    steps = {}
    for path in sorted((run_dir / "checkpoints").glob("*.ckpt")):
        steps[path.name] = torch.load(path, weights_only=False, map_location="cpu")["global_step"]
    return steps


def assert_no_temporary_file_anywhere(*folders):
    """No temporary file of ours, and no file at all in the system temp folder (the last one given)."""
    for folder in folders:
        assert temporary_files(folder) == []
    assert [path for path in Path(folders[-1]).rglob("*") if path.is_file()] == []


def resume_to_the_end(cwd, system_tmp, *overrides, expected=None):
    """Resumes the killed fit in place to its end; its series must then be ``expected``'s, an
    uninterrupted run's: the same entries, CSV rows and figures."""
    run_dir = cwd / RUN
    last = str(RUN / "checkpoints" / "last.ckpt")
    proc = start_fit(cwd, system_tmp, *overrides, "--trainer.logger.version", "0", "--ckpt_path", last)
    code, output = finish(proc)
    assert code == 0, output[-3000:]
    assert assert_checkpoints_load(run_dir)["last.ckpt"] == EPOCHS * BATCHES
    entries = assert_listed_files_whole(run_dir)
    assert f"fc2_step{EPOCHS * BATCHES:07d}" in entries
    assert_no_temporary_file_anywhere(run_dir, system_tmp)
    if expected is not None:
        # Training after a resume draws other dropout masks (Lightning does not restore the global
        # RNG), so the scores of later captures differ a little; which captures, rows and figures do not.
        assert series(run_dir, scores=False) == expected


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """``uninterrupted(*overrides)``: the series of the same fit run to its end without a kill; run
    once per set of overrides (the checkpoint-kill tests on both filesystems share one)."""
    runs = {}

    def run(*overrides):
        if overrides not in runs:
            cwd, system_tmp = tmp_path_factory.mktemp("uninterrupted"), tmp_path_factory.mktemp("system_tmp")
            code, output = finish(start_fit(cwd, system_tmp, *overrides))
            assert code == 0, output[-3000:]
            runs[overrides] = series(cwd / RUN, scores=False)
        return runs[overrides]

    return run


@pytest.fixture
def folders(tmp_path, request):
    """``(cwd, system_tmp)``: the fit's folder, on the test's filesystem or on a tmpfs, and a system temp
    folder that is on the test's filesystem either way."""
    system_tmp = tmp_path / "system_tmp"
    system_tmp.mkdir()
    if request.param == "tmpfs":
        with small_tmpfs(tmp_path / "disk", "400m") as disk:
            yield disk, system_tmp
    else:
        (tmp_path / "work").mkdir()
        yield tmp_path / "work", system_tmp


@pytest.mark.parametrize("folders", ["same-filesystem", "tmpfs"], indirect=True)
def test_kill_during_a_checkpoint_save_keeps_the_previous_checkpoint(folders, uninterrupted):
    cwd, system_tmp = folders
    run_dir = cwd / RUN
    overrides = ["--embeddings.every_n_train_steps", "2"]
    proc = start_fit(cwd, system_tmp, *overrides)
    interrupted = kill_during(proc, replacing_a_checkpoint(run_dir), "saving a checkpoint")

    target = interrupted.parent / interrupted.name[1:].rsplit(".", 2)[0]
    steps = assert_checkpoints_load(run_dir)  # the checkpoint being replaced is the previous one, whole
    assert target.name in steps and steps["last.ckpt"] >= BATCHES
    assert_listed_files_whole(run_dir)
    assert interrupted in remove_leftovers(run_dir)
    assert_no_temporary_file_anywhere(run_dir, system_tmp)
    resume_to_the_end(cwd, system_tmp, *overrides, expected=uninterrupted(*overrides))


@pytest.mark.parametrize("folders", ["same-filesystem"], indirect=True)
def test_kill_during_a_capture_keeps_every_listed_file_whole(folders, tensorboard_server, uninterrupted):
    cwd, system_tmp = folders
    run_dir = cwd / RUN
    overrides = ["--embeddings.every_n_train_steps", "1"]
    proc = start_fit(cwd, system_tmp, *overrides)
    interrupted = kill_during(proc, in_a_capture(run_dir), "writing a capture")

    before = assert_listed_files_whole(run_dir)
    removed = remove_leftovers(run_dir)
    # The temporary file itself, or the folder of a capture not listed yet that holds it.
    assert interrupted in removed or interrupted.parent in removed
    assert_no_temporary_file_anywhere(run_dir, system_tmp)
    config = text_format.Parse((run_dir / "projector_config.pbtxt").read_text(), ProjectorConfig())
    listed_folders = {(run_dir / embedding.tensor_path).parent for embedding in config.embeddings}
    assert {path for path in (run_dir / "projector").iterdir() if path.is_dir()} <= listed_folders
    assert read_projector(run_dir).keys() == before.keys()

    resume_to_the_end(cwd, system_tmp, *overrides, expected=uninterrupted(*overrides))
    url = tensorboard_server(cwd / "lightning_logs")
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with no_proxy.open(f"{url}/data/plugin/projector/runs", timeout=30) as reply:
        assert reply.read() == b'["version_0"]'


def test_full_disk_during_a_checkpoint_save_stops_with_the_folder_named(tmp_path):
    # The run folder on a tmpfs that holds one checkpoint (~39 MB) but not two, the system temp folder
    # on another filesystem: Lightning's own saving left a truncated last.ckpt there.
    system_tmp = tmp_path / "system_tmp"
    system_tmp.mkdir()
    with small_tmpfs(tmp_path / "disk", "60m") as disk:
        run_dir = disk / RUN
        code, output = finish(start_fit(disk, system_tmp, "--embeddings.every_n_train_steps", "2"))
        assert code != 0
        assert "No space left on device" in output and str(RUN / "checkpoints") in output, output[-3000:]
        assert assert_checkpoints_load(run_dir) == {"best.ckpt": BATCHES}  # every checkpoint there is whole
        assert_listed_files_whole(run_dir)
        assert_no_temporary_file_anywhere(run_dir, system_tmp)


def in_the_end_of_fit_figures(run_dir):
    """A temporary file of the evolution image or the class-vector figure: after the last step, while
    the end of fit makes what no checkpoint can hold."""
    def find():
        found = [path for path in temporary_files(run_dir / "embeddings")
                 if path.name.startswith((".tsne_evolution.", ".class_vectors."))]
        return found[0] if found else None
    return find


def series(run_dir, scores=True):
    """What a run's projector series is made of: entries, CSV rows (tag, step, and the probe accuracy
    unless ``scores`` is false) and figures."""
    rows = read_csv(run_dir / "embeddings" / "separation.csv")
    figures = sorted(path.name for path in (run_dir / "embeddings").glob("*.png"))
    for name in figures:
        with Image.open(run_dir / "embeddings" / name) as image:
            image.verify()
    columns = ("tag", "step", "probe_acc") if scores else ("tag", "step")
    return list(read_projector(run_dir)), [tuple(row[c] for c in columns) for row in rows], figures


def test_kill_after_the_last_step_is_completed_by_a_resume(tmp_path):
    uninterrupted, killed, system_tmp = tmp_path / "uninterrupted", tmp_path / "killed", tmp_path / "system_tmp"
    for folder in (uninterrupted, killed, system_tmp):
        folder.mkdir()
    overrides = ["--embeddings.tsne", "true", "--embeddings.every_n_train_steps", "4", "--embeddings.perplexity", "5"]
    proc = start_fit(killed, system_tmp, *overrides)
    kill_during(proc, in_the_end_of_fit_figures(killed / RUN), "making the end-of-fit figures")
    code, output = finish(start_fit(uninterrupted, system_tmp, *overrides))
    assert code == 0, output[-3000:]
    reported = tmp_path / "reported"
    shutil.copytree(killed / RUN, reported)  # the killed run, completed by the report command alone

    proc = start_fit(killed, system_tmp, *overrides, "--trainer.logger.version", "0",
                     "--ckpt_path", str(RUN / "checkpoints" / "last.ckpt"))
    code, output = finish(proc)
    assert code == 0, output[-3000:]
    assert_listed_files_whole(killed / RUN)
    assert series(killed / RUN) == series(uninterrupted / RUN)
    assert {"tsne_evolution.png", "class_vectors.png"} <= set(series(killed / RUN)[2])
    # The dynamics and every point's story: the same numbers as the uninterrupted run's (the weights are).
    assert dynamics_and_points(killed / RUN) == dynamics_and_points(uninterrupted / RUN)

    report = subprocess.run([sys.executable, str(REPO / "cli.py"), "report", str(reported)], capture_output=True,
                            text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "settled at step" in report.stdout or "did not settle" in report.stdout
    assert series(reported) == series(uninterrupted / RUN)
    assert dynamics_and_points(reported) == dynamics_and_points(uninterrupted / RUN)


def dynamics_and_points(run_dir):
    """A run's representation-dynamics columns (to 6 decimals), its settled step and its ``points.csv``."""
    columns = ("cka_prev", "cka_first", "knn_overlap_prev", "cka_final", "nc1", "settled")
    rows = [tuple(row["tag"] if c == "tag" else f"{float(row[c]):.6f}" if row[c] else "" for c in ("tag", *columns))
            for row in read_csv(run_dir / "embeddings" / "separation.csv")]
    settled = json.loads((run_dir / "embeddings" / "dynamics.json").read_text())["settled_step"]
    return rows, settled, (run_dir / "embeddings" / "points.csv").read_text()
