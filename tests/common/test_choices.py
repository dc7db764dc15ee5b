"""Multiple-choice letters: a response is credited only with the one option it commits to."""
import pytest

from components.common.choices import extract_choice, grade_choice


@pytest.mark.parametrize("text,letter", [
    ("The answer is **C**", "C"), ("**Answer:** C", "C"), ("ANSWER IS D", "D"), ("The answer is **C**.", "C"),
    ("Final answer: *B*", "B"), ("the correct answer is option (B)", "B"), ("Answer: [A]", "A"),
    ("A careful check gives (C)", "C"), ("Answer: C", "C"), (r"so \boxed{C}", "C"), (r"\boxed{\text{D}}", "D"),
    ("The answer is (C).", "C"), ("(B)", "B"), ("B", "B"), ("**B**", "B"),
    ("Options (A) and (B) fail, so it is (C).", "C"), ("Answer: A. Option (B) was tempting.", "A"),
    ("The answer is a prime, namely (D)", "D"), ("Answer: A, a classic trap", "A"),
])
def test_the_committed_letter_is_read_in_every_common_shape(text, letter):
    assert extract_choice(text) == letter
    assert grade_choice(text, letter) and not grade_choice(text, "A" if letter != "A" else "B")


@pytest.mark.parametrize("text", [
    "Answer: (A) or (C)", "The answer is A or C", "Answer: A/C", "The answer is (B), (D)",
    "It is either (A) or (C)", r"Options (A)-(D) considered… \boxed{12}", "Options (A)-(D) considered.",
    r"Answer: C, so \boxed{A \text{ or } C}", "I am not sure about any of them", "",
])
def test_a_hedge_a_range_or_a_boxed_non_letter_commits_to_no_letter(text):
    assert extract_choice(text) == ""
    assert not any(grade_choice(text, g) for g in "ABCD")


def test_grading_reexports_the_choice_functions():
    from components.common import grading
    assert grading.extract_choice is extract_choice and grading.grade_choice is grade_choice
