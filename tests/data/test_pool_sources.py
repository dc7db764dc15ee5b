"""Pool sources: JSONL / Parquet / HF rows onto one schema; bad rows quarantined; duplicates dropped."""
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.config import ConfigError, PoolConfig, PoolSource, parse_profile
from components.data import pool_sources
from components.data.pool_sources import load_pool, normalised_hash

EVAL = Path(__file__).resolve().parents[1] / "fixtures/eval"


def test_normalised_hash_ignores_case_width_and_spacing():
    assert normalised_hash("What is  2+2?\n") == normalised_hash("what is 2+2?") == normalised_hash("ＷＨＡＴ is 2+2?")
    assert normalised_hash("What is 2+3?") != normalised_hash("What is 2+2?")


def test_jsonl_and_parquet_rows_are_checked_quarantined_and_deduplicated(tmp_path):
    rows = [{"id": 1, "problem": "Find x if x+1=3.", "solution": "x = \\boxed{2}"},
            {"id": 2, "problem": "", "solution": "\\boxed{1}"},                  # empty question
            {"id": 3, "problem": "What is 7*6?", "solution": "forty-two"},        # no boxed answer
            {"id": 4, "problem": "FIND X  if x+1=3.", "solution": "\\boxed{2}"},  # duplicate text
            {"id": 5, "problem": "What is 7*6?", "solution": "It is \\boxed{42}."}]
    jl = tmp_path / "a.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    pq.write_table(pa.Table.from_pylist([{"q": "How many primes are below 10?", "a": 4},
                                         {"q": "What is 7*6?", "a": 42},             # dup across sources
                                         {"q": "Sum of 1..10?", "a": None}]), tmp_path / "b.parquet")
    cfg = PoolConfig(sources=[
        PoolSource(kind="jsonl", path=str(jl), name="numina", id_field="id", question_field="problem",
                   answer_field="solution", answer_extract="boxed"),
        PoolSource(kind="parquet", path=str(tmp_path), name="olympiad", question_field="q", answer_field="a")])
    result = load_pool(cfg)
    assert [(q.id, q.answer) for q in result.questions] == [("numina-1", "2"), ("numina-5", "42"), ("olympiad-0000000", "4")]
    reasons = [r["reason"] for r in result.quarantined]
    assert reasons[0] == "field 'problem' missing or not non-empty text"
    assert reasons[1] == "field 'solution' missing or empty (no \\boxed{} in it)"
    assert reasons[2].startswith("not valid JSON") and reasons[3] == "field 'a' missing or empty"
    assert result.report["duplicates"] == 2 and result.report["quarantined"] == 4
    assert result.report["sources"]["numina"] == {"rows": 6, "quarantined": 3, "duplicates": 1, "kept": 2}


def test_hf_source_goes_through_the_same_mapping(monkeypatch):
    seen = {}

    def fake_hf(src):
        seen["args"] = (src.name, src.config, src.split)
        yield {"Question": "Find the number of ordered pairs (m, n) with m+n=5.", "Answer": 6, "ID": "1983-1"}
    monkeypatch.setitem(pool_sources.ROW_READERS, "hf", fake_hf)
    cfg = PoolConfig(sources=[PoolSource(kind="hf", name="gneubig/aime-1983-2024", question_field="Question",
                                         answer_field="Answer", id_field="ID")])
    (q,) = load_pool(cfg).questions
    assert seen["args"] == ("gneubig/aime-1983-2024", None, "train")
    assert (q.id, q.answer, q.source) == ("gneubig/aime-1983-2024-1983-1", "6", "gneubig/aime-1983-2024")


def test_real_eval_files_load_as_a_pool_source():
    files = sorted(EVAL.glob("*.jsonl"))
    assert [f.name for f in files[:1]] == ["aime24.jsonl"]
    first = json.loads(files[0].read_text().splitlines()[0])
    qf = "problem" if "problem" in first else "question"
    result = load_pool(PoolConfig(sources=[PoolSource(kind="jsonl", path=str(files[0]), question_field=qf)]))
    assert result.questions and not result.quarantined


