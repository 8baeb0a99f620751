"""Write TensorBoard Embedding Projector data (tensors, metadata, sprite, config) into a run directory.

Pure functions, no Lightning: the projector callback calls them with the ``(N, 10)`` ``fc2``
activations of a fixed probe set at each checkpoint. Everything is shaped for what TensorBoard's
projector plugin reads (``tensorboard/plugins/projector/projector_plugin.py``):

* the config is ``<run_dir>/projector_config.pbtxt`` (a ``ProjectorConfig`` text proto), and every
  asset path in it is relative to ``run_dir``; the server rejects assets that resolve outside it;
* a tensor file is read as TSV first and, only on ``UnicodeDecodeError``, as raw float32 with the
  config's ``tensor_shape``; raw bytes are the fastest to serve, but bytes that happen to be valid
  UTF-8 (all zeros, say) are misread as TSV, so those tensors are written as TSV instead;
* the server, and the browser, read a metadata file as having a header row exactly when its first
  line holds a tab, so one column means no header and values must never hold a tab or newline;
* every file is written to a temporary name and ``os.replace``'d, and the config is replaced only
  after its assets, so a reader never sees a half-written file; what a killed writer leaves behind
  (temporary files, unlisted asset folders) :func:`remove_leftovers` removes;
* without TensorFlow installed, a running server re-reads the configs only when its list of runs
  changes, so entries written after it first saw the run appear on its restart (or a new run),
  unless :mod:`lenet_lightning.tensorboard_live` is installed (it is, with this package).

Layout written under ``run_dir``::

    projector_config.pbtxt              one EmbeddingInfo per tag, merged by tensor_name
    projector/<safe tag>/tensor.bytes   (N, D) little-endian float32, or tensor.tsv (see above)
    projector/<safe tag>/metadata.tsv   optional
    projector/<safe tag>/bookmarks.json optional: saved views (see :func:`write_bookmarks`)
    <sprite_path>                       anywhere under run_dir, e.g. projector/sprite.png
"""

from __future__ import annotations

import codecs
import json
import math
import os
import re
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import text_format
from PIL import Image
from tensorboard.plugins.projector.projector_config_pb2 import EmbeddingInfo, ProjectorConfig

from lenet_lightning.atomic import TEMPORARY_NAME, write_atomically

CONFIG_FILENAME = "projector_config.pbtxt"  # the name the projector plugin looks for in a run dir
ASSETS_DIRNAME = "projector"
MAX_SPRITE_SIZE = 8192  # the projector front end refuses sprites wider or taller than this (px)

