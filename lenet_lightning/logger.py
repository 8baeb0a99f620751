"""A TensorBoard logger whose ``version_N`` folder belongs to one run, however many start at once."""

from __future__ import annotations

import os

from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from typing_extensions import override


def claim_version(root: str | os.PathLike[str], first: int = 0) -> int:
    """Creates ``root/version_N`` for the smallest ``N >= first`` that does not exist yet, and returns ``N``.

    Creating the folder is the claim: ``mkdir`` either makes a new folder or fails, so two processes
    never get the same ``N``. ``root`` is created if missing.

    Raises:
        ValueError: If ``first`` is not a non-negative int.

    Example:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> claim_version(root), claim_version(root), claim_version(root, first=5)
        (0, 1, 5)
    """
    if not isinstance(first, int) or isinstance(first, bool) or first < 0:
        raise ValueError(f"Expected `first` to be a non-negative int, but got {first!r}.")
    os.makedirs(root, exist_ok=True)
    version = first
    while True:
        try:
            os.mkdir(os.path.join(root, f"version_{version}"))
        except FileExistsError:
            version += 1
        else:
            return version


class ClaimingTensorBoardLogger(TensorBoardLogger):
    """``TensorBoardLogger`` that claims its ``version_N`` folder by creating it (:func:`claim_version`).

    Lightning's logger picks one more than the highest ``version_N`` it lists and creates the folder
    later, so two fits started at once in one root can both pick ``version_0`` and write into the same
    folder. This one creates the folder when it picks the number, and takes the next number if another
    run got there first. An explicit ``version`` (to resume in place) is used as given.

    Only global rank 0 claims; on other ranks the version is Lightning's guess, which nothing uses:
    Lightning broadcasts rank 0's folder (``trainer.log_dir``, ``ModelCheckpoint``). Remote roots
    (``s3://``...) have no atomic ``mkdir`` and keep Lightning's behaviour.

    Example:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> first, second = ClaimingTensorBoardLogger(root), ClaimingTensorBoardLogger(root)
        >>> first.version, second.version  # Lightning's TensorBoardLogger says (0, 0) here
        (0, 1)
    """

    claimed = False
    """Whether this logger created its run folder (it made a new version, not one given to resume)."""

    @override
    def _get_next_version(self) -> int:
        # The hook `version` calls when none was given; Lightning's lists the root, as a starting point.
        listed = super()._get_next_version()
        # `log_dir` expands `~` and `$VARS` in the path it builds; the claim must be in that same place.
        fs, root = url_to_fs(os.path.expanduser(os.path.expandvars(self.root_dir)))
        if rank_zero_only.rank != 0 or not isinstance(fs, LocalFileSystem):
            return listed
        self.claimed = True
        return claim_version(root, first=listed)
