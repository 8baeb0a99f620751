"""``projector.remove_leftovers``: what a killed run left in its folder goes, everything listed stays."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO, read_projector
from tensorboard.plugins.projector.projector_config_pb2 import EmbeddingInfo

from lenet_lightning.atomic import TEMPORARY_NAME
from lenet_lightning.projector import (
    remove_leftovers,
    update_projector_config,
    write_embedding,
    write_sprite,
)


def killed_write(target):
    """Runs ``write_atomically(target, ...)`` in a process that SIGKILLs itself mid-write; returns the
    temporary file it left, as named by the real code."""
    code = ("import os, signal, sys\n"
            "from lenet_lightning.atomic import write_atomically\n"
            "def write(f):\n"
            "    f.write(b'half')\n"
            "    f.flush()\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n"
            "write_atomically(sys.argv[1], write)\n")
    result = subprocess.run([sys.executable, "-c", code, str(target)], cwd=REPO, capture_output=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    (left,) = [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")]
    return left


def make_run(run_dir):
    """A run folder with two listed captures and a sprite, as the callback writes them."""
    thumb = write_sprite(np.zeros((4, 8, 8), np.uint8), run_dir / "projector" / "sprite.png")
    for step in (0, 10):
        write_embedding(run_dir, f"fc2_step{step:07d}", np.arange(40, dtype=np.float32).reshape(4, 10) + step,
                        ["0", "1", "2", "3"], sprite_path="projector/sprite.png", sprite_thumb_size=thumb)
    return {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def test_remove_leftovers_removes_killed_writes_and_unlisted_asset_folders(tmp_path):
    run_dir, plots = tmp_path / "version_0", tmp_path / "plots"
    before = make_run(run_dir)
    listed = read_projector(run_dir)
    # What kills at different moments leave: temporary files of the real writer, and a capture's
    # assets written before the config listed them.
    leftovers = [
        killed_write(run_dir / "projector" / "fc2_step0000010" / "tensor.bytes"),  # replacing a listed file
        killed_write(run_dir / "projector_config.pbtxt"),
        killed_write(run_dir / "checkpoints" / "last.ckpt"),
        killed_write(plots / "separation.csv"),  # a plot folder outside the run folder
    ]
    unlisted = run_dir / "projector" / "fc2_step0000020"
    unlisted.mkdir()
    (unlisted / "tensor.bytes").write_bytes(b"\0" * 160)
    (unlisted / "metadata.tsv").write_text("0\n1\n2\n3\n")

    removed = remove_leftovers(run_dir, [plots])

    assert removed == sorted([*leftovers, unlisted])
    assert not unlisted.exists() and not any(p.exists() for p in leftovers)
    # Everything listed (and the sprite) is byte for byte as it was, and still reads.
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    after = read_projector(run_dir)
    assert list(after) == list(listed)
    assert all(np.array_equal(after[tag][0], listed[tag][0]) for tag in listed)
    assert remove_leftovers(run_dir, [plots]) == []  # nothing more to do


def test_remove_leftovers_never_removes_a_listed_file_or_other_names(tmp_path):
    run_dir = tmp_path
    # A listed file whose name looks temporary, and names that are not write_atomically's.
    odd = run_dir / "projector" / "odd" / ".tensor.bytes.0123abcd.tmp"
    odd.parent.mkdir(parents=True)
    odd.write_bytes(np.ones((2, 3), "<f4").tobytes())
    listed = EmbeddingInfo(tensor_name="odd", tensor_path=str(odd.relative_to(run_dir)), tensor_shape=[2, 3])
    update_projector_config(run_dir, [listed])
    kept = [run_dir / name for name in ("notes.tmp", ".hidden.tmp", ".a.0123ABCD.tmp", ".a.0123abc.tmp",
                                        "a.0123abcd.tmp", ".a.0123abcd.tmp.bak")]
    for path in kept:
        path.write_text("mine")

    assert remove_leftovers(run_dir) == []
    assert odd.exists() and all(path.read_text() == "mine" for path in kept)


def test_remove_leftovers_without_config_removes_every_asset_folder_but_keeps_files(tmp_path):
    # Killed during the very first capture: no config yet, so no folder is listed.
    (tmp_path / "projector" / "fc2_step0000000").mkdir(parents=True)
    (tmp_path / "projector" / "fc2_step0000000" / "tensor.bytes").write_bytes(b"\0" * 40)
    write_sprite(np.zeros((4, 8, 8), np.uint8), tmp_path / "projector" / "sprite.png")
    assert remove_leftovers(tmp_path) == [tmp_path / "projector" / "fc2_step0000000"]
    assert [p.name for p in (tmp_path / "projector").iterdir()] == ["sprite.png"]
    assert remove_leftovers(tmp_path / "missing") == []


def test_remove_leftovers_does_not_follow_links(tmp_path):
    run_dir, outside = tmp_path / "run", tmp_path / "outside"
    make_run(run_dir)
    (outside / "assets").mkdir(parents=True)
    (outside / "assets" / ".x.0123abcd.tmp").write_text("not ours")
    os.symlink(outside / "assets", run_dir / "projector" / "linked")
    os.symlink(outside, run_dir / "elsewhere")
    assert remove_leftovers(run_dir) == []
    assert (outside / "assets" / ".x.0123abcd.tmp").read_text() == "not ours"
    assert (run_dir / "projector" / "linked").is_symlink()


def test_remove_leftovers_with_an_unreadable_config_removes_nothing(tmp_path):
    (tmp_path / "projector" / "a").mkdir(parents=True)
    (tmp_path / ".x.0123abcd.tmp").write_text("")
    (tmp_path / "projector_config.pbtxt").write_text("embeddings {")
    with pytest.raises(ValueError, match="Expected .*projector_config.pbtxt to be a ProjectorConfig"):
        remove_leftovers(tmp_path)
    assert (tmp_path / "projector" / "a").is_dir() and (tmp_path / ".x.0123abcd.tmp").exists()


@pytest.mark.parametrize("other_dirs", ["plots", b"plots"])
def test_remove_leftovers_rejects_a_single_path_for_other_dirs(tmp_path, other_dirs):
    with pytest.raises(TypeError, match="Expected `other_dirs` to be a sequence of folders"):
        remove_leftovers(tmp_path, other_dirs)


def test_temporary_name_matches_what_write_atomically_leaves(tmp_path):
    left = killed_write(tmp_path / "file.txt")
    assert TEMPORARY_NAME.fullmatch(left.name)
    assert left.read_bytes() == b"half"