def test_aime_rows_after_max_year_are_excluded_and_bare_integers_kept(monkeypatch):
    rows = [{"ID": "2021-I-1", "Year": 2021, "Question": "Find the number of ways one can tile a strip.", "Answer": 6},
            {"ID": "2022-I-2", "Year": "2022", "Question": "Find the least odd prime factor of 2019^8+1.", "Answer": 97},
            {"ID": "2024-I-1", "Year": 2024, "Question": "Every morning Aya goes for a walk.", "Answer": 204},
            {"ID": "x", "Question": "A row without a year.", "Answer": 1}]
    monkeypatch.setitem(pool_sources.ROW_READERS, "hf", lambda src: iter(rows))
    cfg = PoolConfig(sources=[PoolSource(kind="hf", name="gneubig/aime-1983-2024", question_field="Question",
                                         answer_field="Answer", id_field="ID", max_year=2022)])
    result = load_pool(cfg)
    assert [str(q.metadata["Year"]) for q in result.questions] == ["2021", "2022"]
    assert result.report["sources"]["gneubig/aime-1983-2024"]["excluded"] == 1
    assert [r["reason"] for r in result.quarantined] == ["field 'Year' missing or not a year (max_year filter)"]
    # a solution field with no \boxed{} that is a bare integer is the answer (AIME rows in s1's 59K)
    rows[:] = [{"question": "What is 6*7?", "solution": " 42 "}, {"question": "What is 1/2+1/2?", "solution": "one"}]
    boxed = PoolConfig(sources=[PoolSource(kind="hf", name="s", question_field="question", answer_field="solution",
                                           answer_extract="boxed")])
    result = load_pool(boxed)
    assert [q.answer for q in result.questions] == ["42"] and len(result.quarantined) == 1


def test_s1_32b_keeps_aime_up_to_2022():
    from components.config import load_config
    cfg = load_config(Path(__file__).resolve().parents[2] / "params.yaml", profile="s1-32b")
    aime = [s for s in cfg.pool.sources if "aime" in s.name.lower()]
    assert aime and all(s.max_year == 2022 for s in aime)


def test_source_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"tiny.pool.sources.0.path: a jsonl source needs path"):
        parse_profile({"pool": {"sources": [{"kind": "jsonl"}]}}, "tiny")
    with pytest.raises(ConfigError, match=r"tiny.pool.sources: list at least one source"):
        parse_profile({"pool": {"sources": []}}, "tiny")
    with pytest.raises(FileNotFoundError, match="pool.sources: /nope.jsonl not found"):
        load_pool(PoolConfig(sources=[PoolSource(kind="jsonl", path="/nope.jsonl")]))


def test_procedural_mix_follows_each_sources_size_difficulty_and_domain_weights():
    from collections import Counter

    from components.data.pool import generate_pool
    cfg = PoolConfig(malformed_fraction=0.0, sources=[
        PoolSource(name="easy-big", size=800, min_difficulty=1, max_difficulty=2,
                   domain_weights={"arithmetic": 0.8, "algebra": 0.2}),
        PoolSource(name="hard", size=200, min_difficulty=5, max_difficulty=6)])
    qs = generate_pool(cfg)
    by_source = Counter(q.source for q in qs)
    assert by_source == {"easy-big": 800, "hard": 200}
    easy = [q for q in qs if q.source == "easy-big"]
    assert {q.difficulty for q in easy} == {1, 2}
    assert {q.domain for q in easy} == {"arithmetic", "algebra"}
    assert 0.72 < Counter(q.domain for q in easy)["arithmetic"] / 800 < 0.88
    hard = [q for q in qs if q.source == "hard"]
    assert {q.difficulty for q in hard} == {5, 6} and len({q.domain for q in hard}) == 4
    assert len({q.id for q in qs}) == 1000  # ids carry the source name


def test_procedural_only_keys_and_names_are_checked_with_the_field_named():
    with pytest.raises(ValueError, match="domain_weights: only procedural"):
        PoolSource(kind="hf", name="x/y", domain_weights={"algebra": 1})
    with pytest.raises(ValueError, match="domain_weights: domain"):
        PoolConfig(sources=[PoolSource(domain_weights={"geometry": 1})])
    with pytest.raises(ValueError, match="distinct names"):
        PoolConfig(sources=[PoolSource(name="a"), PoolSource(name="a")])


