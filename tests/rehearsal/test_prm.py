"""The rehearsal's PRM: a local directory that REBASE's Qwen2.5-Math-PRM loader reads by its name."""
from components.inference.rebase import QwenMathPRM, build_reward, release_reward
from infra.rehearsal.inputs import PRM_DIR
from infra.rehearsal.prm import SEPARATOR, make_prm
from tests.conftest import REPO


def test_the_local_prm_loads_by_name_through_the_qwen_math_prm_path(tmp_path):
    path = str(make_prm(REPO / "releases/tiny-base", tmp_path / PRM_DIR))
    try:
        reward = build_reward(path, recipe="qwen_math_prm", trust_remote_code=True)  # as the rehearsal's params
        assert isinstance(reward, QwenMathPRM)  # remote code, <extra_0> steps: s1-32b's loader, not a stand-in
        assert len(reward.tokenizer.encode(SEPARATOR)) == 1
        score = reward.score("What is 2 + 3?", ["2 + 3 = 5", "so the answer is 5"])
        assert 0.0 <= score <= 1.0 and reward.score("What is 2 + 3?", []) == 0.5
    finally:
        release_reward(path)