_TENSOR_BYTES = "tensor.bytes"
_TENSOR_TSV = "tensor.tsv"
_METADATA_TSV = "metadata.tsv"
_BOOKMARKS_JSON = "bookmarks.json"
# The plugin's TSV attempt decodes the first 16 MiB characters of a tensor file in one read
# (tensorboard.compat.tensorflow_stub GFile block size); only a decode error there makes it
# fall back to the binary reader.
_TB_TEXT_READ_CHUNK = 16 * 1024 * 1024
_UNSAFE_TAG_CHARS = re.compile(r"[^A-Za-z0-9._-]")
# Everything str.splitlines() breaks on, plus tab: none may appear inside a TSV cell.
_TSV_BREAKERS = re.compile("[\t\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
_EMPTY_ROW_PLACEHOLDER = "<empty>"  # viewers skip blank lines, which would shift every later row

Metadata = Mapping[str, Sequence[object]] | Sequence[object] | np.ndarray


def safe_tag(name: str) -> str:
    """Returns ``name`` with every character outside ``[A-Za-z0-9._-]`` replaced by ``_``.

    The result is safe as a file name and in a URL, and is the embedding's ``tensor_name``, so two
    tags that map to the same safe tag are the same embedding.

    Args:
        name: Any tag, e.g. ``"fc2 step 100/x"``.

    Raises:
        TypeError: If ``name`` is not a string.
        ValueError: If ``name`` is empty, or only dots (``"."`` and ``".."`` are not file names).

    Example:
        >>> safe_tag("fc2 step 100/x")
        'fc2_step_100_x'
    """
    if not isinstance(name, str):
        raise TypeError(f"Expected `name` to be a str, but got {type(name).__name__}.")
    tag = _UNSAFE_TAG_CHARS.sub("_", name)
    if not tag.strip("."):
        raise ValueError(f"Expected `name` to hold a character other than '.', but got {name!r}.")
    return tag


def write_sprite(images: np.ndarray, path: str | Path, max_size: int = MAX_SPRITE_SIZE) -> tuple[int, int]:
    """Writes ``images`` as one PNG sprite, ``ceil(sqrt(N))`` thumbnails a row, row-major.

    Thumbnails are shrunk (box filter, aspect kept) when the sprite would otherwise exceed
    ``max_size`` pixels a side, so the projector shows it for any ``N``. Unused cells are black.
    The file appears atomically.

    Args:
        images: ``uint8`` images: grayscale ``(N, H, W)`` or ``(N, 1, H, W)``, or RGB ``(N, H, W, 3)``.
        path: Where to write the PNG; parent directories are created.
        max_size: Largest width and height of the sprite in pixels.

    Returns:
        ``(height, width)`` of one thumbnail, for ``write_embedding(..., sprite_thumb_size=...)``.

    Raises:
        TypeError: If ``images`` is not a ``uint8`` array.
        ValueError: If ``images`` has the wrong shape or no images, or ``max_size`` is too small
            to give each of the ``N`` thumbnails a pixel.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     write_sprite(np.zeros((10, 28, 28), np.uint8), Path(run_dir) / "sprite.png", max_size=64)
        (16, 16)
    """
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        got = f"{type(images).__name__} of {images.dtype}" if isinstance(images, np.ndarray) else type(images)
        raise TypeError(f"Expected `images` to be a uint8 np.ndarray, but got {got}.")
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    rgb = images.ndim == 4 and images.shape[3] == 3
    if not (images.ndim == 3 or rgb) or 0 in images.shape:
        raise ValueError(
            "Expected `images` to have shape (N, H, W), (N, 1, H, W) or (N, H, W, 3) with N, H, W > 0, "
            f"but got {images.shape}."
        )
    if not isinstance(max_size, int) or max_size < 1:
        raise ValueError(f"Expected `max_size` to be a positive int, but got {max_size!r}.")

    n, height, width = images.shape[:3]
    channels = images.shape[3:]  # () for grey, (3,) for RGB
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    cell = max_size // cols  # the largest thumbnail side that still fits
    if cell < 1:
        raise ValueError(
            f"Expected `max_size` to be at least ceil(sqrt(N)) = {cols} to fit {n} thumbnails, but got {max_size}."
        )
    scale = min(1.0, cell / max(height, width))
    thumb_h, thumb_w = max(1, int(height * scale)), max(1, int(width * scale))

    sprite = np.zeros((rows * thumb_h, cols * thumb_w, *channels), np.uint8)
    for row in range(rows):
        band = images[row * cols : (row + 1) * cols]  # (<=cols, H, W[, 3])
        if len(band) < cols:
            band = np.concatenate([band, np.zeros((cols - len(band), height, width, *channels), np.uint8)])
        # The row's cells side by side: (H, cols * W[, 3]).
        strip = band.swapaxes(0, 1).reshape(height, cols * width, *channels)
        if (thumb_h, thumb_w) != (height, width):
            # One resize per strip: a box filter maps each source cell exactly onto its thumbnail cell,
            # and is far faster than N small resizes.
            strip = np.asarray(Image.fromarray(strip).resize((cols * thumb_w, thumb_h), Image.Resampling.BOX))
        sprite[row * thumb_h : (row + 1) * thumb_h] = strip

    write_atomically(Path(path), lambda f: Image.fromarray(sprite).save(f, format="PNG"))
    return thumb_h, thumb_w


def write_embedding(
    run_dir: str | Path,
    tag: str,
    embeddings: np.ndarray,
    metadata: Metadata | None = None,
    sprite_path: str | Path | None = None,
    sprite_thumb_size: tuple[int, int] | None = None,
) -> EmbeddingInfo:
    """Writes one embedding's tensor and metadata under ``run_dir``, then lists it in the run's config.

    Non-finite values are written as 0 with a warning, since the viewer cannot place them. Writing
    a tag again replaces its files and its config entry; other tags are kept.

    Args:
        run_dir: The run directory (the one holding the run's events file); created if missing.
        tag: The embedding's name; :func:`safe_tag` makes it the ``tensor_name`` and folder name.
        embeddings: ``(N, D)`` real numbers, e.g. the ``(N, 10)`` ``fc2`` activations.
        metadata: ``None``; ``N`` labels (one column, written without a header, as the projector
            requires for one column); or a mapping of column name to ``N`` values (written with a
            header row when there are two or more columns). Values are written with ``str``; tabs
            and line breaks in them become spaces.
        sprite_path: An existing sprite PNG under ``run_dir`` (see :func:`write_sprite`), shared by
            all embeddings of the run: absolute, or relative to ``run_dir``. The config refers to
            it relative to ``run_dir``.
        sprite_thumb_size: ``(height, width)`` of one thumbnail, as :func:`write_sprite` returns;
            required with ``sprite_path``.

    Returns:
        The entry as listed in ``projector_config.pbtxt``: TensorBoard's ``EmbeddingInfo``.

    Raises:
        TypeError: If ``embeddings``, ``metadata`` or ``sprite_thumb_size`` have the wrong type.
        ValueError: If shapes or row counts disagree, the sprite is missing or too small for ``N``,
            or a path resolves outside ``run_dir``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     entry = write_embedding(run_dir, "fc2 step 100", np.eye(4, 10), ["0", "1", "2", "3"])
        >>> entry.tensor_path, entry.metadata_path
        ('projector/fc2_step_100/tensor.bytes', 'projector/fc2_step_100/metadata.tsv')
    """
    name = safe_tag(tag)
    values = _validate_embeddings(embeddings)  # (N, D) float32
    n = len(values)
    rows = None if metadata is None else _metadata_rows(metadata, n)
    root = Path(os.path.realpath(run_dir))
    sprite_rel = None
    if sprite_path is not None:
        sprite_rel = _relative_to_run_dir(root, sprite_path, "sprite_path")
        _validate_sprite(root / sprite_rel, sprite_thumb_size, n)
    elif sprite_thumb_size is not None:
        raise ValueError(f"Expected `sprite_thumb_size` to be None without `sprite_path`, but got {sprite_thumb_size}.")
    asset_dir = root / ASSETS_DIRNAME / name
    asset_rel = _relative_to_run_dir(root, asset_dir, "the assets folder")  # e.g. a symlinked 'projector/'

    finite = np.isfinite(values)
    num_nonfinite_rows = int(n - np.count_nonzero(finite.all(axis=1)))
    if num_nonfinite_rows:
        warnings.warn(
            f"Embedding {tag!r}: {num_nonfinite_rows} of {n} rows hold NaN or inf; writing those values as 0.",
            RuntimeWarning,
            stacklevel=2,
        )
        values = np.where(finite, values, np.float32(0))

    asset_dir.mkdir(parents=True, exist_ok=True)
    raw = values.astype("<f4").tobytes()
    if _decodes_as_utf8(raw):  # TensorBoard would parse these bytes as (broken) TSV
        tensor_file = _TENSOR_TSV
        # %.9g round-trips float32 exactly.
        write_atomically(asset_dir / tensor_file, lambda f: np.savetxt(f, values, fmt="%.9g", delimiter="\t"))
    else:
        tensor_file = _TENSOR_BYTES
        write_atomically(asset_dir / tensor_file, lambda f: f.write(raw))
    if rows is not None:
        text = "".join("\t".join(row) + "\n" for row in rows)
        write_atomically(asset_dir / _METADATA_TSV, lambda f: f.write(text.encode("utf-8")))

    entry = EmbeddingInfo(tensor_name=name, tensor_path=(asset_rel / tensor_file).as_posix(),
                          tensor_shape=[n, values.shape[1]])
    if rows is not None:
        entry.metadata_path = (asset_rel / _METADATA_TSV).as_posix()
    if sprite_rel is not None:
        entry.sprite.image_path = sprite_rel.as_posix()
        entry.sprite.single_image_dim.extend([sprite_thumb_size[1], sprite_thumb_size[0]])  # [width, height]
    # Files from an earlier write of this tag in the other format stay: a running TensorBoard
    # keeps serving the config it read at start-up, which may still point at them.
    update_projector_config(root, [entry])
    return entry


def update_projector_config(run_dir: str | Path, entries: Sequence[EmbeddingInfo]) -> None:
    """Merges ``entries`` into ``<run_dir>/projector_config.pbtxt`` by ``tensor_name``, atomically.

    An entry whose name is already listed replaces it in place; new names are appended in order;
    no name is ever listed twice. Entries from earlier writes, e.g. before a resume, are kept.
    Call it only after the entries' files are complete: the server reads whatever the config lists.

    Args:
        run_dir: The run directory holding (or to hold) the config.
        entries: TensorBoard's ``EmbeddingInfo`` protos.

    Raises:
        TypeError: If an entry is not an ``EmbeddingInfo``.
        ValueError: If an entry has no ``tensor_name``, one of its paths resolves outside
            ``run_dir``, or the existing config cannot be parsed.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     update_projector_config(run_dir, [EmbeddingInfo(tensor_name="a", tensor_path="a/tensor.bytes")])
        ...     update_projector_config(run_dir, [EmbeddingInfo(tensor_name="a", tensor_path="a/tensor.tsv")])
        ...     print(open(os.path.join(run_dir, CONFIG_FILENAME)).read().count("tensor_name"))
        1
    """
    root = Path(os.path.realpath(run_dir))
    infos = []
    for entry in entries:
        if not isinstance(entry, EmbeddingInfo):
            raise TypeError(f"Expected `entries` to hold EmbeddingInfo objects, but got {type(entry).__name__}.")
        info = entry
        if not info.tensor_name:
            raise ValueError(f"Expected every entry to have a `tensor_name`, but got {info}.")
        for field, rel in (
            ("tensor_path", info.tensor_path),
            ("metadata_path", info.metadata_path),
            ("bookmarks_path", info.bookmarks_path),
            ("sprite.image_path", info.sprite.image_path),
        ):
            if rel:
                _relative_to_run_dir(root, root / os.path.expanduser(rel), f"{info.tensor_name}'s {field}")
        infos.append(info)

    config_path = root / CONFIG_FILENAME
    config = _read_config(config_path)
    # Later copies of a name win, but it keeps the place of its first listing.
    merged: dict[str, EmbeddingInfo] = {}
    for info in [*config.embeddings, *infos]:
        merged[info.tensor_name] = EmbeddingInfo()
        merged[info.tensor_name].CopyFrom(info)  # detached from `config`, which is cleared next
    del config.embeddings[:]
    config.embeddings.extend(merged.values())

    root.mkdir(parents=True, exist_ok=True)
    text = text_format.MessageToString(config)
    write_atomically(config_path, lambda f: f.write(text.encode("utf-8")))


def layout_bookmark(
    layout: np.ndarray,
    name: str,
    *,
    color_by: str = "label",
    label_by: str = "label",
    perplexity: float = 30.0,
) -> dict[str, Any]:
    """Returns a Projector bookmark (a saved view) that shows ``layout`` exactly, coloured by a column.

    The view is the Projector's "custom" projection with each point's ``linear-x``/``linear-y`` set
    from ``layout``: it stays where it is put, while a ``"tsne"`` view would restart the browser's
    own t-SNE from it and drift. The Projector stretches each axis to [-1, 1] on its own. The state
    has every field the Projector reads when it loads a server bookmark (it fails with a blank plot
    when one is missing).

    Args:
        layout: ``(N, 2)`` finite coordinates, one row per embedding row, in the tensor's order.
        name: The bookmark's title in the Projector's Bookmarks tray.
        color_by: The metadata column that colours the points (``"label"``: the class).
        label_by: The metadata column shown on hover.
        perplexity: Put in the t-SNE panel, should the user run the Projector's own t-SNE from here.

    Raises:
        ValueError: If ``layout`` is not ``(N, 2)`` and finite, or ``name`` is not a string.

    Example:
        >>> state = layout_bookmark(np.array([[0.0, 1.0], [2.0, 3.0]]), "step 100")
        >>> state["selectedProjection"], state["projections"][1]
        ('custom', {'linear-x': 2.0, 'linear-y': 3.0})
    """
    layout = np.asarray(layout)
    if layout.ndim != 2 or layout.shape[1] != 2 or len(layout) == 0 or layout.dtype.kind not in "biuf":
        raise ValueError(
            f"Expected `layout` to be real numbers of shape (N, 2), but got {layout.dtype} of shape {layout.shape}."
        )
    if not np.isfinite(layout).all():
        raise ValueError("Expected `layout` to be finite, but got NaN or inf; the Projector cannot place such points.")
    if not isinstance(name, str):
        raise ValueError(f"Expected `name` to be a str, but got {type(name).__name__}.")
    return {
        "label": name,
        "isSelected": True,
        "selectedProjection": "custom",
        "projections": [{"linear-x": float(x), "linear-y": float(y)} for x, y in layout.tolist()],
        "pcaComponentDimensions": [0, 1],
        "tSNEPerplexity": float(perplexity),
        "tSNELearningRate": 1.0,  # the slider's log10 value: the Projector's default rate, 10
        "tSNEIteration": 0,
        "tSNEis3d": False,
        "umapIs3d": False,
        "umapNeighbors": 15,
        "umapMinDist": 0.1,
        "selectedPoints": [],
        "customXLeftText": "",
        "customXRightText": "",
        "customYUpText": "",
        "customYDownText": "",
        "customXLeftRegex": False,
        "customXRightRegex": False,
        "customYUpRegex": False,
        "customYDownRegex": False,
        "selectedColorOptionName": color_by,
        "forceCategoricalColoring": False,
        "selectedLabelOption": label_by,
    }


def write_bookmarks(run_dir: str | Path, tag: str, states: Sequence[Mapping[str, Any]]) -> str:
    """Writes ``states`` as the bookmarks of the embedding ``tag`` and lists them in the run's config.

    The Projector fetches an entry's ``bookmarks_path`` when the entry is selected and opens its
    Bookmarks tray; a click on a bookmark restores its view. The JSON appears atomically, before the
    config lists it. Writing again replaces the bookmarks.

    Args:
        run_dir: The run directory whose config already lists ``tag`` (see :func:`write_embedding`).
        tag: The embedding's tag, as given to :func:`write_embedding`.
        states: Bookmarks, e.g. from :func:`layout_bookmark`, each with one projection per row.

    Returns:
        The bookmarks file, relative to ``run_dir``.

    Raises:
        ValueError: If the config does not list ``tag``, there are no states, or a state does not
            have one projection per embedding row.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     _ = write_embedding(run_dir, "fc2 step 100", np.eye(3, 10))
        ...     write_bookmarks(run_dir, "fc2 step 100", [layout_bookmark(np.eye(3, 2), "step 100")])
        'projector/fc2_step_100/bookmarks.json'
    """
    name = safe_tag(tag)
    root = Path(os.path.realpath(run_dir))
    config_path = root / CONFIG_FILENAME
    config = _read_config(config_path)
    info = next((embedding for embedding in config.embeddings if embedding.tensor_name == name), None)
    if info is None:
        raise ValueError(f"Expected {config_path} to list the embedding {name!r}; write it with `write_embedding` "
                         "before its bookmarks.")
    if isinstance(states, Mapping) or len(states) == 0:
        raise ValueError(f"Expected `states` to be a non-empty sequence of bookmarks, but got {states!r:.80}.")
    n, dim = [*info.tensor_shape, 0, 0][:2]  # (N, D)
    bookmarks = []
    for index, state in enumerate(states):
        projections = state.get("projections") if isinstance(state, Mapping) else None
        if not isinstance(projections, Sequence) or len(projections) != n:
            got = len(projections) if isinstance(projections, Sequence) else type(projections).__name__
            raise ValueError(f"Expected `states[{index}]` to have {n} projections, one per row of {name!r}, "
                             f"but got {got}.")
        # dataSetDimensions: what the Projector checks when a user uploads the file again.
        bookmarks.append({**state, "dataSetDimensions": [n, dim]})
    path = root / ASSETS_DIRNAME / name / _BOOKMARKS_JSON
    rel = _relative_to_run_dir(root, path, "the bookmarks file").as_posix()
    text = json.dumps(bookmarks, allow_nan=False, separators=(",", ":"))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda f: f.write(text.encode("utf-8")))
    entry = EmbeddingInfo()
    entry.CopyFrom(info)
    entry.bookmarks_path = rel
    update_projector_config(root, [entry])
    return rel