def test_heldout_is_balanced_over_domains_and_difficulties():
    from collections import Counter

    from components.data.pool import generate_heldout
    held = generate_heldout(6, 200, ["arithmetic", "algebra", "number_theory", "combinatorics"], 3, 6)
    cells = Counter((q.domain, q.difficulty) for q in held)
    assert len(cells) == 16 and set(cells.values()) <= {12, 13}


S1_ROWS = [  # rows as simplescaling/data_ablation_full59K carries them (question, solution, source_type, ...)
    {"question": "Find the remainder when 2^10 is divided by 7.", "solution": "2^10 = 1024 = 7*146 + 2, so \\boxed{2}.",
     "cot_type": "math", "source_type": "qfq/openaimath/Number Theory"},
    {"question": "Which gas is produced when zinc reacts with HCl?\n(A) O2 (B) H2 (C) Cl2 (D) N2",
     "solution": "Zinc displaces hydrogen from the acid: Zn + 2HCl -> ZnCl2 + H2, so hydrogen gas.",
     "cot_type": "science", "source_type": "Idavidrein/gpqa"},
    {"question": "Solve the crossword clue: Feline (3)", "solution": "CAT", "cot_type": "crossword",
     "source_type": "0xharib/xword1"},
    {"question": "Find N such that ... (AIME 1999 #3)", "solution": "21", "cot_type": "math",
     "source_type": "qq8933/AIME_1983_2024"},
]


def test_s1_pool_rows_without_a_boxed_answer_keep_their_solution_as_the_reference(tmp_path):
    """GPQA explanations, crossword and other rows without \\boxed{} are s1's pool too: kept (with the whole
    solution as the reference, marked for the judge), not quarantined; boxed and bare-integer rows keep the
    short answer."""
    path = tmp_path / "s1.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in S1_ROWS))
    src = dict(kind="jsonl", path=str(path), name="s1", answer_field="solution")
    boxed = load_pool(PoolConfig(sources=[PoolSource(**src, answer_extract="boxed")]))
    assert len(boxed.questions) == 2 and len(boxed.quarantined) == 2
    kept = load_pool(PoolConfig(sources=[PoolSource(**src, answer_extract="boxed_or_solution")]))
    assert not kept.quarantined
    by_type = {q.metadata["source_type"]: q for q in kept.questions}
    assert by_type["qfq/openaimath/Number Theory"].answer == "2" and by_type["qq8933/AIME_1983_2024"].answer == "21"
    gpqa = by_type["Idavidrein/gpqa"]
    assert gpqa.answer.startswith("Zinc displaces") and gpqa.metadata["answer_format"] == "solution"
    assert by_type["0xharib/xword1"].answer == "CAT" and by_type["0xharib/xword1"].metadata["answer_format"] == "solution"
    assert "answer_format" not in by_type["qq8933/AIME_1983_2024"].metadata


def _numina(tmp_path, n=200):
    rows = [{"problem": f"Problem {i}: compute {i} + 1.", "solution": f"\\boxed{{{i + 1}}}",
             "source": "aops_forum" if i % 10 == 0 else ("amc_aime" if i % 10 == 1 else "cn_k12")} for i in range(n)]
    path = tmp_path / "numina.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return dict(kind="jsonl", path=str(path), name="AI-MO/NuminaMath-CoT", question_field="problem",
                answer_field="solution", answer_extract="boxed")


