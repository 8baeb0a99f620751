import gzip
import struct

import numpy as np
import pytest

from lenet_lightning.idx import candidate_folders, find_idx_files, missing_files_message, read_idx


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.mark.parametrize("gzipped", [False, True])
def test_read_idx_images_and_labels_round_trip(tmp_path, gzipped):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=7, dtype=np.uint8)
    for name, array in (("images", images), ("labels", labels)):
        path = tmp_path / (f"{name}.gz" if gzipped else name)
        data = idx_bytes(array)
        path.write_bytes(gzip.compress(data) if gzipped else data)
        np.testing.assert_array_equal(read_idx(path, name), array)


def test_read_idx_truncated_file_names_the_file_and_the_shortfall(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((3, 28, 28), np.uint8))[:-100])
    with pytest.raises(ValueError, match=r"Truncated idx file .*train-images-idx3-ubyte.*2352 bytes.*found 2252"):
        read_idx(path, "images")


def test_read_idx_header_only_fragment_is_truncated(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(b"\x00\x00\x08")
    with pytest.raises(ValueError, match="Truncated idx file .*shorter than the 8-byte header"):
        read_idx(path, "labels")


def test_read_idx_wrong_magic_is_reported(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(idx_bytes(np.zeros((2, 4, 4), np.uint8)))  # an images file where labels belong
    with pytest.raises(ValueError, match="Corrupt idx file .*train-labels-idx1-ubyte.*magic number 00000803"):
        read_idx(path, "labels")


def test_read_idx_trailing_garbage_is_corrupt(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.arange(5, dtype=np.uint8)) + b"junk")
    with pytest.raises(ValueError, match="Corrupt idx file .*promises 5 bytes.*found 9"):
        read_idx(path, "labels")


@pytest.mark.parametrize("damage", ["cut", "garbage"])
def test_read_idx_corrupt_gzip_is_reported(tmp_path, damage):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    compressed = gzip.compress(idx_bytes(np.arange(500, dtype=np.uint8) % 10))
    path.write_bytes(compressed[: len(compressed) // 2] if damage == "cut" else b"\x1f\x8b" + b"\xff" * 40)
    with pytest.raises(ValueError, match=r"Corrupt idx file .*t10k-labels-idx1-ubyte.gz: cannot decompress"):
        read_idx(path, "labels")


def test_find_idx_files_prefers_torchvision_layout_then_flat(tmp_path):
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    folders = candidate_folders(tmp_path, "MNIST")
    assert find_idx_files(folders) is None
    for name in names:
        (tmp_path / f"{name}.gz").write_bytes(b"")
    assert find_idx_files(folders)["test"]["labels"] == tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in names:
        (raw / name).write_bytes(b"")
    assert find_idx_files(folders)["train"]["images"] == raw / "train-images-idx3-ubyte"


def test_missing_files_message_names_folders_files_and_ways_out(tmp_path):
    message = missing_files_message("mnist", candidate_folders(tmp_path, "MNIST"))
    assert str(tmp_path / "MNIST" / "raw") in message and str(tmp_path) in message
    assert "t10k-labels-idx1-ubyte" in message
    assert "--data.download true" in message and "--data.dataset digits" in message
    assert "\n" not in message