def remove_leftovers(run_dir: str | Path, other_dirs: Sequence[str | Path] = ()) -> list[Path]:
    """Removes what a run killed while writing left in ``run_dir``, without touching anything listed.

    A leftover is either

    * a temporary file of :func:`~lenet_lightning.atomic.write_atomically` (``.<name>.<8 hex>.tmp``),
      at any depth under ``run_dir`` or ``other_dirs`` (say a plot folder or checkpoint ``dirpath``
      outside the run folder; checkpoints saved by :class:`~lenet_lightning.checkpoint_io.AtomicCheckpointIO`
      leave the same names), or
    * a folder under ``run_dir/projector/`` that holds no file ``projector_config.pbtxt`` lists: a
      capture killed before its entry was listed. Files directly in ``projector/`` (the sprite) stay.

    Nothing the config lists is removed, nor the folders holding it; symbolic links are neither
    followed nor removed. Call it on rank 0 before a run or resume writes into ``run_dir``, never while
    another process writes there: its temporary files would go too.

    Args:
        run_dir: The run folder (holding ``projector_config.pbtxt``, if any run listed entries yet).
        other_dirs: More folders to clear of temporary files; missing ones are skipped.

    Returns:
        The removed files and folders, sorted.

    Raises:
        TypeError: If ``other_dirs`` is a single path rather than a sequence of them.
        ValueError: If the config cannot be parsed; nothing is removed then.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     _ = write_embedding(run_dir, "kept", np.eye(2, 3))
        ...     os.makedirs(os.path.join(run_dir, "projector", "killed"))
        ...     open(os.path.join(run_dir, ".projector_config.pbtxt.0a1b2c3d.tmp"), "w").close()
        ...     [path.name for path in remove_leftovers(run_dir)]
        ['.projector_config.pbtxt.0a1b2c3d.tmp', 'killed']
    """
    if isinstance(other_dirs, (str, bytes, os.PathLike)):
        raise TypeError(f"Expected `other_dirs` to be a sequence of folders, but got the single path {other_dirs!r}.")
    root = Path(os.path.realpath(run_dir))
    listed = _listed_paths(root)
    removed: set[Path] = set()

    assets = root / ASSETS_DIRNAME
    if assets.is_dir() and not assets.is_symlink():
        for folder in assets.iterdir():
            if folder.is_symlink() or not folder.is_dir():
                continue
            if not any(path == folder or folder in path.parents for path in listed):
                shutil.rmtree(folder)
                removed.add(folder)

    for top in {root, *(Path(os.path.realpath(folder)) for folder in other_dirs)}:
        for dirpath, _, filenames in os.walk(top):  # does not follow links
            for name in filenames:
                path = Path(dirpath, name)
                if TEMPORARY_NAME.fullmatch(name) and path not in listed and not path.is_symlink():
                    path.unlink(missing_ok=True)
                    removed.add(path)
    return sorted(removed)


