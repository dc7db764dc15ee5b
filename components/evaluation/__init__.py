"""Evaluation stage: in-process sweeps (``sweep``), sweeps against the Serve endpoint
(``client``), trustworthy scores (``scoring``) and the scaling plot (``plot``)."""
from components.evaluation.plot import plot_scaling
from components.evaluation.sweep import base_model_accuracy, evaluate_sweep, run_point, summarise, sweep

__all__ = ["base_model_accuracy", "evaluate_sweep", "plot_scaling", "run_point", "summarise", "sweep"]
