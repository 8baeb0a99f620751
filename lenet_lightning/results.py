"""A series' end-of-series results, made from what the run wrote in its folder, and nothing else.

The run folder is the source of truth: each capture's Projector entry (tensor, metadata, bookmark
with its t-SNE layout) and ``separation.csv``. :func:`write_series_results` reads them back and
writes what a series ends with: a complete CSV (rows a killed run never wrote are computed), a map
for every capture that has none, the evolution image and the class-vector figure. The callback calls
it at the end of fit, validate and test; a resumed run, a killed run and a run of an older version
all end through it, and ``lenet-lightning report`` calls it on any run folder. No Lightning here.
"""

from __future__ import annotations

import csv
import io
import json
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lenet_lightning import animation, plots, points, projector, report_page, tsne
from lenet_lightning.analysis import nearest_layout
from lenet_lightning.atomic import write_atomically
from lenet_lightning.scores import (
    change_scores,
    cka_matrix,
    class_geometry,
    linear_cka,
    separation_scores,
    settled_step,
)

SCORE_COLUMNS = ("tag", "step", "stage", "probe_acc", "silhouette", "knn_acc_2d", "trustworthiness")
FEATURE_SCORES = ("probe_acc", "silhouette")  # known without a 2-D map: a gap has them at once
MAP_SCORES = ("knn_acc_2d", "trustworthiness")
DYNAMICS_PLOTTED = ("probe_acc", "cka_prev", "knn_overlap_prev", "cka_final", "nc1")
REPORT_CURVES = ("probe_acc", *SCORE_COLUMNS[4:], "cka_prev", "knn_overlap_prev", "cka_final", "nc1")
CKA_MATRIX_BYTES = 512 * 2**20  # the heatmap holds every capture centred in float64: skipped above this
TRAJECTORIES = "{layer}_trajectories"
DEFAULT_LAYER = "fc2"
SERIES_FILE = "series_{layer}.json"  # in <run_dir>/projector/: what a series is, for readers of the folder
_TAG = re.compile(r"(?P<layer>.+?)_(?:(?P<stage>validate|test)_)?step(?P<step>\d{7})")


class Writer(Protocol):
    """Where a series' TensorBoard values go: the Lightning callback passes its loggers' writers; a
    run folder read offline passes none."""

    def add_scalars(self, values: Mapping[str, float], step: int) -> None: ...

    def add_image(self, tag: str, encoded: bytes, step: int) -> None: ...


