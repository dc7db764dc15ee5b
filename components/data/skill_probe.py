"""Per-domain skill probe of a base model: what the pre-training gate measures, split by domain, with what the
model writes.

The pre-training probe (``components.data.base_model.textbook_probe``) returns one number; diagnosing a model
that misses the gate needs more: each domain's accuracy and a completion per domain. The same textbook format
("Problem: Q\\nSolution:\\n", greedy, the final "Answer: ..." line compared with the problem's answer) and the
same generation length (the longest reference solution + 8 tokens) as the gate, so the mean here is the gate's
``mean`` score and the lowest domain its ``every_domain`` score.

    report = probe_model_dir("models/tiny/base", questions)
    report.accuracy      # {"algebra": 0.25, "arithmetic": 0.0, ...}
    report.samples       # {"arithmetic": {"question": ..., "expected": "42", "got": None, "completion": ...}, ...}
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from components.data.problems import parse_any
from components.formatting import ENDOFTEXT


def textbook_prompt(question: str) -> str:
    """The probe's prompt: a textbook page up to its solution."""
    return f"Problem: {question}\nSolution:\n"


def final_answer(completion: str) -> Optional[str]:
    """The answer a completion gives (its first "Answer: ..." line, cut before a following "Problem:"), or None."""
    if "Answer: " not in completion:
        return None
    return completion.split("Answer: ", 1)[1].split("\n")[0].split("Problem:")[0].strip()


@dataclass(frozen=True)
class SkillReport:
    accuracy: dict[str, float]                 # domain -> share of exact final answers
    samples: dict[str, dict]                   # domain -> one completion (its first wrong one, else its first)
    questions: int
    mean: float                                # share over all questions (the gate's "mean")

    @property
    def lowest(self) -> float:
        """The weakest domain's accuracy (the gate's "every_domain")."""
        return min(self.accuracy.values()) if self.accuracy else 0.0

    @classmethod
    def from_dict(cls, d: dict) -> "SkillReport":
        """The report :meth:`as_dict` wrote (e.g. into a base model's summary)."""
        return cls(accuracy=dict(d["accuracy"]), samples=dict(d["samples"]), questions=int(d["questions"]),
                   mean=float(d["mean"]))

    def as_dict(self) -> dict:
        return {"accuracy": self.accuracy, "mean": self.mean, "lowest": self.lowest, "questions": self.questions,
                "samples": self.samples}

    def describe(self, chars: int = 160) -> str:
        """Per-domain scores, then what the model writes on one question of each domain."""
        lines = ["per domain: " + ", ".join(f"{d} {a:.2f}" for d, a in sorted(self.accuracy.items()))
                 + f" (mean {self.mean:.2f} over {self.questions} questions)"]
        for domain, s in sorted(self.samples.items()):
            written = s["completion"][:chars] + ("..." if len(s["completion"]) > chars else "")
            lines.append(f"  {domain}: {s['question']!r} expected {s['expected']}, got {s['got']}; "
                         f"writes {written!r}")
        return "\n".join(lines)


def probe_skills(model, tokenizer, questions: list[str], max_new_tokens: Optional[int] = None) -> SkillReport:
    """Greedily complete each question's textbook prompt; per domain, the share of exact final answers and one
    completion. ``max_new_tokens``: by default the gate's (the longest reference solution + 8)."""
    import torch  # lazy: a report is read and described without torch

    from components.data.base_model import textbook_document
    if not questions:
        raise ValueError("questions: the skill probe needs at least one question")
    parsed = [parse_any(q) for q in questions]
    expected = [str(fam.solve(*ops)) for fam, ops in parsed]
    domains = [fam.domain for fam, _ in parsed]
    if max_new_tokens is None:
        max_new_tokens = max(len(tokenizer(textbook_document(q))["input_ids"]) for q in questions) + 8
    enc = tokenizer([textbook_prompt(q) for q in questions], return_tensors="pt", padding=True, padding_side="left")
    model.eval()
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT),
                             pad_token_id=tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    got = [final_answer(t) for t in texts]
    right = [g == e for g, e in zip(got, expected)]
    accuracy, samples = {}, {}
    for domain in sorted(set(domains)):
        idx = [i for i, d in enumerate(domains) if d == domain]
        accuracy[domain] = round(sum(right[i] for i in idx) / len(idx), 4)
        pick = next((i for i in idx if not right[i]), idx[0])
        samples[domain] = {"question": questions[pick], "expected": expected[pick], "got": got[pick],
                           "completion": texts[pick]}
    return SkillReport(accuracy=accuracy, samples=samples, questions=len(questions),
                       mean=round(sum(right) / len(right), 4))


def probe_model_dir(model_dir: str | Path, questions: list[str], max_new_tokens: Optional[int] = None) -> SkillReport:
    """:func:`probe_skills` on a saved model and tokenizer (a base-model directory, a release, a checkpoint)."""
    from components.modeling import load_model  # lazy: imports transformers
    model, tokenizer = load_model(model_dir)
    return probe_skills(model, tokenizer, questions, max_new_tokens)
