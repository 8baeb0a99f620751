"""Replace a file in one step, so readers (TensorBoard, a browser, a resumed run) never see half of it."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO


def write_atomically(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> None:
    """Calls ``write`` on a new temporary file next to ``path``, then renames it over ``path``.

    The temporary file is opened with ``open``, so it gets the usual umask permissions (``mkstemp``'s
    0600 would hide it from a TensorBoard running as another user), and is removed if ``write`` fails.

    Raises:
        ValueError: If ``path`` exists and is not a regular file (``/dev/null``, a folder):
            replacing it would destroy it.

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
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