def listed_embeddings(run_dir: str | Path) -> list[str]:
    """The ``tensor_name`` of every embedding ``<run_dir>/projector_config.pbtxt`` lists, in its order.

    Raises:
        ValueError: If the config cannot be parsed.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     _ = write_embedding(run_dir, "fc2 step 100", np.eye(3, 10))
        ...     listed_embeddings(run_dir)
        ['fc2_step_100']
    """
    return [info.tensor_name for info in _read_config(Path(run_dir) / CONFIG_FILENAME).embeddings]


@dataclass(frozen=True)
class StoredEmbedding:
    """One embedding read back from a run folder, as :func:`write_embedding` and
    :func:`write_bookmarks` left it.

    Args:
        info: Its ``EmbeddingInfo`` in the run's config.
        tensor: ``(N, D)`` float32.
        metadata: Column name to ``N`` strings; one column without a header is ``"label"``;
            empty without metadata.
        layouts: The ``(N, 2)`` layout of each bookmark that shows one (``custom`` projections), in order.
    """

    info: EmbeddingInfo
    tensor: np.ndarray
    metadata: dict[str, list[str]]
    layouts: list[np.ndarray]


def read_config(run_dir: str | Path) -> ProjectorConfig:
    """The ``ProjectorConfig`` of ``run_dir`` (empty when it has none yet).

    Raises:
        ValueError: If the config cannot be parsed.
    """
    return _read_config(Path(run_dir) / CONFIG_FILENAME)