@dataclass(frozen=True)
class SeriesInfo:
    """What a series is, written once beside its entries (``projector/series_<layer>.json``), so
    that its folder alone says how to finish it.

    Args:
        layer: The captured layer; its entries are ``<layer>_stepNNNNNNN`` (and ``_validate_``,
            ``_test_``).
        class_names: One name per class, in class-index order (the plots' colours follow it).
        name: Names the plot folder's default and the scalars (``embeddings`` for ``fc2``).
        plot_dir: Where plots and ``separation.csv`` go.
        class_layer: The layer whose weight rows are the class vectors (``<class_layer>.weight_*``).
        plot_format: ``png``, ``svg`` or ``pdf``.
        plot_dpi: Resolution of the plots.
        perplexity: The t-SNE perplexity of the maps.
        seed: Seeds t-SNE.
        settle_threshold: The representation has settled from the first capture whose linear CKA
            to the final capture stays at or above this.
    """

    layer: str
    class_names: tuple[str, ...]
    name: str
    plot_dir: Path
    class_layer: str = DEFAULT_LAYER
    plot_format: str = "png"
    plot_dpi: int = 100
    perplexity: float = 30.0
    seed: int = 0
    settle_threshold: float = 0.95

    @staticmethod
    def default_name(layer: str) -> str:
        """``embeddings`` for ``fc2``, else ``embeddings_<layer>``."""
        return "embeddings" if layer == DEFAULT_LAYER else f"embeddings_{projector.safe_tag(layer)}"

    def tag(self, step: int, stage: str) -> str:
        """The capture's entry name: ``fc2_step0000100``, ``fc2_test_step0000100``."""
        return f"{self.layer}_step{step:07d}" if stage == "fit" else f"{self.layer}_{stage}_step{step:07d}"

    def write(self, run_dir: Path) -> None:
        """Writes the info; a plot folder inside the run folder is written relative to it, so that
        the folder can be moved, copied or shared and still says where its plots are."""
        plot_dir = Path(self.plot_dir)
        if plot_dir.is_relative_to(run_dir):
            plot_dir = plot_dir.relative_to(run_dir)
        data = {"layer": self.layer, "class_names": list(self.class_names), "name": self.name,
                "plot_dir": plot_dir.as_posix(), "class_layer": self.class_layer, "plot_format": self.plot_format,
                "plot_dpi": self.plot_dpi, "perplexity": self.perplexity, "seed": self.seed,
                "settle_threshold": self.settle_threshold}
        text = json.dumps(data, indent=1)
        write_atomically(_info_path(run_dir, self.layer), lambda stream: stream.write(text.encode()))

    @classmethod
    def read(cls, run_dir: Path, layer: str) -> SeriesInfo:
        """The series' info as written, or, for a run of an older version, what its entries say
        (class names from the class-vector entry's labels, else the labels sorted)."""
        path = _info_path(run_dir, layer)
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            plot_dir = Path(run_dir) / data["plot_dir"]
            if plot_dir.is_absolute() and (Path(run_dir) / data["name"]).is_dir():  # written absolute by 0.x: the
                plot_dir = Path(run_dir) / data["name"]  # folder may have moved, and its plots with it
            return cls(**{**data, "class_names": tuple(data["class_names"]), "plot_dir": plot_dir})
        name = cls.default_name(layer)
        entries = [tag for tag in projector.listed_embeddings(run_dir) if tag.startswith(f"{DEFAULT_LAYER}.weight_")]
        if entries:
            names = tuple(projector.read_embedding(run_dir, entries[-1], tensor=False).metadata["label"])
        else:
            tags = [tag for tag, _ in series_tags(run_dir, layer)]
            labels = projector.read_embedding(run_dir, tags[-1], tensor=False).metadata["label"] if tags else []
            names = tuple(sorted(set(labels), key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v)))
        return cls(layer, names, name, Path(run_dir) / name)


@dataclass
class StoredCapture:
    """One capture as its folder holds it."""

    tag: str
    step: int
    stage: str
    labels: np.ndarray  # (N,) class indices
    metadata: dict[str, list[str]]
    layout: np.ndarray | None  # (N, 2), from its bookmark
    features: np.ndarray | None = field(default=None, repr=False)  # (N, D), read when needed

    @property
    def key(self) -> tuple[int, str]:
        return self.step, self.stage

    @property
    def probe_acc(self) -> float | None:
        correct = self.metadata.get("correct")
        return None if correct is None else float(np.mean([value == "yes" for value in correct]))

    def title(self) -> str:
        return capture_title(self.step, self.stage, self.probe_acc)


def capture_title(step: int, stage: str, probe_acc: float | None) -> str:
    """A capture's title in its plot, the evolution GIF and the report: ``test, step 300 · probe acc 0.912``."""
    title = f"{'' if stage == 'fit' else f'{stage}, '}step {step}"
    return title if probe_acc is None else f"{title} · probe acc {probe_acc:.3f}"


def series_tags(run_dir: str | Path, layer: str) -> list[tuple[str, tuple[int, str]]]:
    """The captures of ``layer`` listed in ``run_dir``, as ``(tag, (step, stage))`` in step order."""
    found = []
    for tag in projector.listed_embeddings(run_dir):
        match = _TAG.fullmatch(tag)
        if match and match["layer"] == projector.safe_tag(layer):
            found.append((tag, (int(match["step"]), match["stage"] or "fit")))
    return sorted(found, key=lambda item: (item[1][0], item[1][1] != "fit", item[1][1]))


def series_layers(run_dir: str | Path) -> list[str]:
    """The layers with captures in ``run_dir`` (class-vector entries are not a series)."""
    layers = []
    for tag in projector.listed_embeddings(run_dir):
        match = _TAG.fullmatch(tag)
        if match and ".weight_" not in f"{match['layer']}_" and match["layer"] not in layers:
            layers.append(match["layer"])
    return layers