def test_a_source_filtered_by_field_and_sampled_with_a_seed(tmp_path):
    """s1's NuminaMath: the aops_forum rows whole plus a seeded sample of the rest (not the first rows); two
    entries of one dataset never collide on ids, and the report names each."""
    base = _numina(tmp_path)
    cfg = PoolConfig(sources=[PoolSource(**base, where={"source": "aops_forum"}),
                              PoolSource(**base, exclude={"source": "aops_forum"}, sample=30, sample_seed=7)])
    result = load_pool(cfg)
    aops = [q for q in result.questions if q.metadata["source"] == "aops_forum"]
    rest = [q for q in result.questions if q.metadata["source"] != "aops_forum"]
    assert len(aops) == 20 and len(rest) == 30 and not result.quarantined
    numbers = [int(q.id.rsplit("-", 1)[1]) for q in rest]
    assert numbers == sorted(numbers) and max(numbers) > 100  # spread over the dataset, in dataset order
    again = load_pool(cfg)
    assert [q.id for q in again.questions] == [q.id for q in result.questions]  # the seed fixes the sample
    other = load_pool(PoolConfig(sources=[PoolSource(**base, exclude={"source": "aops_forum"}, sample=30, sample_seed=8)]))
    assert {q.id for q in other.questions} != {q.id for q in rest}
    assert sorted(result.report["sources"]) == [
        'AI-MO/NuminaMath-CoT (exclude {"source": ["aops_forum"]}, sample 30 (seed 7))',
        'AI-MO/NuminaMath-CoT (where {"source": ["aops_forum"]})']
    with pytest.raises(ValueError, match="sample: give sample"):
        PoolSource(**base, sample=3, limit=3)


def test_an_hf_source_reads_its_pinned_commit_and_refuses_without_one(monkeypatch):
    import datasets
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **kw: calls.append((a, kw)) or [])
    sha = "9d8d210c9f6a36c8f3cd84045668c9b7800ef517"
    list(pool_sources._hf_rows(PoolSource(kind="hf", name="AI-MO/NuminaMath-CoT", revision=sha)))
    assert calls == [(("AI-MO/NuminaMath-CoT", None), {"split": "train", "revision": sha})]
    with pytest.raises(ValueError, match=r"pool.sources: AI-MO/NuminaMath-CoT has no revision"):
        list(pool_sources._hf_rows(PoolSource(kind="hf", name="AI-MO/NuminaMath-CoT")))
    assert len(calls) == 1


def test_a_revision_must_be_a_commit_not_a_branch():
    with pytest.raises(ConfigError, match=r"pool.sources.0.revision: 'main' is not a commit"):
        parse_profile({"pool": {"sources": [{"kind": "hf", "name": "a/b", "revision": "main"}]}}, "tiny")


def test_a_published_trace_rides_with_its_question_and_a_list_trace_is_joined(tmp_path):
    """s1K-1.1 ships DeepSeek-R1's trace and attempt per row (text); s1K shipped thinking_trajectories as a list.
    Either reaches distill in metadata.published_trace, kept out of the short metadata; an empty one is none."""
    from components.records import PUBLISHED_TRACE, published_trace
    src = PoolSource(kind="jsonl", path="x.jsonl", name="s1k", question_field="question", answer_field="solution",
                     answer_extract="boxed", thinking_field="thinking", attempt_field="attempt", trace_teacher="r1")
    q = pool_sources.row_to_question({"question": "Q1?", "solution": "so \\boxed{5}", "thinking": "Let me see.",
                                      "attempt": "It is 5."}, 0, src)
    assert q.answer == "5" and set(q.metadata) == {PUBLISHED_TRACE}
    t = published_trace(q)
    assert (t.question_id, t.teacher, t.thinking, t.answer, t.attempts) == ("s1k-0000000", "r1", "Let me see.",
                                                                            "It is 5.", 0)
    listed = pool_sources.row_to_question({"question": "Q2?", "solution": "\\boxed{1}", "thinking": ["a", "b "],
                                           "attempt": "1"}, 1, src)
    assert published_trace(listed).thinking == "a\nb"
    empty = pool_sources.row_to_question({"question": "Q3?", "solution": "\\boxed{1}", "thinking": "  ",
                                          "attempt": ""}, 2, src)
    assert published_trace(empty) is None and PUBLISHED_TRACE not in empty.metadata


@pytest.mark.parametrize("source,match", [
    ({"kind": "procedural", "thinking_field": "t"}, "thinking_field: a procedural source has no published traces"),
    ({"kind": "jsonl", "path": "x", "attempt_field": "a"}, "attempt_field: describes the published traces"),
    ({"kind": "jsonl", "path": "x", "trace_teacher": "r1"}, "trace_teacher: describes the published traces"),
])
def test_published_trace_fields_are_checked(source, match):
    with pytest.raises(ConfigError, match=match):
        parse_profile({"pool": {"sources": [source]}}, "tiny")
