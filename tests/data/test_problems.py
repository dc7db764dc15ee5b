"""The procedural problems' worked solutions."""
from components.data.problems import addition_steps


def test_addition_trace_is_correct_step_by_step():
    assert addition_steps(958, 67) == [
        "958 + 067",
        "8+7+0=15, carry 1, so far 5, left 95 + 06",
        "5+6+1=12, carry 1, so far 25, left 9 + 0",
        "9+0+1=10, carry 1, so far 025, left none",
        "Write the final carry: 1025",
    ]
