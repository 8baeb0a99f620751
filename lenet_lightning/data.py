"""The LightningDataModule: MNIST, Fashion-MNIST or scikit-learn's bundled digits, held in memory.

Each split is decoded once into a ``uint8`` tensor and served in batches sliced from it
(:class:`TensorBatchLoader`): no per-sample PIL conversion, no worker processes, and on a GPU the
whole dataset lives on the device, so a batch is one indexing kernel with no host round trip.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from typing_extensions import override

from lenet_lightning.idx import (
    candidate_folders,
    check_idx_header,
    find_idx_files,
    missing_files_message,
    read_idx,
)
from lenet_lightning.preflight import absolute

DatasetName = Literal["mnist", "fashion_mnist", "digits"]
Split = Literal["train", "val", "test"]

# torchvision's own MNIST class names. Not "0".."9": TensorBoard's Projector labels points by the first
# metadata column that is not numeric, so digit names would lose to `correct` ("yes"/"no").
DIGIT_NAMES = ("0 - zero", "1 - one", "2 - two", "3 - three", "4 - four",
               "5 - five", "6 - six", "7 - seven", "8 - eight", "9 - nine")  # fmt: skip
FASHION_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CLASS_NAMES: dict[str, tuple[str, ...]] = {"mnist": DIGIT_NAMES, "fashion_mnist": FASHION_NAMES, "digits": DIGIT_NAMES}
# Images in the official training split, before the validation split is taken from it.
TRAIN_POOL_SIZES = {"mnist": 60_000, "fashion_mnist": 60_000, "digits": 1_437}
_TORCHVISION_NAMES = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
# The bundled digits have no official test split: a fixed, stratified 20% (360 images) is it.
_DIGITS_TEST_SIZE = 360
_DIGITS_SPLIT_SEED = 0


@runtime_checkable
class InMemoryImages(Protocol):
    """Data that holds each split in memory as ``uint8`` image tensors: the fast path of the
    projector's probe set and of the model's input statistics. Any other data works through its
    dataloaders' map-style datasets instead.

    ``class_names`` names the classes in label order; ``split_tensors(split)`` returns the whole
    split as ``(images uint8 (N, C, H, W), labels int64 (N,))`` on the CPU; ``pixel_stats()`` the
    training split's pixel mean and standard deviation, on the [0, 1] scale.

    Example:
        >>> isinstance(LeNetDataModule("digits"), InMemoryImages)
        True
    """

    class_names: Sequence[str]

    def split_tensors(self, split: Split) -> tuple[torch.Tensor, torch.Tensor]: ...

    def pixel_stats(self) -> tuple[float, float]: ...


def stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of ``size`` items drawn with every class in proportion; all when ``size >= len``.

    Example:
        >>> stratified_subset(np.array([0, 0, 1, 1]), 2, seed=0).shape
        (2,)
    """
    if size >= len(labels):
        return np.arange(len(labels))
    indices, _ = train_test_split(np.arange(len(labels)), train_size=size, stratify=labels, random_state=seed)
    return np.sort(indices)


class EpochShuffle:
    """This rank's order of ``num_items`` items for one epoch: seeded, reshuffled by ``set_epoch``.

    Every rank draws the same permutation (seed + epoch) and takes every ``world_size``-th item from
    its ``rank``, like ``DistributedSampler``. Training pads the permutation so every rank runs the
    same number of batches (otherwise DDP's gradient all-reduce would wait forever); evaluation
    does not pad, so every item is counted exactly once. Lightning calls ``set_epoch`` through the
    loader's ``sampler`` attribute.
    """

    def __init__(self, num_items: int, *, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1,
                 pad: bool = False) -> None:
        self.num_items, self.shuffle, self.seed = num_items, shuffle, seed
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.pad:
            return math.ceil(self.num_items / self.world_size)
        return len(range(self.rank, self.num_items, self.world_size))

    def indices(self) -> torch.Tensor:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_items, generator=generator)
        else:
            order = torch.arange(self.num_items)
        if self.pad and self.num_items % self.world_size:
            order = torch.cat([order, order[: self.world_size - self.num_items % self.world_size]])
        return order[self.rank :: self.world_size]