def read_embedding(run_dir: str | Path, tag: str, *, tensor: bool = True) -> StoredEmbedding:
    """Reads the embedding ``tag`` back from ``run_dir``: the one reader of this package's entries,
    used by the run-folder results, the benchmarks and the tests.

    Args:
        run_dir: The run folder holding ``projector_config.pbtxt``.
        tag: The embedding's tag (its :func:`safe_tag` is looked up).
        tensor: ``False`` skips the tensor file (an empty ``(0, D)`` array is returned), for
            readers that need the metadata or layouts only.

    Raises:
        ValueError: The config does not list ``tag``, or a file it lists is missing or malformed
            (the message names the file).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     _ = write_embedding(run_dir, "fc2", np.eye(2, 3) + 0.5, {"label": ["a", "b"], "index": [4, 9]})
        ...     _ = write_bookmarks(run_dir, "fc2", [layout_bookmark(np.eye(2), "view")])
        ...     stored = read_embedding(run_dir, "fc2")
        >>> stored.tensor.shape, stored.metadata["index"], stored.layouts[0].tolist()
        ((2, 3), ['4', '9'], [[1.0, 0.0], [0.0, 1.0]])
    """
    root = Path(run_dir)
    name = safe_tag(tag)
    info = next((entry for entry in read_config(root).embeddings if entry.tensor_name == name), None)
    if info is None:
        raise ValueError(f"Expected {root / CONFIG_FILENAME} to list the embedding {name!r}, but it does not.")
    shape = tuple(int(side) for side in info.tensor_shape)
    path = root / info.tensor_path
    try:
        if not tensor:
            values = np.zeros((0, shape[1] if len(shape) == 2 else 0), np.float32)
        elif path.suffix == ".bytes":
            values = np.fromfile(path, dtype="<f4").reshape(shape).astype(np.float32)
        else:
            values = np.loadtxt(path, delimiter="\t", ndmin=2, dtype=np.float32)
        metadata: dict[str, list[str]] = {}
        if info.metadata_path:
            lines = (root / info.metadata_path).read_text(encoding="utf-8").splitlines()
            if lines and "\t" in lines[0]:
                header, *rows = [line.split("\t") for line in lines]
                metadata = {column: [row[i] for row in rows] for i, column in enumerate(header)}
            else:
                metadata = {"label": lines}
        layouts = []
        if info.bookmarks_path:
            for state in json.loads((root / info.bookmarks_path).read_text(encoding="utf-8")):
                if state.get("selectedProjection") == "custom" and state.get("projections"):
                    layouts.append(np.array([[p["linear-x"], p["linear-y"]] for p in state["projections"]]))
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise ValueError(f"Expected the embedding {name!r} in {root} to be readable, but got: {err}") from err
    if tensor and values.shape != shape:
        raise ValueError(f"Expected {path} to hold a {shape} tensor, but got {values.shape}.")
    return StoredEmbedding(info, values, metadata, layouts)


