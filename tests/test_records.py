"""Records shared by every stage: a graded generation carries its thought's fields and nothing else."""
from components.records import Generation, Question, Thought


def test_a_generation_is_its_thought_graded_for_a_question():
    class Forced:  # a result with more than a Thought (token ids), as an engine returns it
        thinking, answer, thinking_tokens, answer_tokens, waits_used, hit_budget = "t", "Answer: 4", 5, 2, 1, True
        probe_tokens, discarded_tokens = 7, 3
        token_ids = [1, 2, 3]

    q = Question(id="q1", source="s", question="What is 2 + 2?", answer="4")
    g = Generation.from_forced(Forced(), q, 8, ("4", True), method="rejection_sampling")
    assert g.model_dump() == {"thinking": "t", "answer": "Answer: 4", "thinking_tokens": 5, "answer_tokens": 2,
                              "waits_used": 1, "hit_budget": True, "probe_tokens": 7, "discarded_tokens": 3,
                              "question_id": "q1", "budget": 8,
                              "method": "rejection_sampling", "prompt": "What is 2 + 2?", "predicted": "4",
                              "gold": "4", "correct": True}
    assert Thought.model_validate(g.model_dump(include=set(Thought.model_fields))).answer == "Answer: 4"
