"""Prefect flows and the ``s1flow`` command line.

Importing this package first switches other libraries' progress bars off when stderr is not a
terminal (before Prefect or Hugging Face import tqdm): logs get plain lines only
(components/common/progress.py).
"""
from components.common.progress import quiet_foreign_bars

quiet_foreign_bars()
