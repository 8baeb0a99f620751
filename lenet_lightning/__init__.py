"""Train the notebook's LeNet with PyTorch Lightning and watch its ``fc2`` embeddings learn.

The public classes are imported lazily, so that importing one light module (``plots``, ``tsne``,
``projector``) does not pull in Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["EmbeddingProjector", "LeNet", "LeNetClassifier", "LeNetDataModule"]
__version__ = "0.1.0"

_HOMES = {
    "EmbeddingProjector": "lenet_lightning.embeddings",
    "LeNet": "lenet_lightning.model",
    "LeNetClassifier": "lenet_lightning.model",
    "LeNetDataModule": "lenet_lightning.data",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'lenet_lightning' has no attribute {name!r}")
