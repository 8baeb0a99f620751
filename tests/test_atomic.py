"""``write_atomically``: a failed write leaves the earlier file and no temporary one, and says where."""

import errno

import pytest
from tmpfs import small_tmpfs

from lenet_lightning.atomic import write_atomically


def test_write_atomically_full_disk_keeps_the_earlier_file_and_names_it(tmp_path):
    with small_tmpfs(tmp_path / "disk", "64k") as disk:
        target = disk / "run" / "scores.csv"
        write_atomically(target, lambda f: f.write(b"a" * 16_000))
        with pytest.raises(OSError) as error:
            write_atomically(target, lambda f: f.write(b"b" * 100_000))
        assert error.value.errno == errno.ENOSPC
        assert error.value.filename == str(target)
        assert str(disk / "run") in str(error.value)  # the message names the folder
        assert target.read_bytes() == b"a" * 16_000
        assert [p.name for p in target.parent.iterdir()] == ["scores.csv"]


def test_write_atomically_os_error_while_writing_names_the_target(tmp_path):
    target = tmp_path / "config.pbtxt"
    target.write_text("earlier")

    def write(stream):
        stream.write(b"half")
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OSError) as error:
        write_atomically(target, write)
    assert (error.value.errno, error.value.filename) == (errno.EIO, str(target))
    assert error.value.__cause__.errno == errno.EIO
    assert target.read_text() == "earlier" and [p.name for p in tmp_path.iterdir()] == ["config.pbtxt"]


@pytest.mark.parametrize("exception", [OSError("cannot write mode P as PNG"), ValueError("bad"), KeyboardInterrupt()])
def test_write_atomically_other_errors_pass_unchanged(tmp_path, exception):
    def write(stream):
        stream.write(b"half")
        raise exception

    with pytest.raises(type(exception)) as error:
        write_atomically(tmp_path / "x.png", write)
    assert error.value is exception
    assert list(tmp_path.iterdir()) == []
