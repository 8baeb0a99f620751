"""StepOrder: what each stream logs comes out in step order, whatever order it finishes in."""

from lenet_lightning.step_order import StepOrder


def test_step_order_holds_a_later_step_until_the_earlier_ones_come():
    order = StepOrder()
    for step in (0, 1, 2, 3):
        order.expect("map", step)
    assert order.put("map", 3, "c") == [] and order.put("map", 1, "a") == []
    assert order.awaits("map", 3) and not order.awaits("map", 0)
    assert order.put("map", 0, "z") == [("map", 0, "z"), ("map", 1, "a")]
    assert order.put("map", 2, "b") == [("map", 2, "b"), ("map", 3, "c")]


def test_step_order_streams_are_independent_and_unannounced_steps_pass():
    order = StepOrder()
    order.expect("map", 0)
    assert order.put("scores", 5, 0.5) == [("scores", 5, 0.5)]  # nothing awaited on "scores"
    assert order.put("map", 5, "late") == []  # an unannounced step still waits for an earlier announced one
    assert order.put("map", 0, None) == [("map", 0, None), ("map", 5, "late")]  # an empty value clears its step