def _read_config(config_path: Path) -> ProjectorConfig:
    """The config at ``config_path``; empty if there is none yet."""
    config = ProjectorConfig()
    if config_path.exists():
        try:
            text_format.Parse(config_path.read_text(encoding="utf-8"), config)
        except text_format.ParseError as err:
            raise ValueError(f"Expected {config_path} to be a ProjectorConfig text proto, but got: {err}") from err
    return config


def _listed_paths(root: Path) -> set[Path]:
    """Every file ``root``'s projector config lists, resolved as TensorBoard resolves them."""
    listed = set()
    for info in _read_config(root / CONFIG_FILENAME).embeddings:
        for rel in (info.tensor_path, info.metadata_path, info.bookmarks_path, info.sprite.image_path):
            if rel:
                listed.add(Path(os.path.realpath(root / os.path.expanduser(rel))))
    return listed


def _validate_embeddings(embeddings: np.ndarray) -> np.ndarray:
    """Returns ``embeddings`` as a C-contiguous ``(N, D)`` float32 array, or raises."""
    if not isinstance(embeddings, np.ndarray):
        raise TypeError(f"Expected `embeddings` to be an np.ndarray, but got {type(embeddings).__name__}.")
    if embeddings.dtype.kind not in "biuf":
        raise TypeError(f"Expected `embeddings` to hold real numbers, but got dtype {embeddings.dtype}.")
    if embeddings.ndim != 2 or 0 in embeddings.shape:
        raise ValueError(f"Expected `embeddings` to have shape (N, D) with N, D > 0, but got {embeddings.shape}.")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, counted as non-finite
        return np.ascontiguousarray(embeddings, dtype=np.float32)


