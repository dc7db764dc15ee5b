from components.inference.thinking_cap import MARGIN_TOKENS, after_thinking_tokens, no_budget_cap


def test_the_no_budget_cap_leaves_the_prompt_and_the_answer_their_room():
    # s1-32b: the cap is the context; a 180-token prompt and 2,052 tokens after thinking
    cap = no_budget_cap(32768, 32768, 180, 2052)
    assert cap == 32768 - 180 - 2052 - MARGIN_TOKENS and 180 + cap + 2052 < 32768
    assert no_budget_cap(400, 640, 60, 29) == 400  # the tiny profile: the configured cap is the smaller
    assert no_budget_cap(400, None, 10_000, 29) == 400  # no known context: the configured cap
    assert no_budget_cap(100, 120, 110, 20) <= 0  # no room to think


def test_an_in_process_run_without_a_budget_answers_within_the_context(tiny_model_dir):
    """The s1-32b setting in miniature: the configured cap equals the context length (1,024 positions here), and
    the model never ends its thinking by itself (a "Wait" whenever it tries): the engine caps the thinking per
    prompt so the forced answer still fits the context."""
    from components.inference.budget_forcing import BudgetSpec
    from components.inference.hf_engine import HFEngine

    engine = HFEngine.from_pretrained(str(tiny_model_dir), batch_size=2, unlimited_thinking_tokens=1024)
    assert engine.context_length == 1024
    prompts = ["<|im_start|>user\nWhat is 1 + 1?<|im_end|>\n<|im_start|>assistant\n<|im_start|>think\n",
               "<|im_start|>user\nWhat is 12 + 30 + 7 + 5?<|im_end|>\n<|im_start|>assistant\n<|im_start|>think\n"]
    spec = BudgetSpec(num_waits=10_000, max_answer_tokens=8, final_answer_prefix="Final Answer:")
    for prompt, result in zip(prompts, engine.generate_forced(prompts, [spec] * 2)):
        n_prompt = len(engine.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        assert result.hit_budget
        assert result.thinking_tokens == 1024 - n_prompt - after_thinking_tokens(spec, engine.vocab) - MARGIN_TOKENS
        assert n_prompt + len(result.token_ids) <= 1024
        assert result.answer_tokens > 0
