"""The rehearsal's pool reaches the filter with rows whose reference is a whole solution, as s1's pool does."""
from collections import Counter

from components.config import load_config
from components.data.pool_sources import row_to_question
from infra.rehearsal.inputs import SOLUTION_SOURCES, pool_rows
from tests.conftest import REPO


def test_the_rehearsal_pool_has_solution_references_for_the_judge():
    src = load_config(REPO / "params.yaml", "s1-32b-rehearsal").pool.sources[0]
    questions = [row_to_question(row, i, src) for i, row in enumerate(pool_rows(96))]
    assert not [q for q in questions if isinstance(q, str)]  # nothing quarantined
    formats = Counter((q.metadata["source_type"] in SOLUTION_SOURCES, q.metadata.get("answer_format", "short"))
                      for q in questions)
    assert formats == {(False, "short"): 84, (True, "solution"): 12}
