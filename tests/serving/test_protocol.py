"""Request shapes: strict types, lone surrogates, voting with a given equality (no server, no model)."""
import pytest
from pydantic import ValidationError

from components.serving.protocol import ChatRequest, CompletionRequest, lone_surrogate, vote_groups

CHAT = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "stream_options": {"include_usage": True}}


@pytest.mark.parametrize("field,value", [("n", "2"), ("stream", "yes"), ("max_tokens", True), ("max_tokens", 16.5),
                                         ("temperature", "0.5"), ("seed", "3"), ("stream_options", {"include_usage": 1})])
def test_types_are_strict_as_openai_s_are(field, value):
    with pytest.raises(ValidationError) as e:
        ChatRequest.model_validate({**CHAT, field: value})
    assert e.value.errors()[0]["loc"][0] == field
    ok = ChatRequest.model_validate({**CHAT, "n": 2, "temperature": 1, "top_p": 1})  # an int where a float goes
    assert ok.n == 2 and ok.temperature == 1.0 and ok.stream_options.include_usage
    assert CompletionRequest.model_validate({"model": "m", "prompt": ["a", "b"], "stop": "x"}).stop == ["x"]


def test_a_lone_surrogate_is_found_with_its_path():
    assert lone_surrogate({"model": "m", "messages": [{"role": "user", "content": "ok"}]}) is None
    assert lone_surrogate({"messages": [{"content": "a"}, {"content": "x\ud800"}]}) == "messages.1.content"
    assert lone_surrogate({"stop": ["ok", "\udfff"]}) == "stop.1"
    assert lone_surrogate({"user\ud800": 1}) == "user\\ud800"  # named escaped: the error body stays UTF-8
    assert lone_surrogate("\U0001F600 paired surrogates are fine") is None


def test_voting_groups_with_the_equality_it_is_given():
    calls = []

    def same(a, b):
        calls.append((a, b))
        return a.replace(" ", "") == b.replace(" ", "")
    assert vote_groups(["1 + 1", "", "1+1", "3"], same) == [[0, 2], [3]]
    assert ("1+1", "1 + 1") in calls and all(a and b for a, b in calls)  # empty answers vote for nothing
