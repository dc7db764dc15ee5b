"""Test-time scaling methods as objects (:mod:`.base`), one module each, found by name in :mod:`.registry`.

Sequential control: ``budget_forcing`` (s1), ``wait_extension``, ``token_conditional``, ``step_conditional``,
``class_conditional``, ``rejection_sampling``, ``early_exit`` (answer convergence), ``confidence_exit``
(trial-answer confidence at transitions), ``scheduled_waits`` (waits before a moment, then the end of thinking).
Parallel: ``majority_voting``, ``shortest_majority``. Search: ``rebase``. Every method reports the compute it
spent per question on one axis (thinking tokens, parallel samples and expanded nodes summed, probes included).
"""
