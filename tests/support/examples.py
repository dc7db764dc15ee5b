"""Curated-example rows built from a few keyword arguments, for the curation and inference tests."""
from components.records import Example, Question, Trace


def ex(question="What is 12 + 30?", thinking="2+0=2, carry 0, so far 2", answer="Answer: 42", ok=True,
       msc="97", tokens=0, qid="q"):
    return Example(question=Question(id=qid, source="t", question=question, answer="42", msc=msc),
                   trace=Trace(question_id=qid, teacher="t", thinking=thinking, answer=answer, ok=ok),
                   trace_tokens=tokens)
