"""The LLM judge: one function rules on (question, attempt, reference) items over HTTP, for the teacher and for
the difficulty filter's students; what it could not rule on counts as not solved."""
import asyncio

from components.common.chat_client import ChatClient
from components.config import DomainConfig
from components.curation.judge import attempt_to_judge, judge, judge_students, judge_teacher
from tests.support.examples import ex
from tests.support.judge_server import judge_server

REFERENCE = "Zinc displaces hydrogen from the acid, so the gas is H2."


def scripted(attempt: str, reference: str):
    """Yes when the attempt names H2, No when it names another gas, no verdict when it hedges, a failed call
    (HTTP 400: not retried) when it says FAIL."""
    if "FAIL" in attempt:
        return 400
    if "maybe" in attempt:
        return "Hard to tell from this attempt."
    return "It names the same gas.\nYes" if "H2" in attempt else "It names another gas.\n**No**"


def _solution_row(qid: str, teacher_answer: str = "Answer: H2"):
    e = ex(question="Which gas forms when zinc reacts with hydrochloric acid?", answer=teacher_answer, qid=qid)
    e.question.answer = REFERENCE
    e.question.metadata["answer_format"] = "solution"
    return e


def _run(work, base_url):
    async def go():
        client = ChatClient(DomainConfig(classifier="llm", model="judge", base_url=base_url, max_retries=0,
                                         concurrency=4), kind="openai")
        try:
            return await work(client)
        finally:
            await client.aclose()
    return asyncio.run(go())


def test_one_function_rules_on_items_concurrently_and_none_when_it_cannot():
    items = [("q", a, REFERENCE) for a in ("The gas is H2.", "The gas is O2.", "maybe H2?", "FAIL")]
    with judge_server(scripted) as server:
        verdicts = _run(lambda client: judge(items, client), server.base_url)
    assert verdicts == [True, False, None, None]
    assert sorted(server.attempts) == sorted(a for _, a, _ in items)


def test_the_teacher_is_judged_by_the_same_function():
    rows = [_solution_row("a", "Answer: H2"), _solution_row("b", "Answer: O2"), _solution_row("c", "Answer: FAIL")]
    rows.append(ex(qid="short"))  # graded by rule: never sent
    with judge_server(scripted) as server:
        counts = _run(lambda client: judge_teacher(rows, client), server.base_url)
    assert counts == {"judged": 2, "correct": 1, "unjudged": 1}
    assert [e.question.metadata.get("teacher_judged_correct") for e in rows] == [True, False, None, None]
    assert len(server.attempts) == 3


def test_an_empty_teacher_answer_is_not_correct_and_never_sent():
    rows = [_solution_row("a", "Answer: H2"), _solution_row("empty", ""), _solution_row("blank", " \n ")]
    with judge_server(scripted) as server:
        counts = _run(lambda client: judge_teacher(rows, client), server.base_url)
    assert server.attempts == ["Answer: H2"]
    assert [e.question.metadata.get("teacher_judged_correct") for e in rows] == [True, False, False]
    assert counts == {"judged": 3, "correct": 1, "unjudged": 0}


def test_students_right_wrong_unjudged_and_cut_off():
    """Per student: a Yes solves the row, a No or no verdict leaves it unsolved (the unjudged ones counted), and
    a row with no attempt (cut off before an answer) is never sent."""
    rows = [_solution_row(q) for q in ("right", "wrong", "hedged", "failed", "cut")]
    attempts = {"7b": {"right": "Hydrogen: H2.", "wrong": "Oxygen, O2.", "hedged": "maybe H2", "failed": "FAIL"},
                "32b": {"right": "O2", "wrong": "H2", "cut": ""}}
    with judge_server(scripted) as server:
        counts = _run(lambda client: judge_students(rows, attempts, client), server.base_url)
    assert counts == {"7b": {"judged": 2, "correct": 1, "unjudged": 2, "cut_off": 1},
                      "32b": {"judged": 2, "correct": 1, "unjudged": 0, "cut_off": 3}}
    assert {e.question.id: e.student_correct for e in rows} == {
        "right": {"7b": True, "32b": False}, "wrong": {"7b": False, "32b": True},
        "hedged": {"7b": False, "32b": False}, "failed": {"7b": False, "32b": False}, "cut": {"7b": False, "32b": False}}
    assert len(server.attempts) == 6 and "" not in server.attempts


def test_an_attempt_cut_off_before_an_answer_is_never_sent():
    working = "Zinc is above hydrogen in the activity series, so it displaces"
    assert attempt_to_judge(working, finished=False) == ""
    assert attempt_to_judge(working, finished=True) == working
    answered = "The gas is hydrogen.\nAnswer: H2\nTo double-check, the"
    assert attempt_to_judge(answered, finished=False) == answered  # it wrote its answer before the cut
    assert attempt_to_judge("  ", finished=True) == ""
