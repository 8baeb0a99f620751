"""Let a running TensorBoard's Projector list captures written after it started.

Without TensorFlow, TensorBoard's projector plugin re-reads the ``projector_config.pbtxt`` files
only when its list of runs changes (``ProjectorPlugin._update_configs`` compares the run paths and
looks for TensorFlow checkpoints, which a PyTorch run never writes). A server started before a fit
therefore shows the run's first capture until it is restarted.

This module is installed as a ``tensorboard_plugins`` entry point (see ``pyproject.toml``), so the
stock ``tensorboard --logdir lightning_logs`` loads it. Its loader adds no plugin: it wraps
``_update_configs`` so that the projector also re-reads every config when the stat signature of a
run's config file changes (it is rewritten with ``os.replace`` after each capture). A new capture
is then listed on the next request, i.e. after a page refresh.

It touches private TensorBoard members, so :func:`install` checks them first; when they are not
what it expects it changes nothing, logs why, and the projector works as before (restart
TensorBoard to see new captures).
"""

from __future__ import annotations

import functools
import logging
import os
import types
from collections.abc import Callable, Iterable
from typing import Any

from tensorboard.plugins import base_plugin

logger = logging.getLogger(__name__)

Signature = tuple[tuple[str, tuple[int, int, int] | None], ...]
_MARK = "__lenet_lightning_live_reload__"  # set on the wrapper, so that installing twice wraps once
_SIGNATURE_ATTR = "_lenet_lightning_config_signature"
# What the wrapper relies on, by name: the run paths it resets, and that the original reads the
# configs again when they changed.
_INIT_NAMES = frozenset({"_run_paths", "_configs", "logdir"})
_UPDATE_NAMES = frozenset({"_run_paths", "_read_latest_config_files"})


def config_signature(paths: Iterable[str]) -> Signature:
    """Returns ``(path, (mtime_ns, size, inode) or None)`` for each path, sorted by path.

    A config rewritten with ``os.replace`` gets a new inode, so the signature changes even when two
    writes fall in the same mtime tick and have the same size. A path that cannot be stat'ed (absent,
    or on a remote file system) has ``None``.

    Args:
        paths: Config file paths.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, "projector_config.pbtxt")
        ...     before = config_signature([path])
        ...     open(path, "w").close()
        ...     before == config_signature([path]), before[0][1]
        (False, None)
    """
    signature = []
    for path in sorted(set(paths)):
        try:
            stat = os.stat(path)
        except (OSError, ValueError):  # absent, unreadable, or not a local path (gs://...)
            signature.append((path, None))
        else:
            signature.append((path, (stat.st_mtime_ns, stat.st_size, stat.st_ino)))
    return tuple(signature)


def unexpected_internals(plugin_class: type) -> str | None:
    """Returns why ``plugin_class`` cannot be patched, or ``None`` when it has what the patch uses.

    Args:
        plugin_class: TensorBoard's ``ProjectorPlugin``.

    Example:
        >>> class Other:
        ...     def _update_configs(self):
        ...         pass
        >>> unexpected_internals(Other)
        '`Other.__init__` does not set _configs, _run_paths, logdir'
    """
    update = getattr(plugin_class, "_update_configs", None)
    if not isinstance(update, types.FunctionType):
        return f"`{plugin_class.__name__}._update_configs` is not a function"
    if update.__code__.co_argcount != 1 or update.__code__.co_kwonlyargcount:
        return f"`{plugin_class.__name__}._update_configs` takes arguments other than `self`"
    init = getattr(plugin_class, "__init__", None)
    init_names = set(init.__code__.co_names) if isinstance(init, types.FunctionType) else set()
    if missing := sorted(_INIT_NAMES - init_names):
        return f"`{plugin_class.__name__}.__init__` does not set {', '.join(missing)}"
    if missing := sorted(_UPDATE_NAMES - set(update.__code__.co_names)):
        return f"`{plugin_class.__name__}._update_configs` does not use {', '.join(missing)}"
    return None


def install(plugin_class: type | None = None) -> bool:
    """Makes the projector plugin re-read its configs whenever one of them changes on disk.

    Args:
        plugin_class: The class to patch; TensorBoard's ``ProjectorPlugin`` by default.

    Returns:
        Whether the patch is in place (also when it already was); ``False`` when the class is not
        what the patch expects, in which case nothing was changed.

    Example:
        >>> class Other:
        ...     def _update_configs(self):
        ...         pass
        >>> install(Other)
        False
    """
    if plugin_class is None:
        try:
            from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin
        except ImportError as err:
            logger.warning("lenet-lightning: no live projector reload (%s); restart TensorBoard to see new captures.",
                           err)
            return False
        plugin_class = ProjectorPlugin
    update = getattr(plugin_class, "_update_configs", None)
    if getattr(update, _MARK, False):
        return True
    reason = unexpected_internals(plugin_class)
    if reason is not None:
        logger.warning("lenet-lightning: no live projector reload: %s in this TensorBoard; restart TensorBoard to "
                       "see new captures.", reason)
        return False
    plugin_class._update_configs = _reloading(update)
    return True


def _reloading(update: Callable[[Any], None]) -> Callable[[Any], None]:
    """Wraps ``ProjectorPlugin._update_configs``: a changed config makes it read every config again."""

    @functools.wraps(update)
    def _update_configs(self: Any) -> None:
        # The signature is taken before the configs are read: a config replaced while they are read
        # differs from it, and is read again on the next request.
        try:
            signature = config_signature(_config_paths(self))
        except Exception:  # an instance unlike its class: serve as stock TensorBoard does
            logger.debug("lenet-lightning: no config signature", exc_info=True)
            update(self)
            return
        if signature != getattr(self, _SIGNATURE_ATTR, signature):
            self._run_paths = None  # "the runs changed": the original re-reads every config
        update(self)
        setattr(self, _SIGNATURE_ATTR, signature)

    setattr(_update_configs, _MARK, True)
    return _update_configs


def _config_paths(plugin: Any) -> list[str]:
    """Where the plugin looks for configs: each run folder, its projector assets folder, the logdir."""
    from tensorboard.plugins.projector import metadata

    folders = [plugin.logdir] if plugin.logdir else []
    folders += list((plugin._run_paths or {}).values())
    assets = os.path.join(metadata.PLUGINS_DIR, metadata.PLUGIN_ASSETS_NAME)
    return [os.path.join(folder, sub, metadata.PROJECTOR_FILENAME) for folder in folders for sub in ("", assets)]


class ProjectorLiveReload(base_plugin.TBLoader):
    """TensorBoard plugin loader that installs the live reload and adds no plugin of its own.

    Example:
        >>> from tensorboard.backend.application import make_plugin_loader
        >>> isinstance(make_plugin_loader(ProjectorLiveReload), ProjectorLiveReload)
        True
    """

    def load(self, context: base_plugin.TBContext) -> None:
        try:
            install()
        except Exception:  # never stop TensorBoard from starting
            logger.warning("lenet-lightning: no live projector reload; restart TensorBoard to see new captures.",
                           exc_info=True)
        return None
