"""REBASE (reward-balanced tree search, :mod:`components.inference.rebase`) as a method: its sweep values are
widths, finished leaves per question (``evaluate.methods.rebase.widths``); each branch thinks at most the engine's
cap; compute is every expanded node's thinking, pruned branches included. The process reward is found by name
(``reward``): a registered one (``programmatic``) or a model the evaluation loaded for the run
(:func:`components.inference.rebase.build_reward`, which loads it here if nothing did)."""
from __future__ import annotations

from typing import Literal, Optional, Sequence

from pydantic import Field, field_validator

from components.config import Revision
from components.inference.budget_forcing import ForcedResult
from components.inference.methods.base import Kind, Method, MethodSettings, ModelUse, Progress, positive_counts
from components.inference.rebase import RebaseSpec, build_reward, rebase, release_reward


class RebaseSettings(MethodSettings):
    widths: list[int] = Field(default_factory=lambda: [2, 4, 8], description="finished leaves per question swept")
    temperature: float = Field(0.2, gt=0, description="softmax temperature over the process rewards")
    vote: Literal["majority", "weighted"] = Field("weighted", description="the final vote over the leaves")
    step_tokens: int = Field(64, gt=0, description="most tokens per step (one line of thinking)")
    reward: str = Field("programmatic", min_length=1, description="the process reward: programmatic (the "
                        "procedural world's line checker) or a Hugging Face process reward model by name")
    reward_revision: Optional[Revision] = Field(None, description="reward given by hub id: the commit to download")
    reward_recipe: Literal["sequence_classification", "qwen_math_prm"] = Field(
        "sequence_classification", description="how a reward model scores a partial trace: sequence_classification "
        "(the last logit's sigmoid over question + steps) or qwen_math_prm (Qwen2.5-Math-PRM's <extra_0> step "
        "recipe; the model runs its repository's own code, so its name must be in evaluate.trust_remote_code)")
    reward_device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="where a reward model runs: "
                               "cpu, or cuda:N, a GPU of this process; on one of the in-process engine's GPUs "
                               "lower engine.gpu_memory_utilization to leave it room")

    @field_validator("widths")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        return positive_counts(v, "widths")


class RebaseSearch(Method):
    name = "rebase"
    samples_itself = True
    kind = Kind.SEARCH
    Settings = RebaseSettings
    value_label = "w="
    sweep_setting = "widths"
    budgeted = False

    @classmethod
    def problems(cls, settings: RebaseSettings, trusted: Sequence[str]) -> list[str]:
        if settings.reward_recipe == "qwen_math_prm" and settings.reward not in trusted:
            return [f"evaluate.trust_remote_code: evaluate.methods.rebase.reward_recipe qwen_math_prm runs the code of "
                    f"{settings.reward!r} (transformers has no class for it); add that name to "
                    "evaluate.trust_remote_code once its code at methods.rebase.reward_revision is reviewed, "
                    "or use reward_recipe: sequence_classification"]
        return []

    @classmethod
    def models(cls, settings: RebaseSettings) -> list[ModelUse]:
        s = settings
        return [ModelUse("reward", s.reward, s.reward_revision, s.reward_device)]

    def acquire(self) -> None:
        """The reward model loaded on its device (a registered reward is used as it is)."""
        self.reward()

    def release(self) -> None:
        release_reward(self.settings.reward)  # a registered reward stays registered

    def reward(self):
        s = self.settings
        return build_reward(s.reward, s.reward_device, revision=s.reward_revision, recipe=s.reward_recipe,
                            trust_remote_code=s.reward in self.trusted)

    def values(self) -> list[int]:
        return sorted(self.settings.widths)

    def spec(self, width: int, max_thinking_tokens: int) -> RebaseSpec:
        s, f = self.settings, self.forcing
        return RebaseSpec(width=width, temperature=s.temperature, sample_temperature=f.sample_temperature,
                          top_p=f.top_p, max_step_tokens=s.step_tokens, max_thinking_tokens=max_thinking_tokens,
                          max_answer_tokens=f.max_answer_tokens, vote=s.vote, seed=f.seed)

    def run(self, engine, questions: Sequence[str], value: Optional[int], progress: Progress = None
            ) -> list[ForcedResult]:
        out = rebase(engine, list(questions), self.spec(value, engine.unlimited), self.reward())
        if progress:
            progress(len(questions))
        return out

    def cost(self, questions: int, value: Optional[int]) -> int:
        return questions * (value or 1) * 2  # about twice as many nodes expanded as finished, on the demo
