import gzip
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import REPO

from lenet_lightning.data import (
    CLASS_NAMES,
    FASHION_NAMES,
    EpochShuffle,
    InMemoryImages,
    LeNetDataModule,
    TensorBatchLoader,
    random_shift,
    stratified_subset,
)
from lenet_lightning.model import normalize_images

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
IDX_NAMES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def write_tiny_mnist(folder, n_train=60, n_test=20, gzipped=False, seed=0):
    """Four real idx files with a recognisable pattern: image i is filled with value i % 256."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        arrays[(split, "images")] = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None], (n, 28, 28)).copy()
        arrays[(split, "labels")] = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(arrays[(split, "labels")])
    for key, array in arrays.items():
        data = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
        name = IDX_NAMES[key] + (".gz" if gzipped else "")
        (folder / name).write_bytes(gzip.compress(data) if gzipped else data)
    return arrays


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
@pytest.mark.parametrize("gzipped", [False, True])
def test_datamodule_reads_idx_folders(tmp_path, layout, gzipped):
    folder = tmp_path if layout == "flat" else tmp_path / "FashionMNIST" / "raw"
    arrays = write_tiny_mnist(folder, gzipped=gzipped)
    dm = LeNetDataModule("fashion_mnist", data_dir=str(tmp_path), download=False, val_size=10, batch_size=8)
    dm.setup("fit")
    train, val, test = (dm.split_tensors(s) for s in ("train", "val", "test"))
    assert len(train[1]) == 50 and len(val[1]) == 10
    np.testing.assert_array_equal(test[1].numpy(), arrays[("test", "labels")])
    np.testing.assert_array_equal(test[0][:, 0, 0, 0].numpy(), np.arange(20))
    # Validation is held out of training: no training image appears in both.
    assert not set(train[0][:, 0, 0, 0].tolist()) & set(val[0][:, 0, 0, 0].tolist())
    assert dm.class_names == FASHION_NAMES


def test_datamodule_split_is_seeded_and_stratified():
    a, b, c = (LeNetDataModule("digits", val_size=200, seed=s) for s in (1, 1, 2))
    for dm in (a, b, c):
        dm.setup("fit")
    assert torch.equal(a.split_tensors("val")[0], b.split_tensors("val")[0])
    assert not torch.equal(a.split_tensors("val")[0], c.split_tensors("val")[0])
    counts = np.bincount(a.split_tensors("val")[1].numpy(), minlength=10)
    assert counts.min() >= 19 and counts.max() <= 21
    assert torch.equal(a.split_tensors("test")[1], c.split_tensors("test")[1])  # the test split is fixed


def test_datamodule_digits_are_mnist_framed_28x28():
    dm = LeNetDataModule("digits")
    dm.setup("fit")
    images = torch.cat([dm.split_tensors(s)[0] for s in ("train", "val", "test")])
    assert images.shape == (1797, 1, 28, 28) and images.dtype == torch.uint8
    assert images[:, :, :4].max() == 0 and images[:, :, :, -4:].max() == 0  # MNIST's empty border
    assert images.max() == 255


def test_datamodule_missing_files_fail_at_construction_with_clear_message(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        LeNetDataModule("mnist", data_dir=str(tmp_path), download=False)
    message = str(info.value)
    assert str(tmp_path) in message and "train-images-idx3-ubyte" in message and "--data.dataset digits" in message


@pytest.mark.parametrize("gzipped", [False, True])
def test_datamodule_truncated_file_fails_at_construction_naming_it(tmp_path, gzipped):
    write_tiny_mnist(tmp_path, gzipped=gzipped)
    name = "t10k-images-idx3-ubyte" + (".gz" if gzipped else "")
    path = tmp_path / name
    data = gzip.decompress(path.read_bytes()) if gzipped else path.read_bytes()
    path.write_bytes(gzip.compress(data[:-5]) if gzipped else data[:-5])
    with pytest.raises(ValueError, match=f"Truncated idx file .*{name}.*header promises 15680 bytes.*found 15675"):
        LeNetDataModule("mnist", data_dir=str(tmp_path), download=False, val_size=10)


def test_datamodule_corrupt_file_in_the_middle_fails_at_setup_naming_it(tmp_path):
    """A header and size that look right but a gzip stream whose checksum fails is caught when read."""
    write_tiny_mnist(tmp_path, gzipped=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[-8:-4] = bytes(b ^ 0xFF for b in data[-8:-4])  # gzip's CRC-32 of the content
    path.write_bytes(bytes(data))
    dm = LeNetDataModule("mnist", data_dir=str(tmp_path), download=False, val_size=10)
    with pytest.raises(ValueError, match="Corrupt idx file .*train-images-idx3-ubyte.gz: cannot decompress"):
        dm.setup("fit")


def test_datamodule_mismatched_image_and_label_counts(tmp_path):
    write_tiny_mnist(tmp_path)
    labels = np.zeros(7, np.uint8)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">HBBI", 0, 8, 1, 7) + labels.tobytes())
    dm = LeNetDataModule("mnist", data_dir=str(tmp_path), download=False, val_size=10)
    with pytest.raises(ValueError, match="20 images but 7 labels"):
        dm.setup("fit")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "`batch_size`.*0"),
        ({"eval_batch_size": -3}, "`eval_batch_size`.*-3"),
        ({"val_size": 60_000}, "`val_size`.*60000"),
        ({"val_size": 1.5}, "`val_size`.*1.5"),
        ({"val_size": 0}, "`val_size`.*0"),
        ({"dataset": "cifar10"}, "`dataset`.*cifar10"),
    ],
)
def test_datamodule_rejects_bad_sizes_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LeNetDataModule(**{"dataset": "mnist", "download": True, **kwargs})


def test_datamodule_default_val_size_follows_the_images_in_the_folder(tmp_path):
    write_tiny_mnist(tmp_path, n_train=4000)
    dm = LeNetDataModule("mnist", data_dir=str(tmp_path), download=False)
    assert dm.num_val == round(4000 / 12)  # 1/12 of what is there, not of the full set's 60,000
    dm.setup("fit")
    assert len(dm.split_tensors("val")[1]) == 333 and len(dm.split_tensors("train")[1]) == 4000 - 333


@pytest.mark.parametrize(
    ("n_train", "val_size", "match"),
    [
        (30, 100, r"`val_size` to leave training images of every class in the 30 .*but got 100.*choose 10 to 20"),
        (4000, 4000, r"in the 4000 .*but got 4000 \(4000 images\)"),
        (30, 5, r"but got 5 \(5 images\): choose 10 to 20"),
        (12, None, r"at least 20 training images .*found 12"),
    ],
)
def test_datamodule_val_size_that_does_not_fit_the_folder_fails_at_construction(tmp_path, n_train, val_size, match):
    write_tiny_mnist(tmp_path, n_train=n_train)
    with pytest.raises(ValueError, match=match):
        LeNetDataModule("mnist", data_dir=str(tmp_path), download=False, val_size=val_size)


@pytest.mark.slow
def test_cli_mnist_config_trains_and_tests_on_a_small_folder_with_the_defaults(tmp_path):
    data = tmp_path / "my-mnist"
    write_tiny_mnist(data, n_train=4000, n_test=500)
    run = tmp_path / "run"
    run.mkdir()
    args = ["--config", "mnist", "--data.data_dir", str(data), "--data.download", "false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    fit = subprocess.run([sys.executable, str(REPO / "cli.py"), "fit", *args], cwd=run, capture_output=True,
                         text=True, timeout=600, env=env)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "the probe set has 500 points: all of the test split" in fit.stdout + fit.stderr
    ckpt = run / "lightning_logs" / "version_0" / "checkpoints" / "best.ckpt"
    test = subprocess.run([sys.executable, str(REPO / "cli.py"), "test", *args, "--ckpt_path", str(ckpt)], cwd=run,
                          capture_output=True, text=True, timeout=600, env=env)
    assert test.returncode == 0, test.stderr[-3000:]
    assert "test/acc" in test.stdout


@pytest.mark.slow
def test_cli_mnist_config_with_a_val_size_too_large_for_the_folder_says_so_in_one_line(tmp_path):
    data = tmp_path / "my-mnist"
    write_tiny_mnist(data, n_train=300)
    result = subprocess.run([sys.executable, str(REPO / "cli.py"), "fit", "--config", "mnist", "--data.data_dir",
                             str(data), "--data.download", "false", "--data.val_size", "300"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: Expected `val_size` to leave training images")
    assert "300" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "lightning_logs").exists()


def test_epoch_shuffle_shards_cover_everything_once_and_pad_training():
    eval_shards = [EpochShuffle(10, shuffle=False, seed=0, rank=r, world_size=3).indices() for r in range(3)]
    assert sorted(torch.cat(eval_shards).tolist()) == list(range(10))
    train_shards = [EpochShuffle(10, shuffle=True, seed=0, rank=r, world_size=3, pad=True) for r in range(3)]
    assert {len(s) for s in train_shards} == {4} and {len(s.indices()) for s in train_shards} == {4}
    assert set(torch.cat([s.indices() for s in train_shards]).tolist()) == set(range(10))


def test_epoch_shuffle_is_seeded_and_changes_with_epoch():
    a, b = EpochShuffle(100, shuffle=True, seed=3), EpochShuffle(100, shuffle=True, seed=3)
    assert torch.equal(a.indices(), b.indices())
    first = a.indices()
    a.set_epoch(1)
    assert not torch.equal(first, a.indices())


def test_tensor_batch_loader_batches_and_length():
    loader = TensorBatchLoader(torch.arange(10).view(10, 1, 1, 1), torch.arange(10), 4,
                               EpochShuffle(10, shuffle=False, seed=0))
    batches = [labels.tolist() for _, labels in loader]
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]] and len(loader) == 3


def test_datamodule_pixel_stats_standardise_the_training_split():
    dm = LeNetDataModule("digits")
    assert isinstance(dm, InMemoryImages)
    x = normalize_images(dm.split_tensors("train")[0], *dm.pixel_stats())
    assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-3


def test_datamodule_batches_stay_uint8_for_the_model_to_standardise():
    dm = LeNetDataModule("digits", batch_size=8)
    dm.setup("fit")
    images, _ = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert images.dtype == torch.uint8


def test_random_shift_moves_content_within_bounds():
    torch.manual_seed(0)
    images = torch.zeros(64, 1, 28, 28, dtype=torch.uint8)
    images[:, :, 13, 13] = 255
    shifted = random_shift(images, max_shift=2)
    assert shifted.shape == images.shape and shifted.dtype == torch.uint8
    rows, cols = (shifted[:, 0] == 255).nonzero()[:, 1:].T
    assert rows.min() >= 11 and rows.max() <= 15 and cols.min() >= 11 and cols.max() <= 15
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 5


def test_stratified_subset_keeps_class_proportions():
    labels = np.repeat(np.arange(10), 100)
    index = stratified_subset(labels, 200, seed=0)
    assert len(index) == 200 and np.all(np.diff(index) > 0)
    assert np.all(np.bincount(labels[index]) == 20)
    assert len(stratified_subset(labels, 5000, seed=0)) == 1000


@pytest.mark.skipif(not os.path.isdir(FASHION_DIR), reason="apt-get install dataset-fashion-mnist")
def test_datamodule_reads_debian_fashion_mnist_folder_in_full():
    dm = LeNetDataModule("fashion_mnist", data_dir=FASHION_DIR, download=False)
    dm.setup("fit")
    assert [len(dm.split_tensors(s)[1]) for s in ("train", "val", "test")] == [55_000, 5_000, 10_000]
    assert np.all(np.bincount(dm.split_tensors("test")[1].numpy()) == 1000)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (50, 1, 28, 28) and labels.shape == (50,)


@pytest.mark.parametrize("dataset", sorted(CLASS_NAMES))
def test_class_names_are_not_numbers_so_the_projector_labels_by_class(dataset):
    # TensorBoard's Projector labels points by the first metadata column that is not numeric
    # (JavaScript isNaN); digit names "0".."9" lost to `correct`.
    names = CLASS_NAMES[dataset]
    assert len(set(names)) == len(names) == 10
    for name in names:
        with pytest.raises(ValueError):
            float(name)
