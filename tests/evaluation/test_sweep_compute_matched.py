"""REBASE as an evaluation method, the compute-matched comparison (s1 Fig. 7) and the extrapolation ablations."""
import pytest

from components.config import ConfigError, EvaluateConfig, load_config
from components.evaluation.rewards import ProgrammaticProcessReward
from components.evaluation.sweep import evaluate_sweep, matched_table, method
from components.inference.budget_forcing import ForcingVocab
from components.inference.engine import Completion
from components.inference.rebase import QwenMathPRM, RebaseSpec, rebase
from components.records import Question

QS = ["What is 12 + 34?", "What is the digit sum of 987?", "Solve for x: x - 5 = 7. What is x?"]


class ScriptedTree:
    """An engine whose every step is scripted: two 4-token lines, then it closes thinking (1 token, the
    delimiter). It counts every token it generates for thinking, to check REBASE's compute accounting."""

    name, batch_size, unlimited, context_length = "scripted", 8, 100, None

    def __init__(self, tokenizer):
        self.tokenizer, self.vocab = tokenizer, ForcingVocab.from_tokenizer(tokenizer)
        self.think_end = tokenizer.convert_tokens_to_ids("<|im_start|>")
        self.newline = tokenizer("\n", add_special_tokens=False)["input_ids"][-1]
        self.step_tokens = self.closings = self.answer_calls = 0

    def generate(self, prompts, sampling):
        out = []
        for p in prompts:
            if p.endswith("answer\n"):  # the answer after the delimiter
                self.answer_calls += 1
                out.append(Completion([5, 6], "Answer: 46", len(p), 2, "stop"))
                continue
            depth = p.split("think\n", 1)[1].count("\n")
            if depth < 2:
                self.step_tokens += 4
                out.append(Completion([7, 8, 9, self.newline], f"line {depth}\n", len(p), 4, "stop"))
            else:
                self.closings += 1
                out.append(Completion([self.think_end], "", len(p), 1, "stop"))
        return out


@pytest.mark.parametrize("width", [1, 3, 4])
def test_rebase_counts_every_expanded_nodes_tokens(tiny_engine, width):
    engine = ScriptedTree(tiny_engine.tokenizer)
    out = rebase(engine, QS[:2], RebaseSpec(width=width, max_thinking_tokens=100), ProgrammaticProcessReward())
    # Two rounds of `width` 4-token expansions per question, then `width` closings (the delimiter is not thinking).
    assert [r.thinking_tokens for r in out] == [8 * width] * 2
    assert sum(r.thinking_tokens for r in out) == engine.step_tokens
    assert engine.closings == 2 * width and engine.answer_calls == 2 * width
    assert all(r.tries == width and r.answer == "Answer: 46" for r in out)


def test_matched_table_takes_each_methods_best_within_the_reference_compute():
    per = {"budget_forcing": {"points": [{"budget": 32, "avg_thinking_tokens": 30.0, "accuracy": 0.2},
                                         {"budget": 64, "avg_thinking_tokens": 60.0, "accuracy": 0.5}]},
           "majority_voting": {"points": [{"budget": 1, "avg_thinking_tokens": 40.0, "accuracy": 0.3},
                                          {"budget": 2, "avg_thinking_tokens": 80.0, "accuracy": 0.4}]}}
    rows = matched_table(per)
    assert [r["thinking_tokens"] for r in rows] == [30.0, 40.0, 60.0, 80.0]
    assert rows[0]["accuracy"] == {"budget_forcing": 0.2, "majority_voting": None}
    assert rows[1]["accuracy"] == {"budget_forcing": 0.2, "majority_voting": 0.3}
    assert rows[2]["accuracy"] == {"budget_forcing": 0.5, "majority_voting": 0.3}
    assert rows[3]["accuracy"] == {"budget_forcing": 0.5, "majority_voting": 0.4}
    assert rows[2]["at"]["majority_voting"] == {"value": 1, "avg_thinking_tokens": 40.0}


def small_cfg(**kw):
    step_tokens = kw.pop("rebase_step_tokens", 6)
    base = dict(budgets=[4, 8], max_answer_tokens=4,
                methods={"majority_voting": {"samples": [1, 2]}, "wait_extension": {"waits": [0, 1]},
                         "rebase": {"widths": [1, 2], "step_tokens": step_tokens}})
    return EvaluateConfig(**{**base, **kw})


def test_rebase_runs_by_name_with_the_configured_widths(tiny_engine):
    c = small_cfg()
    assert method(c, "rebase").values() == [1, 2]
    res = method(c, "rebase").run(tiny_engine, QS, 2)
    assert len(res) == 3 and all(r.tries == 2 and r.thinking_tokens > 0 for r in res)