def read_capture(run_dir: Path, info: SeriesInfo, tag: str, key: tuple[int, str], *, features: bool = False
                 ) -> StoredCapture:
    """One capture read back; ``features`` reads its tensor too."""
    stored = projector.read_embedding(run_dir, tag, tensor=features)
    index = {name: i for i, name in enumerate(info.class_names)}
    labels = np.array([index[label] for label in stored.metadata["label"]], dtype=np.int64)
    layout = stored.layouts[0] if stored.layouts else None
    return StoredCapture(tag, key[0], key[1], labels, stored.metadata, layout,
                         stored.tensor if features else None)


def stored_class_geometry(run_dir: Path, info: SeriesInfo, tag: str, features: np.ndarray, labels: np.ndarray,
                          metadata: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """A capture's class geometry (:func:`~lenet_lightning.scores.class_geometry`) from what its entry
    holds: its predictions, and, when the captured layer feeds the class layer, the class vectors
    captured with it; the same for a capture analysed during the run and one finished afterwards."""
    index = {name: i for i, name in enumerate(info.class_names)}
    predicted = metadata.get("predicted")
    predictions = None if predicted is None else np.array([index[name] for name in predicted])
    weight = None
    if info.class_layer != info.layer:  # the captured layer may feed the class layer
        vectors = f"{projector.safe_tag(info.class_layer)}.weight_{tag.removeprefix(info.layer + '_')}"
        if vectors in projector.listed_embeddings(run_dir):
            weight = projector.read_embedding(run_dir, vectors).tensor
            if weight.shape[1] != features.shape[1]:
                weight = None
    found = class_geometry(features, labels, len(info.class_names), class_weight=weight, predictions=predictions)
    return {name: value for name, value in found.items() if np.isfinite(value)}


def read_scores_csv(path: Path) -> dict[str, dict[str, str]]:
    """``separation.csv``'s rows by tag; none when it does not exist."""
    if not path.is_file():
        return {}
    with path.open(newline="") as stream:
        return {row["tag"]: row for row in csv.DictReader(stream)}


def write_scores_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Merges ``rows`` into the CSV at ``path`` by ``tag``, value by value (a value already there
    stays unless the new row has one), sorted by step, atomically; returns the merged rows by tag.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = Path(folder) / "s.csv"
        ...     _ = write_scores_csv(path, [{"tag": "fc2_step0000005", "step": 5, "silhouette": 0.5}])
        ...     _ = write_scores_csv(path, [{"tag": "fc2_step0000005", "step": 5, "knn_acc_2d": 0.9}])
        ...     _ = write_scores_csv(path, [{"tag": "fc2_step0000000", "step": 0, "probe_acc": None}])
        ...     print(path.read_text())
        tag,step,stage,probe_acc,silhouette,knn_acc_2d,trustworthiness
        fc2_step0000000,0,,,,,
        fc2_step0000005,5,,,0.5,0.9,
        <BLANKLINE>
    """
    merged: dict[str, dict[str, Any]] = dict(read_scores_csv(path))
    for row in rows:
        old = merged.get(row["tag"], {})
        merged[row["tag"]] = {**old, **{k: v for k, v in row.items() if (v is not None and v != "") or k not in old}}
    columns = [*SCORE_COLUMNS, *sorted({k for row in merged.values() for k in row} - set(SCORE_COLUMNS))]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore", restval="")
    writer.writeheader()
    for row in sorted(merged.values(), key=lambda r: (int(r["step"]), r["tag"])):
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    write_atomically(path, lambda stream: stream.write(text.getvalue().encode()))
    return merged


def save_plot(info: SeriesInfo, figure: Any, name: str) -> bytes:
    """Writes ``figure`` to the plot folder in the series' format, and returns it as PNG bytes at
    100 dpi for TensorBoard: for PNG plots at 100 dpi, the very bytes of the file (one encode)."""
    path = info.plot_dir / f"{name}.{info.plot_format}"
    try:
        png = plots.figure_png(figure, dpi=100)
        if info.plot_format == "png" and info.plot_dpi == 100:
            write_atomically(path, lambda stream: stream.write(png))
        else:
            plots.save_figure(figure, path, dpi=info.plot_dpi)
        return png
    finally:
        figure.clear()


def map_bookmark(info: SeriesInfo, step: int, tag: str, layout: np.ndarray) -> dict[str, Any]:
    """The Projector bookmark that shows a capture's t-SNE map, coloured by class."""
    name = f"step {step}: t-SNE of tsne_{tag}.{info.plot_format}"
    return projector.layout_bookmark(layout, name, color_by="label", perplexity=info.perplexity)


@dataclass(frozen=True)
class SeriesResults:
    """What :func:`write_series_results` wrote, and the line that says when the series settled."""

    files: list[Path]
    summary: str | None = None


def write_series_results(run_dir: str | Path, layer: str = DEFAULT_LAYER, *, writer: Writer | None = None,
                         info: SeriesInfo | None = None) -> SeriesResults:
    """Finishes one series from its run folder: maps for captures that have none, a complete
    ``separation.csv``, the evolution image of the fit's captures and the class-vector figure of
    the newest class-vector entry; their images go to ``writer`` too.

    Args:
        run_dir: The run folder (the one holding ``projector_config.pbtxt``).
        layer: The series' layer.
        writer: TensorBoard's writer of the run, or ``None`` (offline).
        info: The series' info, when the caller has it; else read from the folder.

    Over the fit's captures it also writes how the representation changed: every capture's linear
    CKA to the final one (``cka_final`` in the CSV), the step it settled at (``dynamics.json``, the
    CSV's ``settled`` column), the CKA heatmap and the dynamics figure; and each probe point's story:
    ``points.csv``, the data map, the hardest images, ``layouts.npz`` and the trajectories entry.

    Returns:
        The files written, and the settled line.

    Raises:
        ValueError: ``run_dir`` holds no capture of ``layer``.
    """
    run_dir = Path(run_dir)
    tags = series_tags(run_dir, layer)
    if not tags:
        raise ValueError(f"Expected {run_dir} to hold Projector entries of `layer` {layer!r}, but it holds "
                         f"none; give the folder of a run (lightning_logs/version_N).")
    info = info or SeriesInfo.read(run_dir, layer)
    csv_path = info.plot_dir / "separation.csv"
    rows = read_scores_csv(csv_path)
    written: list[Path] = []
    captures = [read_capture(run_dir, info, tag, key) for tag, key in tags]
    layouts = {c.key: c.layout for c in captures if c.layout is not None}
    new_rows = []
    for capture in captures:
        row = rows.get(capture.tag, {})
        needs_map = capture.layout is None
        if not needs_map and not (info.plot_dir / f"tsne_{capture.tag}.{info.plot_format}").is_file():
            written.append(_plot_map(info, capture))  # a plot removed, or never written (killed mid-plot)
        if not needs_map and all(row.get(column) not in (None, "") for column in SCORE_COLUMNS[4:]):
            continue
        # A capture the run never finished (killed, or an older version): made now, from its entry.
        capture.features = projector.read_embedding(run_dir, capture.tag).tensor
        if needs_map:
            try:
                written.append(_make_map(run_dir, info, capture, nearest_layout(layouts, capture.key)))
                layouts[capture.key] = capture.layout
            except Exception as err:  # one capture's map is lost, not the series' results
                warnings.warn(f"EmbeddingProjector: no map for {capture.tag} ({type(err).__name__}: {err}).",
                              UserWarning, stacklevel=2)
        scores = separation_scores(capture.features, capture.layout, capture.labels)
        if capture.stage != "fit" and not row.get("nc1"):  # fit captures get theirs with the dynamics
            scores.update(stored_class_geometry(run_dir, info, capture.tag, capture.features, capture.labels,
                                                capture.metadata))
        new_rows.append({"tag": capture.tag, "step": capture.step, "stage": capture.stage,
                         "probe_acc": capture.probe_acc, **scores})
        capture.features = None
    if new_rows or not csv_path.is_file():
        write_scores_csv(csv_path, new_rows)
        written.append(csv_path)
    fit = [c for c in captures if c.stage == "fit" and c.layout is not None]
    if fit:
        figure = plots.plot_evolution([c.layout for c in fit], fit[0].labels, info.class_names,
                                      [f"step {c.step}" for c in fit])
        written.append(_figure(info, writer, figure, "tsne_evolution", fit[-1].step))
        written.append(_write_gif(info, writer, fit))
    summary, settled = _write_dynamics(run_dir, info, [c for c in captures if c.stage == "fit"], writer, written)
    if fit:
        sprite = projector.read_embedding(run_dir, fit[-1].tag, tensor=False).info.sprite
        history = _write_points(run_dir, info, fit, sprite, writer, written)
        written.append(_write_report_page(run_dir, info, fit, sprite, settled, history))
    prefix = f"{projector.safe_tag(info.class_layer)}.weight_"
    vectors = [tag for tag in projector.listed_embeddings(run_dir) if tag.startswith(prefix)]
    vectors = [tag for tag in vectors if _TAG.fullmatch(tag.replace(".weight", ""))]
    if vectors:
        newest = max(vectors, key=lambda tag: int(tag[-7:]))
        weight = projector.read_embedding(run_dir, newest).tensor  # (C, D)
        if not np.linalg.norm(weight, axis=1).all():  # a NaN row was written as zeros (see write_embedding)
            raise ValueError(f"Expected the class vectors of {newest} to be finite and non-zero, but a row is "
                             "zero: the weights were not finite when captured")
        figure = plots.plot_class_vectors(weight, info.class_names)
        written.append(_figure(info, writer, figure, "class_vectors", int(newest[-7:])))
    return SeriesResults(written, summary)


def _write_dynamics(run_dir: Path, info: SeriesInfo, fit: list[StoredCapture], writer: Writer | None,
                    written: list[Path]) -> tuple[str | None, int | None]:
    """CKA of every fit capture to the final one, the settled step, change scores a killed run never
    made, the heatmap and the dynamics figure. Features are read one capture at a time. Returns the
    line that says when the series settled, and the step."""
    if len(fit) < 2:
        return None, None
    final = projector.read_embedding(run_dir, fit[-1].tag).tensor
    keep = 8 * final.size * len(fit) <= CKA_MATRIX_BYTES
    rows = read_scores_csv(info.plot_dir / "separation.csv")
    kept, cka_final, new_rows = [], [], []
    previous = first = None
    for stored in fit:
        x = final if stored is fit[-1] else projector.read_embedding(run_dir, stored.tag).tensor
        row = rows.get(stored.tag, {})
        new = {"tag": stored.tag, "step": stored.step, "stage": stored.stage, "cka_final": linear_cka(x, final)}
        if previous is not None and not row.get("cka_prev"):  # a capture whose analysis never ran
            new.update(change_scores(x, previous=previous, first=first))
        if not row.get("nc1"):
            new.update(stored_class_geometry(run_dir, info, stored.tag, x, stored.labels, stored.metadata))
        cka_final.append(new["cka_final"])
        new_rows.append(new)
        first = x if first is None else first
        previous = x
        if keep:
            kept.append(x)
    steps = [c.step for c in fit]
    settled = settled_step(steps, cka_final, info.settle_threshold)
    for new in new_rows:
        new["settled"] = int(settled is not None and new["step"] >= settled)
    merged = write_scores_csv(info.plot_dir / "separation.csv", new_rows)
    summary = {"layer": info.layer, "threshold": info.settle_threshold, "settled_step": settled,
               "steps": steps, "cka_final": [None if not np.isfinite(v) else float(v) for v in cka_final]}
    text = json.dumps(summary, indent=1)
    write_atomically(info.plot_dir / "dynamics.json", lambda stream: stream.write(text.encode()))
    written += [info.plot_dir / "separation.csv", info.plot_dir / "dynamics.json"]
    if writer is not None:
        for step, value in zip(steps, cka_final, strict=True):
            if np.isfinite(value):
                writer.add_scalars({f"{info.name}/cka_final": float(value)}, step)
    if kept:
        figure = plots.plot_cka_matrix(steps, cka_matrix(kept), title=f"{info.layer}: linear CKA between captures")
        written.append(_figure(info, writer, figure, "cka_matrix", steps[-1]))
    columns = {name: [_number(merged.get(c.tag, {}).get(name)) for c in fit] for name in DYNAMICS_PLOTTED}
    columns = {name: values for name, values in columns.items() if any(v is not None for v in values)}
    figure = plots.plot_dynamics(steps, columns, settled, info.settle_threshold, title=info.layer)
    written.append(_figure(info, writer, figure, "dynamics", steps[-1]))
    if settled is None:
        return (f"EmbeddingProjector: {info.layer} did not settle: its linear CKA to the final capture is not at or "
                f"above {info.settle_threshold} from any capture on."), None
    return (f"EmbeddingProjector: {info.layer} settled at step {settled}: its linear CKA to the final capture "
            f"stays at or above {info.settle_threshold} from there on."), settled


def _write_points(run_dir: Path, info: SeriesInfo, fit: list[StoredCapture], sprite: Any, writer: Writer | None,
                  written: list[Path]) -> tuple[list[int], np.ndarray, np.ndarray] | None:
    """Each probe point's story over the mapped fit captures: ``points.csv``, the data map, the
    hardest images, ``layouts.npz`` and the trajectories entry. Returns the hardest points and every
    capture's predictions and ``p_true`` ``(C, N)``, when the model predicts classes."""
    steps = np.array([c.step for c in fit])
    dataset_index = np.array([int(i) for i in fit[0].metadata.get("index", range(len(fit[0].labels)))])
    points.write_layouts(info.plot_dir / "layouts.npz", steps, [c.layout for c in fit], dataset_index)
    written.append(info.plot_dir / "layouts.npz")
    write_trajectories(run_dir, info, fit)
    if not all("p_true" in c.metadata for c in fit):  # no class predictions (or an older run)
        return None
    predicted, p_true, labels = points.history_from_metadata([c.metadata for c in fit], info.class_names)
    summary = points.point_summary(steps, predicted, p_true, labels)
    points.write_points_csv(info.plot_dir / "points.csv", summary, np.arange(len(labels)), dataset_index, labels,
                            info.class_names)
    written.append(info.plot_dir / "points.csv")
    figure = plots.plot_data_map(summary["p_true_mean"], summary["p_true_std"], summary["fraction_correct"])
    written.append(_figure(info, writer, figure, "data_map", int(steps[-1])))
    hardest = [int(i) for i in points.hardest(summary, n=min(30, len(labels)))]
    if sprite.image_path:
        width, height = sprite.single_image_dim
        images = points.sprite_thumbnails(run_dir / sprite.image_path, (height, width), hardest)
        titles = [f"#{i} {info.class_names[labels[i]]} → {info.class_names[summary['last_predicted'][i]]}"
                  for i in hardest]
        figure = plots.plot_hardest(images, titles)
        written.append(_figure(info, writer, figure, "hardest", int(steps[-1])))
    return hardest, predicted, p_true


def _write_report_page(run_dir: Path, info: SeriesInfo, fit: list[StoredCapture], sprite: Any, settled: int | None,
                       history: tuple[list[int], np.ndarray, np.ndarray] | None) -> Path:
    """``report.html``: the fit's maps, each point's prediction and thumbnail, and the run's curves,
    in one file that needs nothing else."""
    hardest, predicted, p_true = history if history is not None else (None, None, None)
    if predicted is None and all("predicted" in c.metadata for c in fit):  # an older run: no p_true
        index = {name: i for i, name in enumerate(info.class_names)}
        predicted = np.array([[index[name] for name in c.metadata["predicted"]] for c in fit])
    rows = read_scores_csv(info.plot_dir / "separation.csv")
    curves = {name: [_number(rows.get(c.tag, {}).get(name)) for c in fit] for name in REPORT_CURVES}
    sprite_png = thumb = None
    if sprite.image_path and (run_dir / sprite.image_path).is_file():
        sprite_png = (run_dir / sprite.image_path).read_bytes()
        thumb = (sprite.single_image_dim[1], sprite.single_image_dim[0])  # (height, width)
    page = report_page.report_html(
        title=f"{info.layer} of {run_dir.name}", class_names=info.class_names, labels=fit[0].labels,
        steps=[c.step for c in fit], layouts=[c.layout for c in fit], predicted=predicted, p_true=p_true,
        curves=curves, settled_step=settled, sprite_png=sprite_png, thumb_size=thumb, hardest=hardest)
    path = info.plot_dir / "report.html"
    write_atomically(path, lambda stream: stream.write(page.encode("utf-8")))
    return path


def write_trajectories(run_dir: Path, info: SeriesInfo, fit: Sequence[StoredCapture] | None = None) -> None:
    """The ``<layer>_trajectories`` entry: every mapped fit capture's map, each point linked to itself
    at the next capture, so the Projector draws its path through training; rewritten atomically.
    ``fit``: those captures, when the caller has read them already; else they are read here."""
    if fit is None:
        fit = [read_capture(run_dir, info, tag, key) for tag, key in series_tags(run_dir, info.layer)
               if key[1] == "fit"]
    fit = [c for c in fit if c.layout is not None]
    if len(fit) < 2:
        return
    names = [info.class_names[label] for label in fit[0].labels]
    xyz, metadata, note = points.trajectory_points(np.array([c.step for c in fit]), [c.layout for c in fit],
                                                   [c.metadata for c in fit], names)
    tag = TRAJECTORIES.format(layer=info.layer)
    projector.write_embedding(run_dir, tag, xyz, metadata)
    label = f"trajectories of {len(fit)} captures" + (f" ({note})" if note else "")
    projector.write_bookmarks(run_dir, tag, [projector.layout_bookmark(xyz[:, :2], label, color_by="step")])


def _number(cell: Any) -> float | None:
    try:
        value = float(cell)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _make_map(run_dir: Path, info: SeriesInfo, capture: StoredCapture, init: np.ndarray | None) -> Path:
    """t-SNE of a capture that has no map, warm-started from its nearest neighbour's; its bookmark and plot."""
    assert capture.features is not None
    perplexity = tsne.effective_perplexity(len(capture.labels), info.perplexity)
    capture.layout = tsne.embed_2d(capture.features, init=init, perplexity=perplexity, seed=info.seed)
    projector.write_bookmarks(run_dir, capture.tag, [map_bookmark(info, capture.step, capture.tag, capture.layout)])
    return _plot_map(info, capture)


def _plot_map(info: SeriesInfo, capture: StoredCapture) -> Path:
    figure = plots.plot_embedding(capture.layout, capture.labels, info.class_names, title=capture.title())
    save_plot(info, figure, f"tsne_{capture.tag}")
    return info.plot_dir / f"tsne_{capture.tag}.{info.plot_format}"


def _write_gif(info: SeriesInfo, writer: Writer | None, fit: list[StoredCapture]) -> Path:
    """``tsne_evolution.gif``: the fit's maps, the points moving from one to the next; in the Images
    tab too, where TensorBoard plays it."""
    gif = animation.evolution_gif([c.layout for c in fit], fit[0].labels, info.class_names, [c.title() for c in fit])
    path = info.plot_dir / "tsne_evolution.gif"
    write_atomically(path, lambda stream: stream.write(gif))
    if writer is not None:
        writer.add_image(f"{info.name}/tsne_evolution_animated", gif, fit[-1].step)
    return path


def _figure(info: SeriesInfo, writer: Writer | None, figure: Any, name: str, step: int) -> Path:
    png = save_plot(info, figure, name)
    if writer is not None:
        writer.add_image(f"{info.name}/{name}", png, step)
    return info.plot_dir / f"{name}.{info.plot_format}"


def _info_path(run_dir: Path, layer: str) -> Path:
    return Path(run_dir) / projector.ASSETS_DIRNAME / SERIES_FILE.format(layer=projector.safe_tag(layer))