def _metadata_rows(metadata: Metadata, n: int) -> list[list[str]]:
    """Returns the metadata TSV's lines as cells: a header first when there are 2+ columns."""
    if isinstance(metadata, Mapping):
        if not metadata:
            raise ValueError("Expected `metadata` to have at least one column, but got an empty mapping.")
        columns = {str(key): _column(values, n, f"metadata[{key!r}]") for key, values in metadata.items()}
    else:
        columns = {"label": _column(metadata, n, "metadata")}
    body = [list(cells) for cells in zip(*columns.values(), strict=True)]
    for cells in body:
        if not "".join(cells).strip():  # a blank line is skipped by the viewer, misaligning later rows
            cells[0] = _EMPTY_ROW_PLACEHOLDER
    if len(columns) == 1:
        return body  # one column: TensorBoard reads a header only from a line with a tab
    return [[_sanitise(name) for name in columns], *body]


def _column(values: object, n: int, name: str) -> list[str]:
    """Returns ``values`` as ``n`` sanitised strings, or raises."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise TypeError(f"Expected `{name}` to be a sequence of {n} values, but got {type(values).__name__}.")
    if isinstance(values, np.ndarray) and values.ndim != 1:
        raise ValueError(f"Expected `{name}` to be 1-D, but got shape {values.shape}.")
    if len(values) != n:
        raise ValueError(f"Expected `{name}` to have {n} rows, one per embedding row, but got {len(values)}.")
    return [_sanitise(str(value)) for value in values]


def _sanitise(cell: str) -> str:
    return _TSV_BREAKERS.sub(" ", cell)


def _relative_to_run_dir(root: Path, path: str | Path, name: str) -> Path:
    """Returns ``path`` (absolute, or relative to ``root``) relative to ``root`` after resolving links,
    as TensorBoard does; raises if it lies outside ``root``."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"Expected `{name}` to be a str or Path, but got {type(path).__name__}.")
    resolved = Path(os.path.realpath(root / path))
    if resolved == root or root not in resolved.parents:
        raise ValueError(
            f"Expected `{name}` to resolve inside the run directory {root} (TensorBoard rejects others), "
            f"but got {path} -> {resolved}."
        )
    return resolved.relative_to(root)