def test_extras_land_in_the_report(tiny_engine):
    from components.inference.hf_engine import HFEngine
    engine = HFEngine(tiny_engine.model, tiny_engine.tokenizer, batch_size=8, unlimited_thinking_tokens=16)
    qs = [Question(id=str(i), source="t", question=q, answer="46") for i, q in enumerate(QS)]
    c = small_cfg(compute_matched=["budget_forcing", "majority_voting", "rebase"],
                  wait_string_ablation=["Wait", "Hmm", ""], ablation_num_waits=2, num_waits_ablation=[0, 2],
                  ablation_limit=2, rebase_step_tokens=8)
    report, gens = evaluate_sweep(engine, qs, c)
    cm = report["compute_matched"]
    assert cm["questions"] == 2
    assert list(cm["methods"]) == ["budget_forcing", "majority_voting", "rebase"]
    assert [p["budget"] for p in cm["methods"]["rebase"]["points"]] == [1, 2]
    bf = cm["methods"]["budget_forcing"]["points"]
    assert [p["avg_thinking_tokens"] for p in bf] == [4.0, 8.0]  # the untrained model never stops: budgets bind
    levels = [r["thinking_tokens"] for r in cm["table"]]
    assert levels == sorted(levels) and {4.0, 8.0} <= set(levels)
    at4 = cm["table"][levels.index(4.0)]
    assert at4["accuracy"]["majority_voting"] is None  # one sample already thinks up to the cap (16)
    assert at4["at"]["budget_forcing"]["value"] == 4
    ab = report["ablations"]
    assert ab["questions"] == 2
    assert [r["label"] for r in ab["wait_strings"]] == ["no extrapolation", "2x Wait", "2x Hmm", "2x (none)"]
    assert [r["num_waits"] for r in ab["num_waits"]] == [0, 2]
    assert ab["num_waits"][0]["accuracy"] == ab["wait_strings"][0]["accuracy"]  # the same 0-wait run, reused
    assert all(r["avg_waits_used"] <= r["num_waits"] for r in ab["wait_strings"] + ab["num_waits"])
    # budget forcing is scored from the main sweep's generations of those 2 questions, not rerun
    bf_gens = [g for g in gens if g.method == "budget_forcing"]
    assert len(bf_gens) == 3 * 2 + 3  # the main sweep (2 budgets) and the no-budget run, on all 3 questions
    sub = [g for g in bf_gens if g.question_id in {"0", "1"} and g.budget == 8]
    assert bf[1]["accuracy"] == sum(g.correct for g in sub) / 2
    assert len([g for g in gens if g.method == "majority_voting"]) == 2 * 2  # run on the subset only
    methods = {g.method for g in gens}
    assert {"wait_extension[none]", "wait_extension[Hmm]", "wait_extension[(none)]", "rebase"} <= methods


def test_wait_strings_accept_the_empty_string_and_refuse_blank_ones(tmp_path):
    assert EvaluateConfig(wait_strings=[""]).wait_strings == [""]
    assert EvaluateConfig(wait_string_ablation=["Wait", ""]).wait_string_ablation == ["Wait", ""]
    for key in ("wait_strings", "wait_string_ablation"):
        p = tmp_path / "params.yaml"
        p.write_text(f"profile: tiny\ntiny:\n  evaluate:\n    {key}: ['  ']\n")
        with pytest.raises(ConfigError, match=f"evaluate.{key}"):
            load_config(str(p), None, [])


def test_qwen_math_prm_scores_the_last_steps_separator():
    """The Qwen2.5-Math-PRM recipe on a scripted tokenizer and model: the k-th ``<extra_0>`` has P(positive) =
    sigmoid(k); a partial trace's reward is its last step's."""
    import math

    import torch

    class Tok:
        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            assert messages[-1]["role"] == "assistant" and not tokenize and not add_generation_prompt
            return messages[1]["content"] + "|" + messages[-1]["content"]

        def encode(self, text, return_tensors=None):
            if text == QwenMathPRM.SEP:
                return [99]
            ids = [1 if c != "\x00" else 99 for c in text.replace(QwenMathPRM.SEP, "\x00")]
            return torch.tensor([ids])

    class Model:
        def __call__(self, input_ids):
            logits = torch.zeros(1, input_ids.shape[1], 2)
            for k, pos in enumerate((input_ids[0] == 99).nonzero().flatten().tolist(), start=1):
                logits[0, pos, 1] = float(k)
            return (logits,)

    prm = object.__new__(QwenMathPRM)
    prm.tokenizer, prm.model, prm.device, prm.name = Tok(), Model(), "cpu", "Qwen/Qwen2.5-Math-PRM-7B"
    assert prm.score("q", ["a", "b", "c"]) == pytest.approx(1 / (1 + math.exp(-3)))
    assert prm.score("q", ["a"]) == pytest.approx(1 / (1 + math.exp(-1)))
    assert prm.score("q", []) == 0.5
