"""Checkpoints replaced in one step in their own folder, so a kill or a full disk never costs the previous one."""

from __future__ import annotations

import io
from typing import Any

import torch
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

from lenet_lightning.atomic import write_atomically


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves a local checkpoint into a temporary file beside it, flushed, fsynced and renamed over it.

    Lightning's ``TorchCheckpointIO`` saves through an fsspec transaction, whose temporary file lies
    in the system's temp folder and is *copied* over the checkpoint when the two are on different
    filesystems (a data disk, a network home, a tmpfs): a kill during the copy leaves a truncated
    checkpoint, a full disk one that does not load. Here the temporary file is in the checkpoint's
    own folder (see :func:`~lenet_lightning.atomic.write_atomically`), so the previous checkpoint
    stays whole until the new one is complete. Remote paths (``s3://``, ``memory://``, ...) take
    Lightning's own path, unchanged; loading and removing are Lightning's.

    Pass it as a plugin: ``Trainer(plugins=[AtomicCheckpointIO()])``; the CLI does by default.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "checkpoints", "last.ckpt")
        >>> checkpoint_io = AtomicCheckpointIO()
        >>> checkpoint_io.save_checkpoint({"global_step": 3}, path)
        >>> checkpoint_io.load_checkpoint(path)["global_step"]
        3
    """

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        """Writes ``checkpoint`` to ``path`` with ``torch.save``, atomically when ``path`` is local.

        Raises:
            TypeError: If ``storage_options`` is given (as Lightning's ``TorchCheckpointIO``).
            OSError: If the file cannot be written, e.g. ``[Errno 28] No space left on device:
                '<folder>/best.ckpt'``: ``filename`` is the checkpoint's path, the earlier checkpoint
                there is untouched and no temporary file remains.
        """
        fs, local_path = url_to_fs(str(path))
        if storage_options is not None or not isinstance(fs, LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        # Serialised in memory first, as Lightning does: torch.save straight into a file turns a full
        # disk into a RuntimeError ("unexpected pos ...") that no longer says why.
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_atomically(local_path, lambda stream: stream.write(buffer.getbuffer()))