def _validate_sprite(path: Path, thumb_size: tuple[int, int] | None, n: int) -> None:
    """Checks that the sprite exists and has a thumbnail cell for each of the ``n`` rows."""
    if (
        not isinstance(thumb_size, tuple)
        or len(thumb_size) != 2
        or not all(isinstance(side, int) and side > 0 for side in thumb_size)
    ):
        raise TypeError(
            "Expected `sprite_thumb_size` to be a (height, width) tuple of positive ints with "
            f"`sprite_path`, but got {thumb_size!r}."
        )
    if not path.is_file():
        raise ValueError(f"Expected `sprite_path` to be an existing image file, but got {path}.")
    with Image.open(path) as image:  # reads the header only
        width, height = image.size
    thumb_h, thumb_w = thumb_size
    cells = (width // thumb_w) * (height // thumb_h)
    if cells < n:
        raise ValueError(
            f"Expected the {width}x{height} sprite to hold {n} thumbnails of {thumb_h}x{thumb_w}, but it holds {cells}."
        )


def _decodes_as_utf8(raw: bytes) -> bool:
    """Whether TensorBoard's TSV attempt would read ``raw`` without a ``UnicodeDecodeError``."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        decoder.decode(raw[:_TB_TEXT_READ_CHUNK], final=len(raw) <= _TB_TEXT_READ_CHUNK)
    except UnicodeDecodeError:
        return False
    return True
