"""The capture's pure parts: probe sets from any data, the forward pass, metadata, sprite images."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from lenet_lightning.capture import (
    ProbeSet,
    class_vectors,
    find_layer,
    forward_layer,
    probe_from_dataset,
    probe_from_tensors,
    probe_metadata,
    sprite_images,
)
from lenet_lightning.model import LeNetClassifier
from lenet_lightning.projector import write_sprite


class Pets(Dataset):
    """Map-style, with torchvision's ``classes`` and no ``targets``: labels are read item by item."""

    classes = ("cat", "dog", "fish")

    def __init__(self, n=30):
        self.labels = [i % 3 for i in range(n)]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return torch.full((3, 8, 8), float(i)), torch.tensor(self.labels[i])


def test_probe_from_dataset_reads_classes_and_labels_item_by_item():
    probe = probe_from_dataset(Pets(30), 12, seed=0)
    assert probe.class_names == ("cat", "dog", "fish") and probe.split_size == 30
    assert np.bincount(probe.labels).tolist() == [4, 4, 4]
    assert probe.inputs.shape == (12, 3, 8, 8)
    # Each input is the item at its index, with its label.
    for row, index in enumerate(probe.index):
        assert probe.inputs[row, 0, 0, 0].item() == index and probe.labels[row] == index % 3
    np.testing.assert_array_equal(probe_from_dataset(Pets(30), 12, seed=0).index, probe.index)  # seeded


def test_probe_from_dataset_names_string_targets_by_value():
    dataset = [(torch.zeros(2), name) for name in ["setosa", "virginica"] * 5]
    probe = probe_from_dataset(dataset, 4, seed=0)
    assert probe.class_names == ("setosa", "virginica") and sorted(probe.labels.tolist()) == [0, 0, 1, 1]


@pytest.mark.parametrize("dataset", [iter([(1, 2)]), [torch.zeros(3)]])
def test_probe_from_dataset_rejects_what_is_no_map_style_dataset_of_pairs(dataset):
    with pytest.raises(TypeError, match="Expected"):
        probe_from_dataset(dataset, 2, seed=0)


def test_forward_layer_returns_flat_features_restores_modes_and_draws_no_random_numbers():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Dropout(0.5), nn.Flatten(), nn.Linear(2 * 6 * 6, 4)).train()
    inputs = torch.randn(7, 1, 8, 8)
    state = torch.random.get_rng_state()
    features, outputs = forward_layer(net, "0", inputs, chunk=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert features.shape == (7, 2 * 6 * 6) and features.dtype == np.float32 and outputs.shape == (7, 4)
    assert net.training and all(module.training for module in net.modules())
    expected = net.eval()(inputs)
    torch.testing.assert_close(outputs, expected.detach())


def test_forward_layer_finds_layers_in_a_lightning_modules_model():
    system = LeNetClassifier()
    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    features, logits = forward_layer(system, "fc1", images)
    assert features.shape == (5, 1024) and logits.shape == (5, 10)
    assert find_layer(system, "fc2") is system.model.fc2 and find_layer(system, "model.fc2") is system.model.fc2


def test_forward_layer_rejects_a_layer_outside_the_forward_path():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(4, 2), nn.Linear(2, 2)  # forward never calls `unused`

        def forward(self, x):
            return self.used(x)

    net = Net()
    with pytest.raises(ValueError, match="`layer` 'unused' to run once per forward pass, but it ran 0 times"):
        forward_layer(net, "unused", torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"`layer`.*'missing'.*choose one of: used, unused"):
        forward_layer(net, "missing", torch.zeros(3, 4))


def test_probe_metadata_predicts_only_with_one_logit_per_class():
    probe = ProbeSet(torch.zeros(3, 2), np.array([0, 1, 2]), ("a", "b", "c"), np.array([7, 8, 9]), 10)
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0]])
    columns, accuracy = probe_metadata(probe, logits)
    assert list(columns) == ["label", "predicted", "correct", "confidence", "index"]
    assert columns["correct"] == ["yes", "yes", "no"] and accuracy == pytest.approx(2 / 3)
    columns, accuracy = probe_metadata(probe, torch.zeros(3, 1))  # a regression head, say
    assert list(columns) == ["label", "index"] and accuracy is None


def test_sprite_images_of_any_channel_count_and_none_for_tabular_inputs(tmp_path):
    rgb = torch.zeros(4, 3, 6, 6)
    rgb[:, 0] = 1.0  # red
    images = sprite_images(rgb)
    assert images.shape == (4, 6, 6, 3) and images.dtype == np.uint8
    assert (images[..., 0] == 255).all() and not images[..., 1:].any()
    assert sprite_images(torch.randint(0, 256, (4, 1, 6, 6), dtype=torch.uint8)).shape == (4, 6, 6)
    assert sprite_images(torch.rand(4, 5, 6, 6)).shape == (4, 6, 6)
    assert sprite_images(torch.rand(4, 13)) is None
    # An RGB sprite: each thumbnail is its image.
    assert write_sprite(images, tmp_path / "sprite.png") == (6, 6)
    with Image.open(tmp_path / "sprite.png") as sprite:
        assert sprite.mode == "RGB" and sprite.size == (12, 12)
        assert sprite.getpixel((0, 0)) == (255, 0, 0)


def test_sprite_of_large_rgb_images_fits_tensorboards_limit(tmp_path):
    images = np.zeros((400, 64, 64, 3), np.uint8)
    thumb = write_sprite(images, tmp_path / "sprite.png", max_size=1000)
    assert thumb == (50, 50)  # 20 columns of at most 50 px
    with Image.open(tmp_path / "sprite.png") as sprite:
        assert max(sprite.size) <= 1000


def test_class_vectors_only_from_a_linear_layer_with_one_row_per_class():
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    assert class_vectors(net, "0", num_classes=3).shape == (3, 4)
    assert class_vectors(net, "0", num_classes=5) is None
    assert class_vectors(net, "1", num_classes=3) is None
    assert class_vectors(net, "missing", num_classes=3) is None


def test_probe_from_tensors_is_stratified_and_keeps_the_index():
    labels = torch.arange(100) % 4
    probe = probe_from_tensors(torch.arange(100).view(100, 1), labels, list("abcd"), 20, seed=3)
    assert np.bincount(probe.labels).tolist() == [5, 5, 5, 5]
    np.testing.assert_array_equal(probe.inputs[:, 0].numpy(), probe.index)
