"""Replace a file in one step, so readers (TensorBoard, a browser, a resumed run) never see half of it."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO

TEMPORARY_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")
"""The names of :func:`write_atomically`'s temporary files (use ``fullmatch``)."""


def write_atomically(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> None:
    """Calls ``write`` on a new temporary file next to ``path``, then renames it over ``path``.

    The temporary file is opened with ``open``, so it gets the usual umask permissions (``mkstemp``'s
    0600 would hide it from a TensorBoard running as another user), and is removed if ``write`` fails.
    Being in ``path``'s own folder, it is on the same filesystem, so the rename is atomic there too (a
    temporary file elsewhere would have to be copied over ``path``). A process killed while writing
    leaves it behind as ``.<name>.<8 hex digits>.tmp``; :data:`TEMPORARY_NAME` matches those names.

    Raises:
        ValueError: If ``path`` exists and is not a regular file (``/dev/null``, a folder):
            replacing it would destroy it.
        OSError: If the file cannot be written (a full disk, no permission): ``path`` is left as it
            was, no temporary file remains, and the error's ``filename`` is ``path``, so its message
            names the folder, e.g. ``[Errno 28] No space left on device: 'runs/version_0/x.ckpt'``.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "hello.txt"
        >>> write_atomically(target, lambda f: f.write(b"hi"))
        >>> target.read_text()
        'hi'
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise ValueError(f"Expected `path` to be a regular file or a new path, but got {str(path)!r}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno is None:
            raise
        # write() and fsync() name no file, open() names the temporary one, which no longer exists:
        # name the target instead. OSError(errno, ...) picks the subclass (PermissionError, ...).
        raise OSError(err.errno, err.strerror, str(path)) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
