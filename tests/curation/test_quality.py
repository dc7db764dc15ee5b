"""The quality filter on crafted rows."""
import pytest

from components.config import QualityConfig
from components.curation.quality import quality_reason
from tests.support.examples import ex


@pytest.mark.parametrize("row,reason", [
    (ex(), None),
    (ex(ok=False), "api_error"),
    (ex(thinking=""), "empty_trace"),
    (ex(answer=""), "truncated_trace"),
    (ex(question="As shown in the figure above, what is 12 + 30?"), "missing_figure"),
    (ex(question="Using the diagram below, find x. [asy] draw((0,0)--(1,1)); [/asy]"), "missing_figure"),
    (ex(question="+---+---+\n| 1 | 2 |\n+---+---+\nWhat is 12 + 30?"), "ascii_art"),
    (ex(question="(1) What is 1 + 2? (3) What is 3 + 4?"), "inconsistent_numbering"),
    (ex(question="(1) What is 1 + 2? (2) What is 3 + 4?"), None),
])
def test_quality_reasons(row, reason):
    assert quality_reason(row, QualityConfig()) == reason
