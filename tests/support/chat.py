"""A chat-completions response body, as an OpenAI-compatible endpoint sends it."""
import json


def chat_body(content="Answer: 4", reasoning=None, usage=True, finish="stop"):
    msg = {"role": "assistant", "content": content}
    if reasoning is not None:
        msg["reasoning_content"] = reasoning
    out = {"choices": [{"index": 0, "message": msg, "finish_reason": finish}]}
    if usage:
        out["usage"] = {"prompt_tokens": 10, "completion_tokens": 20}
    return json.dumps(out)
