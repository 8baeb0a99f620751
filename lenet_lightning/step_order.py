"""Values for TensorBoard, released in step order per stream.

TensorBoard's default loader (its Rust data server) takes a step that goes back for a restart: a
point logged at step 3 after steps 5 and 10 of the same tag drops those two. Analyses now finish
out of order (the newest capture is mapped first, the gaps at the next pause), so what they log
waits here until every earlier step expected on its stream has come, or will never come.
No Lightning here.
"""

from __future__ import annotations

from typing import Any

Released = list[tuple[str, int, Any]]  # (stream, step, value), in step order per stream


class StepOrder:
    """Holds each stream's values until the values of the steps before them, announced by
    :meth:`expect`, have come (:meth:`put`; a value that turned out empty is put all the same). A
    step never announced is released as soon as nothing earlier is awaited on its stream.

    Example:
        >>> order = StepOrder()
        >>> order.expect("map", 0)
        >>> order.expect("map", 5)
        >>> order.awaits("map", 5), order.put("map", 5, "five")  # step 0 is still awaited
        (True, [])
        >>> order.put("map", 0, "zero")
        [('map', 0, 'zero'), ('map', 5, 'five')]
        >>> order.put("scores", 10, 0.5)  # never announced, nothing earlier awaited
        [('scores', 10, 0.5)]
    """

    def __init__(self) -> None:
        self._expected: dict[str, set[int]] = {}
        self._held: dict[str, dict[int, Any]] = {}

    def expect(self, stream: str, step: int) -> None:
        """Announces that a value for ``step`` will come on ``stream``: later steps wait for it."""
        self._expected.setdefault(stream, set()).add(step)

    def put(self, stream: str, step: int, value: Any) -> Released:
        """The value for ``step`` on ``stream``; returns what can be logged now, in step order."""
        self._expected.get(stream, set()).discard(step)
        self._held.setdefault(stream, {})[step] = value
        return self._release(stream)

    def awaits(self, stream: str, step: int) -> bool:
        """Whether a value for ``step`` on ``stream`` would be held (an earlier step is awaited)."""
        return any(other < step for other in self._expected.get(stream, ()))

    def _release(self, stream: str) -> Released:
        expected, held = self._expected.get(stream, set()), self._held.get(stream, {})
        first_awaited = min(expected, default=None)
        ready = sorted(step for step in held if first_awaited is None or step < first_awaited)
        return [(stream, step, held.pop(step)) for step in ready]
