"""One series of captures on disk: each capture's Projector entry, its analysis' row, plot and
bookmark, and its TensorBoard values in step order. No Lightning: it is used and tested without a
Trainer, and the ``EmbeddingProjector`` callback only decides when to call it.

Everything it writes can be read back (:mod:`lenet_lightning.results`), so it holds no series in
memory: what a capture was is in its entry, what its analysis found is in ``separation.csv``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from lenet_lightning import capture, plots, points, projector
from lenet_lightning.analysis import Analysis, Capture, CaptureKey
from lenet_lightning.results import (
    DEFAULT_LAYER,
    FEATURE_SCORES,
    SeriesInfo,
    Writer,
    capture_title,
    map_bookmark,
    read_scores_csv,
    save_plot,
    series_tags,
    stored_class_geometry,
    write_scores_csv,
    write_series_results,
    write_trajectories,
)
from lenet_lightning.scores import change_scores
from lenet_lightning.step_order import StepOrder


class SeriesRecorder:
    """Writes one layer's series on one probe set into a run folder.

    Args:
        run_dir: The run folder: Projector files go there, where TensorBoard looks.
        probe: The probe set (the same points at every capture).
        info: What the series is (layer, class names, plot folder and format, perplexity); it is
            written beside the entries so that the folder alone can be finished or reported on.
        sprites: Give image inputs their thumbnails in the Projector.
        writer: Where scalars and images go (TensorBoard), or ``None``.

    Example:
        >>> import tempfile
        >>> probe = capture.ProbeSet(torch.rand(6, 1, 8, 8), np.arange(6) % 2, ("a", "b"), np.arange(6), 6)
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     info = SeriesInfo("fc2", probe.class_names, "embeddings", Path(run_dir) / "embeddings")
        ...     recorder = SeriesRecorder(Path(run_dir), probe, info)
        ...     record = recorder.write_capture(0, "fit", np.ones((6, 2), np.float32), torch.zeros(6, 2))
        ...     recorder.record(Analysis(record, {"silhouette": 0.0}))
        ...     recorder.captured((0, "fit")), sorted(p.name for p in (Path(run_dir) / "embeddings").iterdir())
        (True, ['separation.csv'])
    """

    def __init__(self, run_dir: Path, probe: capture.ProbeSet, info: SeriesInfo, *, sprites: bool = True,
                 writer: Writer | None = None) -> None:
        self.run_dir, self.probe, self.info, self.sprites, self.writer = Path(run_dir), probe, info, sprites, writer
        self._sprite: tuple[str, tuple[int, int]] | bool | None = False  # False: not written yet
        self._order = StepOrder()  # what goes to TensorBoard, held until it comes in step order
        self._info_written = False
        self._points: tuple[int, points.PointColumns] | None = None  # the newest fit capture's point columns

    @property
    def plot_dir(self) -> Path:
        return self.info.plot_dir

    def tag(self, key: CaptureKey) -> str:
        return self.info.tag(*key)

    def captured(self, key: CaptureKey) -> bool:
        """Whether the run folder lists the capture ``key`` already (an unreadable config: no)."""
        try:
            return projector.safe_tag(self.tag(key)) in projector.listed_embeddings(self.run_dir)
        except ValueError:
            return False

    def complete(self, key: CaptureKey) -> bool:
        """Whether the capture ``key`` is listed and its row has its map's scores: nothing left to do."""
        row = read_scores_csv(self._csv).get(self.tag(key), {})
        return bool(row.get("knn_acc_2d") or row.get("trustworthiness")) and self.captured(key)

    def read_features(self, key: CaptureKey) -> np.ndarray:
        """A capture's ``(N, D)`` features, read back from its entry (a gap's, when it is mapped)."""
        return projector.read_embedding(self.run_dir, self.tag(key)).tensor

    # ------------------------------------------------------------------ a capture
    def write_capture(self, step: int, stage: str, features: np.ndarray, outputs: torch.Tensor,
                      class_weight: np.ndarray | None = None) -> Capture | None:
        """Writes the capture's Projector entry (tensor, metadata, sprite) and the class vectors'
        beside it; returns it for its analysis, or ``None`` (with a warning) when it could not be
        written: a capture is lost, never the run."""
        metadata, probe_acc = capture.probe_metadata(self.probe, outputs)
        if "predicted" in metadata:  # the model predicts classes: each point's story so far
            logits = outputs.float().numpy()  # (N, C)
            previous = self._point_columns_before(step) if stage == "fit" else None
            columns = points.next_point_columns(previous, step, logits.argmax(axis=1),
                                                points.true_class_probability(logits, self.probe.labels),
                                                self.probe.labels)
            metadata.update(columns.to_metadata())
            if stage == "fit":
                self._points = (step, columns)
        tag = self.tag((step, stage))
        try:
            if not self._info_written:
                self.info.write(self.run_dir)
                self._info_written = True
            sprite_path, thumb = self._sprite_once()
            projector.write_embedding(self.run_dir, tag, features, metadata, sprite_path=sprite_path,
                                      sprite_thumb_size=thumb)
            if class_weight is not None:
                suffix = tag.removeprefix(f"{self.info.layer}_")
                projector.write_embedding(self.run_dir, f"{self.info.class_layer}.weight_{suffix}", class_weight,
                                          list(self.probe.class_names))
        except OSError as err:
            warnings.warn(f"EmbeddingProjector: could not write the projector entry {tag} ({err}); skipped it, "
                          "training goes on.", UserWarning, stacklevel=2)
            return None
        return Capture(step, stage, features, self.probe.labels, probe_acc, reloadable=True)

    def _point_columns_before(self, step: int) -> points.PointColumns | None:
        """The point columns of the newest fit capture before ``step``: this run's, or, after a
        resume, read back from that capture's entry (not a second copy in the checkpoint)."""
        if self._points is not None and self._points[0] < step:
            return self._points[1]
        earlier = [tag for tag, key in series_tags(self.run_dir, self.info.layer) if key[1] == "fit" and key[0] < step]
        if not earlier:
            return None
        stored = projector.read_embedding(self.run_dir, earlier[-1], tensor=False)
        return points.point_columns_from_metadata(stored.metadata, self.probe.class_names)

    def change(self, record: Capture) -> dict[str, float]:
        """Analysis thread: how the capture differs from the previous fit capture and the first
        (read back from their entries), and its class geometry. A failure costs these numbers,
        with a warning, never the run."""
        try:
            assert record.features is not None
            found: dict[str, float] = {}
            if record.stage == "fit":
                earlier = [key for _, key in series_tags(self.run_dir, self.info.layer)
                           if key[1] == "fit" and key[0] < record.step]
                if earlier:
                    found.update(change_scores(record.features, previous=self.read_features(earlier[-1]),
                                               first=self.read_features(earlier[0])))
            stored = projector.read_embedding(self.run_dir, self.tag(record.key), tensor=False).metadata
            found.update(stored_class_geometry(self.run_dir, self.info, self.tag(record.key), record.features,
                                               record.labels, stored))
            return {name: value for name, value in found.items() if np.isfinite(value)}
        except Exception as err:  # the other scores, the map and the run go on
            warnings.warn(f"EmbeddingProjector: the representation-change scores of {self.tag(record.key)} were "
                          f"skipped ({type(err).__name__}: {err}).", UserWarning, stacklevel=2)
            return {}

    def _sprite_once(self) -> tuple[str | None, tuple[int, int] | None]:
        """The probe never changes within a run, so neither does its sprite: written once. Inputs
        that are not images get none."""
        if self._sprite is False:
            images = capture.sprite_images(self.probe.inputs) if self.sprites else None
            self._sprite = None
            if images is not None:
                layer = self.info.layer
                name = "sprite.png" if layer == DEFAULT_LAYER else f"sprite_{projector.safe_tag(layer)}.png"
                path = self.run_dir / projector.ASSETS_DIRNAME / name
                self._sprite = (str(path), projector.write_sprite(images, path))
        return self._sprite if isinstance(self._sprite, tuple) else (None, None)

    def expect(self, key: CaptureKey) -> None:
        """Announces that the capture's analysis comes later (in the background): the values of
        later steps wait for it. Its early scores are not awaited when its row has them already
        (a capture queued in a checkpoint, whose silhouette the earlier run logged)."""
        if "silhouette" not in {k for k, v in read_scores_csv(self._csv).get(self.tag(key), {}).items() if v}:
            self._order.expect("scores", key[0])
        self._order.expect("map", key[0])

    # ------------------------------------------------------------------ its analysis
    def draw_map(self, record: Capture, layout: np.ndarray) -> bytes:
        """Analysis thread: saves the capture's t-SNE plot and returns it as PNG bytes for the Images
        tab. Reads only what stays fixed during the run."""
        title = capture_title(record.step, record.stage, record.probe_acc)
        figure = plots.plot_embedding(layout, record.labels, self.probe.class_names, title=title)
        return save_plot(self.info, figure, f"tsne_{self.tag(record.key)}")

    def record(self, analysis: Analysis) -> None:
        """Where a finished analysis joins the series: its row is merged into ``separation.csv``,
        its bookmark written, and its new scores and plot logged at its step once the earlier
        steps' have been. A gap comes here twice: with its silhouette, then with its map."""
        record = analysis.capture
        tag = self.tag(record.key)
        if analysis.error is not None:
            stage, lost = ("t-SNE", "no 2-D scores or plot") if analysis.layout is None else ("plot", "no plot")
            reason = analysis.error.strip().splitlines()[-1]
            warnings.warn(f"EmbeddingProjector: {stage} of {tag} failed ({reason}); {lost} for it. "
                          f"Traceback from the analysis thread:\n{analysis.error}", UserWarning, stacklevel=2)
        before = {k for k, v in read_scores_csv(self._csv).get(tag, {}).items() if v}
        row = {"tag": tag, "step": record.step, "stage": record.stage, "probe_acc": record.probe_acc,
               **analysis.scores}
        new = {name: float(value) for name, value in row.items()
               if name not in ("tag", "step", "stage", *before) and value is not None}
        try:
            write_scores_csv(self._csv, [row])
        except OSError as err:
            warnings.warn(f"EmbeddingProjector: could not write {self._csv} ({err}); the run's end writes it again.",
                          UserWarning, stacklevel=2)
        if analysis.layout is not None:
            try:
                projector.write_bookmarks(self.run_dir, tag, [map_bookmark(self.info, record.step, tag,
                                                                           analysis.layout)])
                if record.stage == "fit":
                    write_trajectories(self.run_dir, self.info)  # live, like the captures' own entries
            except (OSError, ValueError) as err:  # e.g. a capture queued in a checkpoint of another run folder
                warnings.warn(f"EmbeddingProjector: could not write the bookmark of {tag} ({err}); skipped it.",
                              UserWarning, stacklevel=2)
        early = {name: value for name, value in new.items() if name in FEATURE_SCORES}
        released = self._order.put("scores", record.step, (early, None))
        if analysis.layout is not None or analysis.error is not None:  # final: not a gap's scores-only result
            late = {name: value for name, value in new.items() if name not in FEATURE_SCORES}
            released += self._order.put("map", record.step, (late, analysis.image))
        if self.writer is not None:
            for _, step, (metrics, image) in released:
                if metrics:
                    self.writer.add_scalars({f"{self.info.name}/{k}": v for k, v in metrics.items()}, step)
                if image is not None:
                    self.writer.add_image(f"{self.info.name}/tsne", image, step)

    def finish(self) -> str | None:
        """The series' end-of-series results, from the run folder (see :mod:`lenet_lightning.results`);
        returns the line that says when the representation settled, if there is one. A figure that
        cannot be made or written is reported and skipped: the run has finished."""
        try:
            return write_series_results(self.run_dir, self.info.layer, writer=self.writer, info=self.info).summary
        except (OSError, ValueError) as err:
            warnings.warn(f"EmbeddingProjector: an end-of-run figure was skipped ({err}).", UserWarning,
                          stacklevel=2)
            return None

    @property
    def _csv(self) -> Path:
        return self.info.plot_dir / "separation.csv"


def image_summary(tag: str, encoded: bytes) -> object:
    """TensorBoard's ``Summary`` holding an encoded image (PNG, or GIF, which the Images tab plays),
    without decoding and encoding it again.

    Example:
        >>> summary = image_summary("embeddings/tsne", plots.png_bytes(np.zeros((2, 3, 3), np.uint8)))
        >>> summary.value[0].image.width, summary.value[0].image.height
        (3, 2)
    """
    import io

    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary

    with Image.open(io.BytesIO(encoded)) as image:
        width, height = image.size
        colorspace = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}.get(image.mode, 3)
    picture = Summary.Image(height=height, width=width, colorspace=colorspace, encoded_image_string=encoded)
    return Summary(value=[Summary.Value(tag=tag, image=picture)])

