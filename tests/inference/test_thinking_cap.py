from components.inference.thinking_cap import MARGIN_TOKENS, no_budget_cap


def test_the_no_budget_cap_leaves_the_prompt_and_the_answer_their_room():
    # s1-32b: the cap is the context; a 180-token prompt and 2,052 tokens after thinking
    cap = no_budget_cap(32768, 32768, 180, 2052)
    assert cap == 32768 - 180 - 2052 - MARGIN_TOKENS and 180 + cap + 2052 < 32768
    assert no_budget_cap(400, 640, 60, 29) == 400  # the tiny profile: the configured cap is the smaller
    assert no_budget_cap(400, None, 10_000, 29) == 400  # no known context: the configured cap
    assert no_budget_cap(100, 120, 110, 20) <= 0  # no room to think
