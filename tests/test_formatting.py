from components.config import TeacherConfig
from components.distill.teachers import ProgrammaticTeacher
from components.formatting import (
    ANSWER_START,
    IGNORE_INDEX,
    THINK_START,
    assistant_text,
    prompt_text,
    thinking_prompt,
    tokenize_dataset,
    tokenize_example,
)
from components.records import Question


def _real_example():
    q = Question(id="q", source="t", question="What is 4831 + 2967?", answer="7798")
    t = ProgrammaticTeacher(TeacherConfig(slip_probability=1.0)).solve(q)
    return q, t


def test_s1_assistant_format():
    text = assistant_text("step 1\nstep 2\n", "Answer: 7")
    assert text == "<|im_start|>think\nstep 1\nstep 2\n<|im_start|>answer\nAnswer: 7<|im_end|>"


def test_chat_template_is_qwen_style(tiny_engine):
    tok = tiny_engine.tokenizer
    assert prompt_text(tok, "Q?") == "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"
    assert thinking_prompt(tok, "Q?").endswith("<|im_start|>assistant\n" + THINK_START)
    assert tok.tokenize("12345") == ["1", "2", "3", "4", "5"]  # digits split, as Qwen does
    for special in ("<|im_start|>", "<|im_end|>"):
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1


def test_loss_mask_covers_exactly_the_assistant_turn(tiny_engine):
    tok = tiny_engine.tokenizer
    q, t = _real_example()
    ex = tokenize_example(tok, q.question, t.thinking, t.answer)
    assert len(ex.input_ids) == len(ex.labels)
    assert all(l == IGNORE_INDEX for l in ex.labels[: ex.prompt_tokens])
    unmasked = [l for l in ex.labels if l != IGNORE_INDEX]
    assert unmasked == ex.input_ids[ex.prompt_tokens:]
    decoded = tok.decode(unmasked)
    assert decoded == assistant_text(t.thinking, t.answer)
    assert decoded.startswith(THINK_START) and ANSWER_START + "Answer: 7798<|im_end|>" in decoded
    assert "Wait, let me re-check" in decoded
    assert tok.decode(ex.input_ids[: ex.prompt_tokens]) == prompt_text(tok, q.question)


def test_overlong_examples_are_reported_not_truncated(tiny_engine):
    tok = tiny_engine.tokenizer
    q, t = _real_example()
    rows = [("short", "What is 1 + 1?", "1+1=2", "Answer: 2"), ("long", q.question, t.thinking * 20, t.answer)]
    kept, report = tokenize_dataset(tok, rows, block_size=120)
    assert report.kept == 1 and report.too_long == ["long"] and report.max_length > 120
    assert tok.decode(kept[0].input_ids).endswith("Answer: 2<|im_end|>")