class TensorBatchLoader:
    """Batches sliced from in-memory tensors; a drop-in for a ``DataLoader`` over them.

    The epoch's order is moved to the tensors' device once per epoch, so on a GPU a batch is a
    single gather with no host synchronisation.

    Example:
        >>> order = EpochShuffle(5, shuffle=False, seed=0)
        >>> loader = TensorBatchLoader(torch.zeros(5, 1, 2, 2), torch.arange(5), 2, order)
        >>> [labels.tolist() for _, labels in loader]
        [[0, 1], [2, 3], [4]]
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, sampler: EpochShuffle,
                 drop_last: bool = False) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.sampler, self.drop_last = batch_size, sampler, drop_last
        self.batch_sampler = None  # DataLoader's attribute, which Lightning inspects

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.sampler.indices().to(self.images.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = order[start : start + self.batch_size]
            # index_select, not images[batch]: advanced indexing was 10x slower (50 vs 5 us a batch on
            # one thread) and collapsed to milliseconds with two threads on a loaded machine.
            yield self.images.index_select(0, batch), self.labels.index_select(0, batch)


class LeNetDataModule(pl.LightningDataModule):
    """MNIST, Fashion-MNIST or the bundled digits as 28x28 ``uint8`` tensors (an :class:`InMemoryImages`).

    Batches stay ``uint8``: the model standardises its inputs itself (see
    :class:`lenet_lightning.model.LeNetClassifier`), with the statistics of :meth:`pixel_stats`.

    Args:
        dataset: ``"mnist"``, ``"fashion_mnist"`` or ``"digits"`` (scikit-learn's 1,797 bundled
            8x8 digits, upsampled into MNIST's framing: always available offline).
        data_dir: Where MNIST-format files are looked for and downloaded to: torchvision's layout
            (``data_dir/MNIST/raw``, ``data_dir/FashionMNIST/raw``) or a flat folder holding the four
            idx files, raw or gzipped, such as Debian's ``/usr/share/datasets/fashion-mnist``.
        download: Download (and checksum) with torchvision when the files are missing. When
            ``False``, missing files are reported at construction. Files found are checked at
            construction too (header against size), so a truncated one is named before training.
        batch_size: Training batch size (the notebook's 50).
        eval_batch_size: Batch size of validation, test and predict.
        val_size: Images held out of the training split for validation: a count, or a fraction
            in (0, 1). Default: 1/12, the 5,000 of 60,000 that TensorFlow's MNIST reader held out.
            The official test split always stays the test set.
        augment: Shift each training image by up to 2 pixels (on the batch's device).
        seed: Seeds the train/val split and the shuffling.

    Raises:
        ValueError: A size is out of range, or an idx file found is truncated or corrupt.
        FileNotFoundError: ``download=False`` and the idx files are not in ``data_dir``.

    Example:
        >>> dm = LeNetDataModule("digits", batch_size=32)
        >>> dm.setup("fit")
        >>> images, labels = next(iter(dm.train_dataloader()))
        >>> images.dtype, tuple(images.shape)
        (torch.uint8, (32, 1, 28, 28))
    """

    def __init__(
        self,
        dataset: DatasetName = "mnist",
        data_dir: str = "data",
        download: bool = True,
        batch_size: int = 50,
        eval_batch_size: int = 1000,
        val_size: int | float | None = None,
        augment: bool = False,
        seed: int = 42,
    ) -> None:
        super().__init__()
        if dataset not in CLASS_NAMES:
            raise ValueError(f"Expected `dataset` to be one of {sorted(CLASS_NAMES)}, but got {dataset!r}.")
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected `{name}` to be a positive integer, but got {value!r}.")
        self.dataset, self.data_dir, self.download = dataset, Path(absolute(data_dir)), download
        self.batch_size, self.eval_batch_size, self.augment, self.seed = batch_size, eval_batch_size, augment, seed
        self.val_size = val_size
        self.num_val = self._num_val(TRAIN_POOL_SIZES[dataset]) if val_size is None or isinstance(val_size, float) \
            or dataset == "digits" else 0  # a count is checked against the folder's images, below
        self.class_names: tuple[str, ...] = CLASS_NAMES[dataset]
        self.num_classes = len(self.class_names)
        if dataset != "digits":
            files = self._find_files()
            if files is None and not download:
                raise FileNotFoundError(missing_files_message(dataset, self._folders()))
            shapes = {(split, kind): check_idx_header(path, kind)  # a truncated or corrupt file is named now
                      for split, kinds in (files or {}).items() for kind, path in kinds.items()}
            if ("train", "labels") in shapes:  # the folder's own size, not the full set's: any subset works
                self.num_val = self._num_val(shapes[("train", "labels")][0], files["train"]["labels"].parent)
            elif not self.num_val:  # to be downloaded: the full set
                self.num_val = self._num_val(TRAIN_POOL_SIZES[dataset])
        self._splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._on_device: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.mean, self.std = 0.0, 1.0

    def _num_val(self, pool: int, folder: Path | None = None) -> int:
        """The validation count for a training pool of ``pool`` images (in ``folder``, when read from
        one), checked against it: both parts must hold every class (the split is stratified)."""
        value = self.val_size if self.val_size is not None else 1 / 12
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"Expected `val_size` to be a count or a fraction, but got {value!r}.")
        if isinstance(value, float) and not value.is_integer():
            if not 0.0 < value < 1.0:
                raise ValueError(f"Expected a fractional `val_size` to be in (0, 1), but got {value}.")
            value = round(value * pool)
        value = int(value)
        where = f"{self.dataset}" if folder is None else f"{self.dataset} files in {folder}"
        classes = len(CLASS_NAMES[self.dataset])
        if pool < 2 * classes:
            raise ValueError(f"Expected at least {2 * classes} training images ({classes} classes, split stratified "
                             f"into training and validation) in the {where}, but found {pool}; use a larger folder.")
        if not classes <= value <= pool - classes:
            raise ValueError(
                f"Expected `val_size` to leave training images of every class in the {pool} of the {where}, "
                f"but got {self.val_size} ({value} images): choose {classes} to {pool - classes}, or a fraction."
            )
        return value

    def _folders(self) -> list[Path]:
        return candidate_folders(self.data_dir, _TORCHVISION_NAMES[self.dataset])

    def _find_files(self) -> dict[str, dict[str, Path]] | None:
        return find_idx_files(self._folders())

    @override
    def prepare_data(self) -> None:
        """Downloads with torchvision (checksummed) when the files are missing and downloads are on."""
        if self.dataset == "digits" or not self.download or self._find_files() is not None:
            return
        from torchvision import datasets

        dataset_class = getattr(datasets, _TORCHVISION_NAMES[self.dataset])
        try:
            for train in (True, False):
                dataset_class(self.data_dir, train=train, download=True)
        except (RuntimeError, OSError) as err:
            # torchvision's message spans lines ("Error downloading x:", then each mirror tried): one line.
            reason = " ".join(str(err).split()) or type(err).__name__
            message = missing_files_message(self.dataset, self._folders())
            raise FileNotFoundError(f"{message} The download failed: {reason}") from err

    @override
    def setup(self, stage: str) -> None:
        if self._splits:
            return
        train_images, train_labels, test_images, test_labels = self._load()
        val_index = stratified_subset(train_labels, self.num_val, self.seed)
        train_mask = np.ones(len(train_labels), dtype=bool)
        train_mask[val_index] = False
        as_tensors = lambda images, labels: (  # noqa: E731
            torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1),  # (N, 1, 28, 28) uint8
            torch.from_numpy(labels.astype(np.int64)),
        )
        self._splits = {
            "train": as_tensors(train_images[train_mask], train_labels[train_mask]),
            "val": as_tensors(train_images[val_index], train_labels[val_index]),
            "test": as_tensors(test_images, test_labels),
        }
        pixels = self._splits["train"][0].float().div_(255)
        self.mean, self.std = pixels.mean().item(), pixels.std().item()

    def _load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Train images, train labels, test images, test labels as ``uint8`` arrays."""
        if self.dataset == "digits":
            return _load_digits()
        files = self._find_files()
        if files is None:
            raise FileNotFoundError(missing_files_message(self.dataset, self._folders()))
        arrays = [read_idx(files[split][kind], kind) for split in ("train", "test") for kind in ("images", "labels")]
        for split, (images, labels) in zip(("train", "test"), (arrays[:2], arrays[2:]), strict=True):
            if len(images) != len(labels):
                raise ValueError(
                    f"Corrupt {self.dataset} {split} split in {files[split]['images'].parent}: "
                    f"{len(images)} images but {len(labels)} labels."
                )
        return arrays[0], arrays[1], arrays[2], arrays[3]

    def split_tensors(self, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split as ``(images uint8 (N, 1, 28, 28), labels int64 (N,))`` on the CPU."""
        if not self._splits:
            self.setup("fit")
        if split not in self._splits:
            raise ValueError(f"Expected `split` to be one of {sorted(self._splits)}, but got {split!r}.")
        return self._splits[split]

    def pixel_stats(self) -> tuple[float, float]:
        """The training split's pixel mean and standard deviation, on the [0, 1] scale."""
        if not self._splits:
            self.setup("fit")
        return self.mean, self.std

    def _loader(self, split: Split, batch_size: int, train: bool) -> TensorBatchLoader:
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if split not in self._on_device or self._on_device[split][0].device != device:
            self._on_device[split] = tuple(t.to(device) for t in self.split_tensors(split))  # type: ignore[assignment]
        images, labels = self._on_device[split]
        sampler = EpochShuffle(len(labels), shuffle=train, seed=self.seed, rank=rank, world_size=world_size, pad=train)
        return TensorBatchLoader(images, labels, batch_size, sampler)

    @override
    def train_dataloader(self) -> TensorBatchLoader:
        return self._loader("train", self.batch_size, train=True)

    @override
    def val_dataloader(self) -> TensorBatchLoader:
        return self._loader("val", self.eval_batch_size, train=False)

    @override
    def test_dataloader(self) -> TensorBatchLoader:
        return self._loader("test", self.eval_batch_size, train=False)

    @override
    def predict_dataloader(self) -> TensorBatchLoader:
        return self._loader("test", self.eval_batch_size, train=False)

    @override
    def on_after_batch_transfer(self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int
                                ) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = batch
        if self.augment and self.trainer is not None and self.trainer.training:
            images = random_shift(images, max_shift=2)
        return images, labels


def random_shift(images: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Each image shifted by its own random offset of up to ``max_shift`` pixels, zero-filled."""
    n, _, height, width = images.shape
    padded = F.pad(images, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, n, 1), device=images.device)
    rows = torch.arange(height, device=images.device) + offsets[0]  # (N, H)
    cols = torch.arange(width, device=images.device) + offsets[1]  # (N, W)
    batch = torch.arange(n, device=images.device)[:, None, None]
    return padded[batch, 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)


def _load_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits, upsampled to 20x20 and centred in 28x28 like MNIST's digits."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().div_(16.0).unsqueeze(1)  # (1797, 1, 8, 8) in [0, 1]
    images = F.interpolate(images, size=(20, 20), mode="bilinear", align_corners=False)
    images = F.pad(images, (4, 4, 4, 4)).squeeze(1).mul_(255).round_().clamp_(0, 255).to(torch.uint8).numpy()
    labels = bunch.target.astype(np.uint8)
    train, test = train_test_split(
        np.arange(len(labels)), test_size=_DIGITS_TEST_SIZE, stratify=labels, random_state=_DIGITS_SPLIT_SEED
    )
    train, test = np.sort(train), np.sort(test)
    return images[train], labels[train], images[test], labels[test]
