"""Student attempts: the difficulty filter's grading of what a student solves."""
from components.inference.attempts import student_attempts
from tests.support.examples import ex


class ScriptedStudent:
    """A student engine whose answers are scripted: right on even ids, wrong on odd. It has no tokenizer, so no
    forcing vocabulary: plain generation only."""

    name, batch_size, unlimited, context_length = "scripted", 4, 64, None
    tokenizer = vocab = None

    def __init__(self):
        self.asked = []

    def generate(self, prompts, sampling):
        from components.inference.engine import Completion
        out = []
        for p in prompts:
            i = len(self.asked)
            self.asked.append(p)
            text = "Answer: 42" if i % 2 == 0 else "Answer: 41"
            out.append(Completion([], text, 1, 3, "stop"))
        return out


def test_difficulty_drops_what_the_student_solves(monkeypatch):
    import components.inference.attempts as difficulty
    monkeypatch.setattr(difficulty, "prompt_text", lambda tok, q: q)
    rows = [ex(qid=f"q{i}") for i in range(10)]
    solved = student_attempts(ScriptedStudent(), rows, max_new_tokens=8)
    assert solved == [i % 2 == 0 for i in range(10)]


def test_a_student_cut_off_before_its_answer_has_not_solved_it(monkeypatch):
    import components.inference.attempts as difficulty
    from components.inference.engine import Completion

    class CutOff(ScriptedStudent):
        def generate(self, prompts, sampling):  # restates the operands, then runs out of tokens (or not)
            return [Completion([], "By the sum rule, add the two counts.\n40 + 2", 1, sampling.max_new_tokens,
                               "length" if i % 2 else "stop") for i, _ in enumerate(prompts)]
    monkeypatch.setattr(difficulty, "prompt_text", lambda tok, q: q)
    assert student_attempts(CutOff(), [ex(qid=f"q{i}") for i in range(4)], max_new_tokens=8) == [True, False] * 2


def test_a_multiple_choice_attempt_is_graded_by_its_option_letter(monkeypatch):
    import components.inference.attempts as difficulty
    from components.inference.engine import Completion
    from components.records import Example, Question, Trace

    class Chooser(ScriptedStudent):
        def generate(self, prompts, sampling):
            return [Completion([], "Comparing the options, the answer is (C).", 1, 9, "stop") for _ in prompts]

    def gpqa(qid, gold):
        q = Question(id=qid, source="gpqa", question="Which? (A) x (B) y (C) z (D) w", answer=gold,
                     metadata={"kind": "multiple_choice"})
        return Example(question=q, trace=Trace(question_id=qid, teacher="t"))

    monkeypatch.setattr(difficulty, "prompt_text", lambda tok, q: q)
    assert student_attempts(Chooser(), [gpqa("a", "C"), gpqa("b", "B")], max_new_tokens=16) == [True, False]
