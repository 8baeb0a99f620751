"""Find and read MNIST-format idx files, with errors that name the file and what is wrong.

torchvision downloads and checksums MNIST, but its idx parser asserts without a message on a
truncated file and cannot read the gzipped flat folders that Debian's ``dataset-fashion-mnist``
installs (recompressed, so they fail torchvision's checksums). This module reads both layouts,
raw or gzipped, and checks every header against the bytes that follow it.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

# The four files every MNIST-format dataset ships, by split and kind.
IDX_FILES: dict[str, dict[str, str]] = {
    "train": {"images": "train-images-idx3-ubyte", "labels": "train-labels-idx1-ubyte"},
    "test": {"images": "t10k-images-idx3-ubyte", "labels": "t10k-labels-idx1-ubyte"},
}
_UINT8 = 0x08
_EXPECTED_NDIM = {"images": 3, "labels": 1}


def candidate_folders(data_dir: str | Path, torchvision_name: str) -> list[Path]:
    """Folders searched for the idx files, in order: torchvision's layout, then a flat folder."""
    data_dir = Path(data_dir).expanduser()
    return [data_dir / torchvision_name / "raw", data_dir]


def _find_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_idx_files(folders: list[Path]) -> dict[str, dict[str, Path]] | None:
    """The first folder holding all four idx files (each raw or ``.gz``), or ``None``.

    Example:
        >>> find_idx_files([Path("/nonexistent")]) is None
        True
    """
    for folder in folders:
        found = {
            split: {kind: _find_file(folder, name) for kind, name in kinds.items()}
            for split, kinds in IDX_FILES.items()
        }
        if all(path is not None for kinds in found.values() for path in kinds.values()):
            return found  # type: ignore[return-value]
    return None


def missing_files_message(dataset: str, folders: list[Path]) -> str:
    """The one-line explanation for a dataset whose idx files are nowhere to be found."""
    names = ", ".join(name for kinds in IDX_FILES.values() for name in kinds.values())
    searched = " and ".join(str(folder) for folder in folders)
    return (
        f"{dataset} not found: searched {searched} for {names} (raw or .gz). "
        f"Connect to the internet and set `--data.download true`, copy the four files into "
        f"{folders[-1]}, or use `--data.dataset digits` (bundled, offline)."
    )


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                return stream.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        # gzip.BadGzipFile is an OSError; a cut-off gzip stream raises EOFError.
        raise ValueError(f"Corrupt idx file {path}: cannot decompress it ({err}); replace the file.") from err


def _header_size(kind: str) -> int:
    """Bytes of an idx header of ``kind``: the magic number and one 4-byte size per dimension."""
    if kind not in _EXPECTED_NDIM:
        raise ValueError(f"Expected `kind` to be 'images' or 'labels', but got {kind!r}.")
    return 4 + 4 * _EXPECTED_NDIM[kind]


def _parse_header(path: Path, header: bytes, kind: str) -> tuple[int, tuple[int, ...]]:
    """``(header size, shape)`` from the first bytes of an idx file of ``kind``; raises if they are not."""
    header_size = _header_size(kind)
    ndim = _EXPECTED_NDIM[kind]
    if len(header) < header_size:
        raise ValueError(
            f"Truncated idx file {path}: {len(header)} bytes, shorter than the {header_size}-byte header; "
            "replace the file."
        )
    zero, dtype_code, file_ndim = struct.unpack(">HBB", header[:4])
    if zero != 0 or dtype_code != _UINT8 or file_ndim != ndim:
        raise ValueError(
            f"Corrupt idx file {path}: magic number {header[:4].hex()} is not that of {kind} "
            f"(expected 0000080{ndim}); is it the right file?"
        )
    return header_size, struct.unpack(f">{ndim}I", header[4:header_size])


def _check_size(path: Path, kind: str, shape: tuple[int, ...], found: int) -> None:
    expected = int(np.prod(shape))
    if found != expected:
        problem = "Truncated" if found < expected else "Corrupt"
        raise ValueError(
            f"{problem} idx file {path}: header promises {expected} bytes of {kind} {tuple(shape)}, "
            f"found {found}; replace the file."
        )


def check_idx_header(path: str | Path, kind: str) -> tuple[int, ...]:
    """Checks an idx file's header against its size without decompressing it all: cheap enough to
    run when a datamodule is built, so a truncated file is reported before any training.

    For ``.gz`` files the size is gzip's own record of the uncompressed length, in its last four
    bytes (exact below 4 GiB; MNIST's largest file is 47 MB).

    Returns:
        The shape the header promises: ``(N, H, W)`` images or ``(N,)`` labels.

    Raises:
        ValueError: As :func:`read_idx`, for what can be told from the header and the size.
    """
    path = Path(path)
    header_size = _header_size(kind)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                header = stream.read(header_size)
            with path.open("rb") as raw:
                raw.seek(-4, 2)
                total = struct.unpack("<I", raw.read(4))[0]
        else:
            with path.open("rb") as stream:
                header = stream.read(header_size)
            total = path.stat().st_size
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"Corrupt idx file {path}: cannot read it ({err}); replace the file.") from err
    _, shape = _parse_header(path, header, kind)
    _check_size(path, kind, shape, max(total - header_size, 0))
    return tuple(int(side) for side in shape)


def read_idx(path: str | Path, kind: str) -> np.ndarray:
    """Reads one idx file of unsigned bytes: images ``(N, H, W)`` or labels ``(N,)``, as ``uint8``.

    Args:
        path: The file, raw or gzipped (``.gz``).
        kind: ``"images"`` or ``"labels"``: the number of dimensions the header must declare.

    Raises:
        ValueError: The header is not an idx header of unsigned bytes with the expected number
            of dimensions, or the data is shorter or longer than the header promises. The message
            names the file and what is wrong.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
        >>> _ = open(path, "wb").write(bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 3]))
        >>> read_idx(path, "labels").tolist()
        [7, 3]
    """
    path = Path(path)
    data = _read_bytes(path)
    header_size, shape = _parse_header(path, data, kind)
    _check_size(path, kind, shape, len(data) - header_size)
    # A writable copy: torch warns on (and must not write through) a read-only buffer.
    return np.frombuffer(bytearray(data), dtype=np.uint8, offset=header_size).reshape(shape)
