"""The difficulty filter's grading: rows whose reference is a whole solution are graded by the LLM judge (over
HTTP) when the domain classifier is an LLM, by rule otherwise; every other row by rule, as the students return."""
from functools import partial

from components.config import DifficultyConfig, DomainConfig
from components.curation.filter_stage import difficulty_filter
from components.curation.filtering import student_solves
from components.inference.attempts import student_attempts
from components.inference.engine import Completion
from tests.support.examples import ex
from tests.support.judge_server import judge_server

REFERENCE = "Zinc displaces hydrogen from the acid, so the gas given off is hydrogen, H2."
CUT = "Zinc stands above hydrogen in the activity series, so it"
# question -> (the student's reply, its finish reason)
SCRIPT = {
    "Which gas does zinc give off in acid? (right)": ("Hydrogen.\nAnswer: H2", "stop"),
    "Which gas does zinc give off in acid? (wrong)": ("Oxygen.\nAnswer: O2", "stop"),
    "Which gas does zinc give off in acid? (hedged)": ("It could be H2, maybe.", "stop"),
    "Which gas does zinc give off in acid? (cut)": (CUT, "length"),
    "What is 12 + 30?": ("12 + 30 = 42.\nAnswer: 42", "stop"),
    "What is 12 + 31?": ("12 + 31 = 42.\nAnswer: 42", "stop"),
    "What is 12 + 32?": ("Adding, 12 + 32 makes\n44", "length"),
}


class ScriptedStudent:
    """A student engine whose replies are scripted per question; its 'tokenizer' leaves the question as the
    prompt."""

    name, batch_size, unlimited, context_length, vocab = "scripted", 3, 64, None, None

    def __init__(self):
        self.tokenizer = self

    @staticmethod
    def apply_chat_template(messages, tokenize=False, add_generation_prompt=True):
        return messages[-1]["content"]

    def generate(self, prompts, sampling):
        return [Completion([], SCRIPT[p][0], 1, sampling.max_new_tokens, SCRIPT[p][1]) for p in prompts]


def judge_reply(attempt: str, reference: str):
    if "maybe" in attempt:
        return "The attempt does not commit to a gas."  # no verdict
    return "Same gas as the reference.\nYes" if "H2" in attempt else "A different gas.\nNo"


def _rows():
    rows = []
    for i, question in enumerate(SCRIPT):
        e = ex(question=question, qid=question.split("(")[-1].rstrip(")") if "(" in question else f"sum{i}")
        e.question.answer = str(12 + int(question[-3:-1])) if question.startswith("What") else REFERENCE
        if question.startswith("Which"):
            e.question.metadata["answer_format"] = "solution"
        rows.append(e)
    return rows


CFG = DifficultyConfig(max_new_tokens=8, batch_size=3, workers=1)


def _attempt(rows):
    return lambda student, judge: student_solves(rows, partial(ScriptedStudent), "scripted", CFG, judge=judge)


def test_the_judge_grades_the_students_on_solution_references():
    """Through Ray Data's student actors and a judge over HTTP: the attempt the judge calls right drops its row
    (solved_by_student), a wrong one and one without a verdict keep theirs (the unjudged one counted), and the
    cut-off attempt is never sent. Rule-graded rows get what the student's rule grading gives."""
    rows = _rows()
    with judge_server(judge_reply) as server:
        domain = DomainConfig(classifier="llm", model="judge", base_url=server.base_url, max_retries=0)
        kept, dropped, report = difficulty_filter(rows, ["base"], domain, _attempt(rows))
    assert sorted(server.attempts) == ["Hydrogen.\nAnswer: H2", "It could be H2, maybe.", "Oxygen.\nAnswer: O2"]
    assert CUT not in server.attempts
    assert report == {"solution_references": {"rows": 4, "graded_by": "judge"},
                      "student_judged": {"base": {"judged": 2, "correct": 1, "unjudged": 1, "cut_off": 1}}}
    assert sorted(e.question.id for e in dropped) == ["right", "sum4"]
    assert {e.drop_reason for e in dropped} == {"solved_by_student"}
    assert sorted(e.question.id for e in kept) == ["cut", "hedged", "sum5", "sum6", "wrong"]
    rule = [e for e in _rows() if not e.question.metadata]
    assert [e.student_correct["base"] for e in rows if not e.question.metadata] == \
           student_attempts(ScriptedStudent(), rule, CFG.max_new_tokens) == [True, False, False]


def test_without_an_llm_classifier_there_is_no_judge_and_every_row_is_graded_by_rule():
    rows = _rows()
    with judge_server(judge_reply) as server:
        domain = DomainConfig(classifier="deterministic", base_url=server.base_url)
        kept, dropped, report = difficulty_filter(rows, ["base"], domain, _attempt(rows))
    assert server.attempts == [] and report == {"solution_references": {"rows": 4, "graded_by": "rule"}}
    by_rule = student_attempts(ScriptedStudent(), _rows(), CFG.max_new_tokens)
    assert [e.student_correct["base"] for e in rows] == by_rule
    assert sorted(e.question.id for e in dropped) == sorted(e.question.id for e, ok in zip(rows, by_rule) if ok)


def test_no_solution_references_leave_the_report_as_it_was():
    rows = [e for e in _rows() if not e.question.metadata]
    solved = dict(zip([e.question.id for e in rows], student_attempts(ScriptedStudent(), rows, CFG.max_new_tokens)))
    domain = DomainConfig(classifier="llm", model="judge", base_url="http://127.0.0.1:9/v1")
    kept, dropped, report = difficulty_filter(rows, ["base"], domain, lambda student, judge: (solved, {}))
    assert report == {} and [e.question.id for e in dropped] == ["sum4"]


def test_the_base_student_runs_at_model_revision_and_others_at_their_pin(tmp_path):
    """'base' is model.name at model.revision: both runners read the student's commit from the section's
    revisions under its reference, so the base student's entry there is model.revision, whatever a pin of the
    same name says; any other student keeps its own pin."""
    from components.config import ModelConfig
    from components.curation.filter_stage import student_model
    from components.paths import Paths
    base, other, seven = "5ede1c97bbab6ce5cda5812749b4c0bdf79b18dd", "0" * 40, "a09a35458c702b33eeacc393d103063234e8bc28"
    model = ModelConfig(source="hub", name="Qwen/Qwen2.5-32B-Instruct", revision=base)
    difficulty = DifficultyConfig(students=["base", "Qwen/Qwen2.5-7B-Instruct"],
                                  revisions={"Qwen/Qwen2.5-7B-Instruct": seven, "Qwen/Qwen2.5-32B-Instruct": other})
    paths = Paths.for_profile("hub", tmp_path)
    ref, cfg = student_model("base", model, difficulty, paths)
    assert (ref, cfg.revisions[ref]) == ("Qwen/Qwen2.5-32B-Instruct", base)
    ref, cfg = student_model("base", model, difficulty.model_copy(update={"revisions": {}}), paths)
    assert cfg.revisions.get(ref) == base
    ref, cfg = student_model("Qwen/Qwen2.5-7B-Instruct", model, difficulty, paths)
    assert (ref, cfg.revisions.get(ref)) == ("Qwen/Qwen2.5-7B-Instruct", seven)
    built = ModelConfig()  # the embedded base model: a directory this project builds, no commit
    ref, cfg = student_model("base", built, difficulty, paths)
    assert ref == str(paths.base_model) and cfg.revisions.get(ref) is None
