"""Budget forcing on a real (tiny, untrained) Qwen2 through the HF engine's decoding loop: every engine check."""
import pytest

from components.inference.budget_forcing import BudgetSpec
from tests.support.engine_checks import CHECKS


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_hf_engine(tiny_engine, name):
    CHECKS[name](tiny_engine)


@pytest.mark.parametrize("kwargs,match", [
    (dict(max_thinking_tokens=-1), "max_thinking_tokens"),
    (dict(max_thinking_tokens=4, min_thinking_tokens=8), "min_thinking_tokens"),
    (dict(wait_strings=()), "wait_strings"),
    (dict(max_answer_tokens=0), "max_answer_tokens"),
])
def test_bad_specs_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BudgetSpec(**kwargs)


def test_the_empty_wait_string_is_a_valid_spec_and_whitespace_is_kept():
    assert BudgetSpec(wait_strings=("",)).wait_strings == ("",)
    assert BudgetSpec(wait_strings=("", " Hmm")).wait_strings == ("", " Hmm")
