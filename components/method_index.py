"""The names of the test-time methods and the class implementing each (imported only when a method is built,
by :mod:`components.inference.methods.registry`). The config checks method names against it without importing
any method."""
from __future__ import annotations

METHODS: dict[str, str] = {
    "budget_forcing": "components.inference.methods.budget_forcing:BudgetForcing",
    "wait_extension": "components.inference.methods.wait_extension:WaitExtension",
    "token_conditional": "components.inference.methods.prompt_conditioned:TokenConditional",
    "step_conditional": "components.inference.methods.prompt_conditioned:StepConditional",
    "class_conditional": "components.inference.methods.prompt_conditioned:ClassConditional",
    "rejection_sampling": "components.inference.methods.rejection_sampling:RejectionSampling",
    "majority_voting": "components.inference.methods.voting:MajorityVoting",
    "shortest_majority": "components.inference.methods.shortest_majority:ShortestMajority",
    "rebase": "components.inference.methods.rebase:RebaseSearch",
    "early_exit": "components.inference.methods.early_exit:EarlyExit",
    "confidence_exit": "components.inference.methods.confidence_exit:ConfidenceExit",
    "scheduled_waits": "components.inference.methods.scheduled_waits:ScheduledWaits",
}
REFERENCE = "budget_forcing"  # the method of the no-budget reference run and of the served default

# The methods a request to the server may name (components/serving/methods.py). Each runs on the prompt the server
# renders and takes its sweep value from the request (a thinking budget, or n for a vote). REBASE needs a process
# reward model and the prompt-conditioned baselines write their own prompts: they stay evaluation methods.
SERVED: tuple[str, ...] = (REFERENCE, "majority_voting", "shortest_majority", "scheduled_waits", "early_exit",
                           "confidence_exit")
AUTO = "early_exit"  # the method behind a request's ``budget: "auto"``: the stop chosen by answer convergence

LABEL_NAME = {"B=": "budget", "N=": "N samples", "w=": "width", "W=": "waits"}  # a method's value_label, in words


def value_name(method_report: dict) -> str:
    """What a method's sweep varies, in words, from its report (its ``value_label``; a thinking budget when it
    gives none). Here, not in the results page's module, so the flow's artifacts read it without the evaluation."""
    label = method_report.get("value_label", "B=")
    return LABEL_NAME.get(label, label.rstrip("="))
