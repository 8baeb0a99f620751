"""The EmbeddingProjector callback, driven by real (small) Lightning fits on the bundled digits."""

import threading
import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from helpers import CAPTURE_COLUMNS, read_csv, read_projector, read_scalars
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lenet_lightning import analysis as analysis_module
from lenet_lightning import projector as projector_module
from lenet_lightning.data import LeNetDataModule
from lenet_lightning.embeddings import EmbeddingProjector
from lenet_lightning.model import LeNetClassifier


def fit(tmp_path, callback=None, max_steps=20, seed=0, model=None, callbacks_after=(), ckpt_path=None,
        **trainer_kwargs):
    pl.seed_everything(seed)
    dm = LeNetDataModule("digits", batch_size=32, val_size=0.15, seed=seed)
    model = model or LeNetClassifier(lr=1e-3)
    trainer_kwargs = {"limit_val_batches": 1, **trainer_kwargs}
    trainer = pl.Trainer(
        max_steps=max_steps, accelerator="cpu", logger=TensorBoardLogger(tmp_path, name="", version="run"),
        callbacks=([callback] if callback else []) + list(callbacks_after), enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path,
        **trainer_kwargs,
    )
    trainer.fit(model, dm, ckpt_path=ckpt_path)
    return trainer, model, tmp_path / "run"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"every_n_train_steps": -1}, "`every_n_train_steps`.*-1"),
        ({"every_n_train_steps": 2.5}, "`every_n_train_steps`.*2.5"),
        ({"num_samples": 1}, "`num_samples`.*1"),
        ({"perplexity": 0}, "`perplexity`.*0"),
        ({"perplexity": float("nan")}, "`perplexity`.*nan"),
        ({"schedule": "sometimes"}, "`schedule`.*sometimes"),
        ({"split": "holdout"}, "`split`.*holdout"),
        ({"layer": ""}, "`layer`"),
        ({"seed": -1}, "`seed`.*-1"),
        ({"seed": 2**32}, "`seed`"),
        ({"plot_format": "jpg"}, "plot format.*'jpg'"),
        ({"plot_dpi": 0}, "`dpi`.*0"),
    ],
)
def test_embedding_projector_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EmbeddingProjector(**kwargs)


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [("fixed", [10, 20, 30, 40, 50, 60, 70, 80]), ("doubling", [10, 20, 40, 80])],
)
def test_embedding_projector_schedule(schedule, expected):
    callback = EmbeddingProjector(every_n_train_steps=10, schedule=schedule)
    assert [step for step in range(0, 85) if callback.is_capture_step(step)] == expected
    assert not any(EmbeddingProjector(every_n_train_steps=0).is_capture_step(step) for step in range(50))


def test_embedding_projector_missing_layer_fails_at_setup_listing_layers(tmp_path):
    with pytest.raises(ValueError, match=r"`layer`.*'fc3'.*conv1, conv2, fc1, dropout, fc2"):
        fit(tmp_path, EmbeddingProjector(layer="fc3"), max_steps=1)


def test_embedding_projector_writes_every_capture_with_metadata_sprite_plots_and_scores(tmp_path):
    callback = EmbeddingProjector(every_n_train_steps=10, num_samples=100, perplexity=10)
    trainer, model, run_dir = fit(tmp_path, callback, max_steps=25)
    entries = read_projector(run_dir)
    assert entries.pop("fc2_trajectories")[0].shape == (400, 3)  # the 4 maps of 100 points, linked
    assert list(entries) == [
        "fc2_step0000000", "fc2.weight_step0000000", "fc2_step0000010", "fc2.weight_step0000010",
        "fc2_step0000020", "fc2.weight_step0000020", "fc2_step0000025", "fc2.weight_step0000025",
    ]
    features, rows = entries["fc2_step0000025"]
    assert features.shape == (100, 10)
    assert rows[0] == CAPTURE_COLUMNS and len(rows) == 101
    # The last capture is the final model's fc2 output, in eval mode, on the probe set in order.
    dm = trainer.datamodule
    images, labels = dm.split_tensors("val")
    index = np.array([int(row[4]) for row in rows[1:]])
    assert [row[0] for row in rows[1:]] == [dm.class_names[label] for label in labels[index].tolist()]
    expected = model.eval()(images[index]).detach().numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4)
    weight, names = entries["fc2.weight_step0000025"]
    np.testing.assert_allclose(weight, model.model.fc2.weight.detach().numpy(), rtol=1e-6)
    assert [row[0] for row in names] == list(dm.class_names) == ["0 - zero", "1 - one", "2 - two", "3 - three",
        "4 - four", "5 - five", "6 - six", "7 - seven", "8 - eight", "9 - nine"]
    assert (run_dir / "projector" / "sprite.png").is_file()
    plots = run_dir / "embeddings"
    for step in (0, 10, 20, 25):
        assert (plots / f"tsne_fc2_step{step:07d}.png").stat().st_size > 1000
    assert (plots / "tsne_evolution.png").is_file() and (plots / "class_vectors.png").is_file()
    scores = read_csv(plots / "separation.csv")
    assert [int(row["step"]) for row in scores] == [0, 10, 20, 25]
    assert all(0 <= float(row["knn_acc_2d"]) <= 1 and -1 <= float(row["silhouette"]) <= 1 for row in scores)
    assert [step for step, _ in read_scalars(run_dir, "embeddings/knn_acc_2d")] == [0, 10, 20, 25]


