import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from lenet_lightning.data import LeNetDataModule
from lenet_lightning.model import LeNet, LeNetClassifier, normalize_images


def test_lenet_parameter_count_matches_notebook():
    assert sum(p.numel() for p in LeNet().parameters()) == 3_274_634


def test_lenet_layer_shapes_match_notebook():
    model = LeNet()
    assert tuple(model.conv1.weight.shape) == (32, 1, 5, 5)
    assert tuple(model.conv2.weight.shape) == (64, 32, 5, 5)
    assert tuple(model.fc1.weight.shape) == (1024, 7 * 7 * 64)
    assert tuple(model.fc2.weight.shape) == (10, 1024)
    assert model(torch.zeros(4, 1, 28, 28)).shape == (4, 10)


def test_lenet_notebook_init_is_truncated_normal_with_bias_point_one():
    torch.manual_seed(0)
    model = LeNet(init="notebook")
    weight = model.fc1.weight
    assert weight.abs().max() <= 0.2  # truncated at two standard deviations
    assert 0.07 < weight.std() < 0.1  # a normal(0, 0.1) truncated at 2 sigma has std ~0.088
    assert torch.all(model.fc2.bias == 0.1)


def test_lenet_dropout_only_in_training():
    torch.manual_seed(0)
    model = LeNet()
    x = torch.randn(8, 1, 28, 28)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": 0.0}, "`lr`"),
        ({"lr": float("nan")}, "`lr`"),
        ({"weight_decay": -1.0}, "`weight_decay`"),
        ({"label_smoothing": 1.0}, "`label_smoothing`"),
        ({"dropout": 1.0}, "`dropout`"),
        ({"init": "xavier"}, "`init`"),
        ({"lr_schedule": "step"}, "`lr_schedule`"),
        ({"num_classes": 1}, "`num_classes`"),
    ],
)
def test_classifier_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LeNetClassifier(**kwargs)


def test_classifier_predict_step_returns_classes_and_probabilities():
    out = LeNetClassifier().predict_step((torch.zeros(3, 1, 28, 28), torch.zeros(3)), 0)
    assert out["classes"].shape == (3,)
    assert out["probabilities"].shape == (3, 10)
    torch.testing.assert_close(out["probabilities"].sum(1), torch.ones(3))


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_classifier_lr_schedules_step_per_batch(tmp_path, schedule):
    dm = LeNetDataModule("digits", batch_size=64, val_size=0.1)
    trainer = pl.Trainer(max_steps=3, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, default_root_dir=tmp_path, accelerator="cpu")
    model = LeNetClassifier(lr=1e-3, lr_schedule=schedule)
    trainer.fit(model, dm)
    scheduler = trainer.lr_scheduler_configs[0]
    assert scheduler.interval == "step"
    assert scheduler.scheduler.last_epoch == 3


def test_classifier_learns_digits(tmp_path):
    """A short real run: the loss falls and test accuracy is far above chance (10%)."""
    pl.seed_everything(0)
    dm = LeNetDataModule("digits", batch_size=32, val_size=0.15)
    model = LeNetClassifier(lr=1e-3)
    trainer = pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         default_root_dir=tmp_path, accelerator="cpu", log_every_n_steps=1)
    dm.setup("fit")
    images, labels = dm.split_tensors("train")  # uint8: the model standardises its inputs itself
    with torch.no_grad():
        model.input_mean.fill_(dm.mean), model.input_std.fill_(dm.std)
    before = torch.nn.functional.cross_entropy(model.eval()(images), labels).item()
    trainer.fit(model, dm)
    after = torch.nn.functional.cross_entropy(model.eval()(images), labels).item()
    assert after < before / 3
    assert {"train/loss_step", "train/loss_epoch", "train/acc", "val/loss", "val/acc"} <= set(trainer.callback_metrics)
    metrics = trainer.test(model, dm, verbose=False)[0]
    assert metrics["test/acc"] > 0.8


def test_classifier_checkpoint_predicts_without_the_datamodule(tmp_path):
    """The input statistics travel in the checkpoint: a model loaded from it alone predicts as trained."""
    pl.seed_everything(0)
    dm = LeNetDataModule("digits", batch_size=32, val_size=0.15)
    model = LeNetClassifier(lr=1e-3)
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(model, dm)
    assert (model.input_mean.item(), model.input_std.item()) == pytest.approx(dm.pixel_stats())
    assert 0.05 < dm.mean < 0.5 and dm.std > 0.1  # not the identity the buffers start from
    trainer.save_checkpoint(tmp_path / "model.ckpt")

    loaded = LeNetClassifier.load_from_checkpoint(tmp_path / "model.ckpt", map_location="cpu").eval()
    images, labels = dm.split_tensors("test")  # raw uint8, as the data holds them
    with torch.no_grad():
        predicted = loaded.predict_step((images, labels), 0)["classes"]
        np.testing.assert_array_equal(predicted.numpy(), model.eval()(images).argmax(1).numpy())
    assert (predicted == labels).float().mean() > 0.8
    # Floats in [0, 1] are the same images.
    torch.testing.assert_close(loaded(images.float() / 255), loaded(images))


def test_normalize_images_scales_uint8_and_takes_floats_as_unit_range():
    images = torch.tensor([[0, 51, 255]], dtype=torch.uint8)
    torch.testing.assert_close(normalize_images(images, 0.2, 0.5), torch.tensor([[-0.4, 0.0, 1.6]]))
    torch.testing.assert_close(normalize_images(images.float() / 255, 0.2, 0.5), torch.tensor([[-0.4, 0.0, 1.6]]))
