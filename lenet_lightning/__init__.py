"""Train the notebook's LeNet with PyTorch Lightning and watch its ``fc2`` embeddings learn."""

from lenet_lightning.data import LeNetDataModule
from lenet_lightning.embeddings import EmbeddingProjector
from lenet_lightning.model import LeNet, LeNetClassifier

__all__ = ["EmbeddingProjector", "LeNet", "LeNetClassifier", "LeNetDataModule"]
__version__ = "0.1.0"