def test_embedding_projector_step0_capture_precedes_any_update(tmp_path):
    pl.seed_everything(0)
    model = LeNetClassifier(lr=1e-3)
    initial = model.model.fc2.weight.detach().clone().numpy()
    _, _, run_dir = fit(tmp_path, EmbeddingProjector(every_n_train_steps=0, num_samples=50, tsne=False),
                        max_steps=3, model=model)
    entries = read_projector(run_dir)
    assert [tag for tag in entries if "trajectories" not in tag] == [
        "fc2_step0000000", "fc2.weight_step0000000", "fc2_step0000003", "fc2.weight_step0000003"]
    np.testing.assert_array_equal(entries["fc2.weight_step0000000"][0], initial)
    assert not np.array_equal(entries["fc2.weight_step0000003"][0], initial)


def test_embedding_projector_does_not_change_training(tmp_path):
    """Same seed, same data: final weights with the callback equal those without it, bit for bit."""
    _, with_callback, _ = fit(tmp_path / "on", EmbeddingProjector(every_n_train_steps=5, num_samples=60), max_steps=15)
    _, without, _ = fit(tmp_path / "off", None, max_steps=15)
    for (name, a), (_, b) in zip(with_callback.state_dict().items(), without.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_embedding_projector_disabled_writes_nothing(tmp_path):
    _, _, run_dir = fit(tmp_path, EmbeddingProjector(enabled=False), max_steps=3)
    assert not (run_dir / "projector_config.pbtxt").exists() and not (run_dir / "embeddings").exists()


def test_embedding_projector_probe_is_stratified_and_fixed(tmp_path):
    fit(tmp_path, EmbeddingProjector(every_n_train_steps=0, num_samples=100, tsne=False), max_steps=1)
    fit(tmp_path / "again", EmbeddingProjector(every_n_train_steps=0, num_samples=100, tsne=False), max_steps=1)
    index = [np.array([int(row[4]) for row in read_projector(folder)[f"fc2_step{step:07d}"][1][1:]])
             for folder in (tmp_path / "run", tmp_path / "again" / "run") for step in (0, 1)]
    for other in index[1:]:
        np.testing.assert_array_equal(index[0], other)
    labels = LeNetDataModule("digits", val_size=0.15, seed=0)
    labels.setup("fit")
    counts = np.bincount(labels.split_tensors("val")[1].numpy()[index[0]], minlength=10)
    assert counts.min() >= 9 and counts.max() <= 11


def test_embedding_projector_large_perplexity_is_lowered_with_a_warning(tmp_path):
    callback = EmbeddingProjector(every_n_train_steps=0, num_samples=20, perplexity=30)
    with pytest.warns(UserWarning, match="perplexity"):
        _, _, run_dir = fit(tmp_path, callback, max_steps=2)
    assert len(read_csv(run_dir / "embeddings" / "separation.csv")) == 2


def test_embedding_projector_nan_embeddings_are_never_written(tmp_path):
    model = LeNetClassifier(lr=1e-3)
    with torch.no_grad():
        model.model.fc2.bias[3] = float("nan")  # every output row gets a NaN in column 3
    callback = EmbeddingProjector(every_n_train_steps=0, num_samples=40, perplexity=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = pl.Trainer(max_steps=0, accelerator="cpu", logger=TensorBoardLogger(tmp_path, name="", version="run"),
                             callbacks=[callback], enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False)
        trainer.validate(model, LeNetDataModule("digits", val_size=0.15, seed=0), verbose=False)
    assert any("non-finite" in str(w.message) or "NaN" in str(w.message) for w in caught)
    entries = read_projector(tmp_path / "run")
    features, _ = entries["fc2_validate_step0000000"]
    assert np.isfinite(features).all()
    assert (tmp_path / "run" / "embeddings" / "tsne_fc2_validate_step0000000.png").is_file()


def test_embedding_projector_state_round_trips_through_checkpoint(tmp_path):
    callback = EmbeddingProjector(every_n_train_steps=5, num_samples=50, perplexity=5)
    trainer, _, run_dir = fit(tmp_path, callback, max_steps=10)
    path = tmp_path / "state.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)["callbacks"][callback.state_key]
    # What the run folder cannot give back, and nothing else: the rows and maps are on disk.
    assert sorted(state) == ["layer", "layout", "layout_step", "pending", "probe_index", "split", "split_size",
                             "version"]
    assert (state["layer"], state["split"], state["split_size"], state["pending"]) == ("fc2", "val", 216, [])
    stored = projector_module.read_embedding(run_dir, "fc2_step0000010")
    np.testing.assert_array_equal(state["probe_index"].numpy(), [int(i) for i in stored.metadata["index"]])
    assert state["layout_step"] == 10
    np.testing.assert_array_equal(state["layout"].numpy(), stored.layouts[0])
    restored = EmbeddingProjector(every_n_train_steps=5, num_samples=50, perplexity=5)
    fit(tmp_path / "resumed", restored, max_steps=0)  # set up on the same data
    restored.load_state_dict(state)
    again = restored.state_dict()
    assert again["layout_step"] == 10 and torch.equal(again["layout"], state["layout"])


@pytest.mark.parametrize(
    ("field", "value"),
    [("version", 7), ("version", "3"), ("probe_index", [1, 2]), ("split_size", None), ("layer", 2),
     ("pending", "none"), ("layout_step", 1.5)],
)
def test_embedding_projector_damaged_checkpoint_state_names_the_field(tmp_path, field, value):
    callback = EmbeddingProjector(every_n_train_steps=0, num_samples=50, tsne=False)
    fit(tmp_path, callback, max_steps=1)
    state = {**callback.state_dict(), field: value}
    with pytest.raises(ValueError, match=f"`{field}`"):
        callback.load_state_dict(state)


def test_embedding_projector_layer_outside_forward_fails_before_training(tmp_path):
    model = LeNetClassifier()
    model.model.unused = torch.nn.Linear(2, 2)  # a submodule that forward never calls
    with pytest.raises(ValueError, match="`layer` 'unused' to run once per forward pass, but it ran 0 times"):
        fit(tmp_path, EmbeddingProjector(layer="unused", num_samples=20, tsne=False), max_steps=5, model=model)
    assert not (tmp_path / "run" / "projector_config.pbtxt").exists()  # failed at setup: nothing written


def test_embedding_projector_probe_set_smaller_than_the_classes_fails_at_setup(tmp_path):
    with pytest.raises(ValueError, match=r"at least the 10 classes.*but got 7; pass `--embeddings.num_samples 10`"):
        fit(tmp_path, EmbeddingProjector(num_samples=7, tsne=False), max_steps=5)
    assert not (tmp_path / "run" / "projector_config.pbtxt").exists()


def test_embedding_projector_captures_other_layers(tmp_path):
    _, _, run_dir = fit(tmp_path, EmbeddingProjector(layer="fc1", every_n_train_steps=0, num_samples=30, tsne=False),
                        max_steps=2)
    assert read_projector(run_dir)["fc1_step0000002"][0].shape == (30, 1024)


def test_embedding_projector_counts_optimizer_steps_with_gradient_accumulation(tmp_path):
    callback = EmbeddingProjector(every_n_train_steps=4, num_samples=30, tsne=False)
    _, _, run_dir = fit(tmp_path, callback, max_steps=10, accumulate_grad_batches=2)
    tags = [tag for tag in read_projector(run_dir) if tag.startswith("fc2_step")]
    assert tags == ["fc2_step0000000", "fc2_step0000004", "fc2_step0000008", "fc2_step0000010"]


def test_embedding_projector_tsne_failure_warns_and_training_goes_on(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated t-SNE failure")

    monkeypatch.setattr("lenet_lightning.tsne.embed_2d", broken)
    with pytest.warns(UserWarning, match="t-SNE of fc2_step0000000 failed.*simulated") as caught:
        trainer, _, run_dir = fit(tmp_path, EmbeddingProjector(every_n_train_steps=5, num_samples=30), max_steps=10)
    assert trainer.global_step == 10
    # The warning keeps the analysis thread's traceback, down to the line that raised.
    message = next(str(w.message) for w in caught if "fc2_step0000000" in str(w.message))
    assert "Traceback (most recent call last)" in message and 'raise RuntimeError("simulated' in message
    rows = read_csv(run_dir / "embeddings" / "separation.csv")
    assert [int(row["step"]) for row in rows] == [0, 5, 10] and all(row["knn_acc_2d"] == "" for row in rows)


def test_embedding_projector_mismatched_checkpoint_probe_starts_a_new_series(tmp_path):
    first = EmbeddingProjector(every_n_train_steps=5, num_samples=50, tsne=False)
    trainer, _, _ = fit(tmp_path, first, max_steps=5)
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    state = torch.load(tmp_path / "a.ckpt", weights_only=True)["callbacks"][first.state_key]
    other = EmbeddingProjector(every_n_train_steps=5, num_samples=80, tsne=False)
    fit(tmp_path / "b", other, max_steps=1)  # set up on the data: 80 of the 216 validation images
    mismatch = r"probe set \(50 of 216 val inputs, layer 'fc2'\) is not this one.*num_samples=80"
    with pytest.warns(UserWarning, match=mismatch):
        other.load_state_dict(state)
    assert len(other.state_dict()["probe_index"]) == 80 and other.state_dict()["layout"] is None


def test_embedding_projector_without_logger_writes_each_run_apart(tmp_path):
    for _ in range(2):
        pl.seed_everything(0)
        trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                             default_root_dir=tmp_path,
                             callbacks=[EmbeddingProjector(every_n_train_steps=0, num_samples=30, tsne=False)])
        trainer.fit(LeNetClassifier(), LeNetDataModule("digits", val_size=0.15))
    runs = sorted(p.name for p in (tmp_path / "embeddings").iterdir())
    assert runs == ["version_0", "version_1"]
    for run in runs:
        assert [tag for tag in read_projector(tmp_path / "embeddings" / run) if "trajectories" not in tag] == [
            "fc2_step0000000", "fc2.weight_step0000000", "fc2_step0000002", "fc2.weight_step0000002"]


def test_embedding_projector_bookmarks_each_capture_and_logs_its_plots_as_images(tmp_path):
    import json

    from google.protobuf import text_format
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    callback = EmbeddingProjector(every_n_train_steps=10, num_samples=100, perplexity=10, plot_format="svg",
                                  plot_dpi=50)
    fit(tmp_path, callback, max_steps=20)
    run_dir = tmp_path / "run"
    config = text_format.Parse((run_dir / "projector_config.pbtxt").read_text(), ProjectorConfig())
    bookmarked = {e.tensor_name: e.bookmarks_path for e in config.embeddings
                  if e.bookmarks_path and "trajectories" not in e.tensor_name}
    assert list(bookmarked) == ["fc2_step0000000", "fc2_step0000010", "fc2_step0000020"]
    layouts = []
    for path in bookmarked.values():
        (state,) = json.loads((run_dir / path).read_text())
        # The offline layout, the one drawn in tsne_<tag>.svg, coloured by the class column.
        layouts.append(np.array([[p["linear-x"], p["linear-y"]] for p in state["projections"]]))
        assert layouts[-1].shape == (100, 2) and np.isfinite(layouts[-1]).all()
        assert state["selectedProjection"] == "custom" and state["selectedColorOptionName"] == "label"
        assert state["dataSetDimensions"] == [100, 10]
    np.testing.assert_array_equal(layouts[-1], callback.state_dict()["layout"].numpy())  # the newest map
    assert not np.array_equal(layouts[0], layouts[1])
    plots = run_dir / "embeddings"
    assert sorted(p.name for p in plots.glob("*.svg")) == [
        "cka_matrix.svg", "class_vectors.svg", "data_map.svg", "dynamics.svg", "hardest.svg", "tsne_evolution.svg",
        "tsne_fc2_step0000000.svg", "tsne_fc2_step0000010.svg", "tsne_fc2_step0000020.svg"]
    assert not list(plots.glob("*.png"))
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    assert [image.step for image in events.Images("embeddings/tsne")] == [0, 10, 20]
    assert [image.step for image in events.Images("embeddings/tsne_evolution")] == [20]
    assert [image.step for image in events.Images("embeddings/class_vectors")] == [20]
    assert events.Images("embeddings/tsne")[-1].encoded_image_string.startswith(b"\x89PNG")
    (animated,) = events.Images("embeddings/tsne_evolution_animated")  # the GIF, which the Images tab plays
    assert animated.step == 20 and animated.encoded_image_string == (
        run_dir / "embeddings" / "tsne_evolution.gif").read_bytes()


# --- any model, any data --------------------------------------------------------------------------


class Colours(torch.utils.data.Dataset):
    """RGB images whose class is their dominant colour, with torchvision-style ``classes``."""

    classes = ("red", "green", "blue")

    def __init__(self, n, seed):
        generator = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % 3
        self.images = torch.rand(n, 3, 12, 12, generator=generator) * 0.5
        self.images[torch.arange(n), self.labels] += 0.5

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


class SmallNet(pl.LightningModule):
    """Not LeNet: no `model` attribute, its own layer names, optional class logits."""

    def __init__(self, in_shape=(3, 12, 12), outputs=3):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(in_shape)), 16),
                                        torch.nn.ReLU())
        self.head = torch.nn.Linear(16, outputs)

    def forward(self, x):
        return self.head(self.body(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        out = self(x)
        if out.shape[1] == 1:
            return torch.nn.functional.mse_loss(out[:, 0], y.float())
        return torch.nn.functional.cross_entropy(out, y)

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit_plain(tmp_path, model, train, val, callback, max_steps=6):
    pl.seed_everything(0)
    trainer = pl.Trainer(max_steps=max_steps, accelerator="cpu", callbacks=[callback], enable_checkpointing=False,
                         logger=TensorBoardLogger(tmp_path, name="", version="run"), enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=1)
    loader = torch.utils.data.DataLoader
    trainer.fit(model, train_dataloaders=loader(train, batch_size=10), val_dataloaders=loader(val, batch_size=10))
    return trainer, tmp_path / "run"


def test_embedding_projector_any_model_with_dataloaders_and_rgb_images(tmp_path):
    callback = EmbeddingProjector(layer="body", class_layer="head", every_n_train_steps=3, num_samples=30,
                                  perplexity=5)
    _, run_dir = fit_plain(tmp_path, SmallNet(), Colours(60, seed=0), Colours(45, seed=1), callback)
    entries = read_projector(run_dir)
    assert [tag for tag in entries if tag.startswith("body_step")] == ["body_step0000000", "body_step0000003",
                                                                   "body_step0000006"]
    features, rows = entries["body_step0000006"]
    assert features.shape == (30, 16)
    assert rows[0] == CAPTURE_COLUMNS
    assert {row[0] for row in rows[1:]} == {"red", "green", "blue"}  # names from the dataset's `classes`
    weight, names = entries["head.weight_step0000006"]
    assert weight.shape == (3, 16) and [row[0] for row in names] == ["red", "green", "blue"]
    with Image.open(run_dir / "projector" / "sprite_body.png") as sprite:
        assert sprite.mode == "RGB"
    plots = run_dir / "embeddings_body"
    assert [int(row["step"]) for row in read_csv(plots / "separation.csv")] == [0, 3, 6]
    assert (plots / "tsne_evolution.png").is_file() and (plots / "class_vectors.png").is_file()
    assert [step for step, _ in read_scalars(run_dir, "embeddings_body/knn_acc_2d")] == [0, 3, 6]


def test_embedding_projector_tabular_inputs_without_class_logits(tmp_path):
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(80, 5, generator=generator), torch.arange(80) % 2
    data = torch.utils.data.TensorDataset(x + y[:, None].float(), y)
    callback = EmbeddingProjector(layer="body", every_n_train_steps=0, num_samples=20, tsne=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, run_dir = fit_plain(tmp_path, SmallNet(in_shape=(5,), outputs=1), data, data, callback, max_steps=2)
    features, rows = read_projector(run_dir)["body_step0000002"]
    assert features.shape == (20, 16)
    assert rows[0] == ["label", "index"] and {row[0] for row in rows[1:]} == {"0", "1"}  # label values as names
    assert not list((run_dir / "projector").glob("sprite*"))  # not images: no sprite, no error
    assert not [w for w in caught if "EmbeddingProjector" in str(w.message)]
    assert "probe_acc" not in [key for key, value in read_csv(run_dir / "embeddings_body" / "separation.csv")[0].items()
                               if value]


def test_embedding_projector_without_probe_data_says_what_to_pass(tmp_path):
    data = torch.utils.data.TensorDataset(torch.randn(20, 3, 12, 12), torch.arange(20) % 3)
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[EmbeddingProjector(layer="body", num_samples=10, tsne=False)])
    with pytest.raises(ValueError, match=r"Expected val data.*`EmbeddingProjector\(dataset=...\)`"):
        trainer.fit(SmallNet(), train_dataloaders=torch.utils.data.DataLoader(data, batch_size=5))
    callback = EmbeddingProjector(layer="body", every_n_train_steps=0, num_samples=10, tsne=False, dataset=data)
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[callback])
    trainer.fit(SmallNet(), train_dataloaders=torch.utils.data.DataLoader(data, batch_size=5))
    assert read_projector(tmp_path / "embeddings" / "version_0")["body_step0000001"][0].shape == (10, 16)


# --- failures cost a capture, never the run --------------------------------------------------------


def test_embedding_projector_failed_write_warns_skips_the_capture_and_training_goes_on(tmp_path, monkeypatch):
    real = projector_module.write_embedding

    def disk_full_at_step_5(run_dir, tag, *args, **kwargs):
        if "step0000005" in tag:
            raise OSError(28, "No space left on device")
        return real(run_dir, tag, *args, **kwargs)

    monkeypatch.setattr(projector_module, "write_embedding", disk_full_at_step_5)
    with pytest.warns(UserWarning, match=r"could not write the projector entry fc2_step0000005 .*No space left"):
        trainer, _, run_dir = fit(tmp_path, EmbeddingProjector(every_n_train_steps=5, num_samples=30, tsne=False),
                                  max_steps=10)
    assert trainer.global_step == 10
    assert [tag for tag in read_projector(run_dir) if tag.startswith("fc2_step")] == ["fc2_step0000000",
                                                                                      "fc2_step0000010"]


def test_embedding_projector_nan_weights_finish_the_fit(tmp_path):
    model = LeNetClassifier(lr=1e-3)
    with torch.no_grad():
        model.model.fc2.weight.fill_(float("nan"))  # diverged: every logit, loss and class vector is NaN
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, _, run_dir = fit(tmp_path, EmbeddingProjector(every_n_train_steps=0, num_samples=30, perplexity=5),
                                  max_steps=2, model=model)
    assert trainer.state.finished and trainer.global_step == 2
    assert any("end-of-run figure was skipped" in str(w.message) and "finite" in str(w.message) for w in caught)
    assert [int(row["step"]) for row in read_csv(run_dir / "embeddings" / "separation.csv")] == [0, 2]


# --- the checkpoint holds what is still queued -------------------------------------------------------


def test_embedding_projector_state_dict_saves_queued_captures_which_a_resume_analyses(tmp_path, held_tsne):
    release = held_tsne
    path = tmp_path / "mid.ckpt"

    class SaveAtStep5(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 5:
                trainer.save_checkpoint(path)  # every analysis is still held
                release.set()

    first = EmbeddingProjector(every_n_train_steps=5, num_samples=40, perplexity=5)
    pl.seed_everything(0)
    trainer = pl.Trainer(max_steps=10, accelerator="cpu", logger=TensorBoardLogger(tmp_path, name="", version="run"),
                         callbacks=[first, SaveAtStep5()], enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0)
    trainer.fit(LeNetClassifier(lr=1e-3), LeNetDataModule("digits", batch_size=32, val_size=0.15, seed=0))
    state = torch.load(path, weights_only=True)["callbacks"][first.state_key]
    # Saving waited for nothing and recorded nothing: the two captures went into the checkpoint as they were.
    assert state["layout"] is None
    assert [(p["step"], p["stage"], tuple(p["features"].shape)) for p in state["pending"]] == [
        (0, "fit", (40, 10)), (5, "fit", (40, 10))]

    run_dir = tmp_path / "resumed"  # the t-SNE was released at step 5: from here on it runs as it is
    pl.seed_everything(0)
    resumed = EmbeddingProjector(every_n_train_steps=5, num_samples=40, perplexity=5)
    trainer = pl.Trainer(max_steps=10, accelerator="cpu", logger=TensorBoardLogger(run_dir, name="", version="run"),
                         callbacks=[resumed], enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0)
    trainer.fit(LeNetClassifier(lr=1e-3), LeNetDataModule("digits", batch_size=32, val_size=0.15, seed=0),
                ckpt_path=path)
    rows = read_csv(run_dir / "run" / "embeddings" / "separation.csv")
    assert [int(row["step"]) for row in rows] == [0, 5, 10] and all(row["knn_acc_2d"] for row in rows)
    for step in (0, 5, 10):
        assert (run_dir / "run" / "embeddings" / f"tsne_fc2_step{step:07d}.png").is_file()


def test_embedding_projector_checkpoint_of_another_layer_starts_a_new_series_without_mixing(tmp_path):
    first = EmbeddingProjector(layer="fc1", every_n_train_steps=5, num_samples=30, tsne=False)
    trainer, _, run_dir = fit(tmp_path, first, max_steps=5)
    trainer.save_checkpoint(tmp_path / "fc1.ckpt")
    second = EmbeddingProjector(every_n_train_steps=5, num_samples=30, tsne=False)
    pl.seed_everything(0)
    trainer = pl.Trainer(max_steps=10, accelerator="cpu", logger=TensorBoardLogger(tmp_path, name="", version="run"),
                         callbacks=[second], enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0)
    lightning_note = r"Please add the following callbacks: \[\"EmbeddingProjector\{'layer': 'fc1'\}"
    with pytest.warns(UserWarning, match=lightning_note):
        trainer.fit(LeNetClassifier(lr=1e-3), LeNetDataModule("digits", batch_size=32, val_size=0.15, seed=0),
                    ckpt_path=tmp_path / "fc1.ckpt")
    assert [row["tag"] for row in read_csv(run_dir / "embeddings" / "separation.csv")] == [
        "fc2_step0000005", "fc2_step0000010"]
    assert [row["tag"] for row in read_csv(run_dir / "embeddings_fc1" / "separation.csv")] == [
        "fc1_step0000000", "fc1_step0000005"]
    assert [step for step, _ in read_scalars(run_dir, "embeddings/silhouette")] == [5, 10]
    assert [step for step, _ in read_scalars(run_dir, "embeddings_fc1/silhouette")] == [0, 5]


# --- captures faster than their maps -----------------------------------------------------------------


@pytest.fixture
def held_tsne(monkeypatch):
    """t-SNE that waits for the returned Event: captures come faster than their maps, deterministically."""
    release = threading.Event()
    real = analysis_module.tsne.embed_2d

    def held(features, **kwargs):
        release.wait()
        return real(features, **kwargs)

    monkeypatch.setattr(analysis_module.tsne, "embed_2d", held)
    return release


class ReleaseAtStep(pl.Callback):
    """Sets ``event`` at the end of ``step`` (listed after the projector: its capture is queued first)."""

    def __init__(self, event, step, then=None):
        self.event, self.step, self.then = event, step, then

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            if self.then is not None:
                self.then(trainer)
            self.event.set()


def test_embedding_projector_captures_faster_than_their_maps_all_end_complete_and_in_step_order(
        tmp_path, monkeypatch, held_tsne):
    from lenet_lightning import embeddings as embeddings_module
    from lenet_lightning import plots as plots_module

    told, titles = [], []
    real_tell, real_evolution = embeddings_module.tell, plots_module.plot_evolution
    monkeypatch.setattr(embeddings_module, "tell", lambda trainer, message: (told.append(message),
                                                                              real_tell(trainer, message)))
    monkeypatch.setattr(plots_module, "plot_evolution",
                        lambda layouts, labels, names, panel_titles: (titles.extend(panel_titles),
                                                                      real_evolution(layouts, labels, names,
                                                                                     panel_titles))[1])
    callback = EmbeddingProjector(every_n_train_steps=1, num_samples=30, perplexity=5)
    # The first map is held until step 5: by then 6 captures came, 1 is being mapped, 2 wait, 3 are gaps.
    _, _, run_dir = fit(tmp_path, callback, max_steps=8, limit_val_batches=0,
                        callbacks_after=[ReleaseAtStep(held_tsne, 5)])
    steps = list(range(9))
    gaps = [message for message in told if "faster than their t-SNE maps" in message]
    assert len(gaps) == 1 and "(1 so far)" in gaps[0]  # said once, at the first gap
    # Every capture: its projector entry, one row with its 2-D scores, its plot, bookmark and evolution panel.
    entries = read_projector(run_dir)
    assert [tag for tag in entries if tag.startswith("fc2_step")] == [f"fc2_step{s:07d}" for s in steps]
    rows = read_csv(run_dir / "embeddings" / "separation.csv")
    assert [int(row["step"]) for row in rows] == steps
    assert all(row["silhouette"] and row["knn_acc_2d"] and row["trustworthiness"] for row in rows)
    for step in steps:
        assert (run_dir / "embeddings" / f"tsne_fc2_step{step:07d}.png").is_file()
    assert all(projector_module.read_embedding(run_dir, f"fc2_step{step:07d}").layouts for step in steps)
    assert titles == [f"step {step}" for step in steps]
    assert (run_dir / "embeddings" / "tsne_evolution.png").is_file()
    # TensorBoard got each scalar and map once per capture, in step order (its loader drops the
    # points after a step that comes back).
    for tag in ("silhouette", "probe_acc", "knn_acc_2d", "trustworthiness"):
        assert [step for step, _ in read_scalars(run_dir, f"embeddings/{tag}")] == steps, tag
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    assert [image.step for image in events.Images("embeddings/tsne")] == steps


def test_embedding_projector_checkpoint_with_gaps_lists_every_unmapped_capture_and_a_resume_maps_them(
        tmp_path, monkeypatch, held_tsne):
    path = tmp_path / "mid.ckpt"
    first = EmbeddingProjector(every_n_train_steps=1, num_samples=30, perplexity=5)
    scores = tmp_path / "first" / "run" / "embeddings" / "separation.csv"
    early = []  # the CSV as it was when the checkpoint was saved
    fit(tmp_path / "first", first, max_steps=6, limit_val_batches=0,
        callbacks_after=[ReleaseAtStep(held_tsne, 5, then=lambda trainer: (
            trainer.save_checkpoint(path), early.extend(read_csv(scores) if scores.is_file() else [])))])
    state = torch.load(path, weights_only=True)["callbacks"][first.state_key]
    # Saved while every map was held: all six captures are pending, in step order; only gaps
    # (1, 2 and 3) can have a row yet, with their silhouette and no 2-D score.
    assert [p["step"] for p in state["pending"]] == [0, 1, 2, 3, 4, 5] and state["layout"] is None
    # Only gaps (1, 2 and 3) can have a row yet, on disk, with their silhouette and no 2-D score.
    assert {int(row["step"]) for row in early} <= {1, 2, 3}
    assert all(row["silhouette"] and not row["knn_acc_2d"] for row in early)

    held_tsne.set()  # from now on the real t-SNE
    resumed = EmbeddingProjector(every_n_train_steps=1, num_samples=30, perplexity=5)
    _, _, run_dir = fit(tmp_path / "resumed", resumed, max_steps=8, limit_val_batches=0, ckpt_path=path)
    rows = read_csv(run_dir / "embeddings" / "separation.csv")
    assert [int(row["step"]) for row in rows] == list(range(9)) and all(row["knn_acc_2d"] for row in rows)
    assert [step for step, _ in read_scalars(run_dir, "embeddings/knn_acc_2d")] == list(range(9))
    # A new run folder: each capture's silhouette once, in step order.
    assert [step for step, _ in read_scalars(run_dir, "embeddings/silhouette")] == list(range(9))
