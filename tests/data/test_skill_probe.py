"""The per-domain skill probe: the pre-training gate's score, split by domain, with what the model writes."""
import pytest

from components.config import load_config
from components.data.base_model import probe_questions, textbook_document, textbook_probe
from components.data.base_release import release_dir
from components.data.skill_probe import SkillReport, final_answer, probe_model_dir, probe_skills
from components.modeling import load_model
from tests.conftest import REPO


def test_the_final_answer_is_read_as_the_gate_reads_it():
    assert final_answer("step 1\nAnswer: 42\nProblem: What is 1 + 1?") == "42"
    assert final_answer("Answer: 7Problem: next") == "7"
    assert final_answer("1111111") is None


@pytest.fixture(scope="module")
def release():
    """The shipped base model (it has the skill) and eight fresh probe questions, two per domain."""
    cfg = load_config(REPO / "params.yaml", "tiny")
    fresh = cfg.pretrain.model_copy(update={"seed": cfg.pretrain.seed + 29, "probe_questions": 8})
    questions = probe_questions(fresh, cfg.pool.domains, cfg.pool.min_difficulty, cfg.pool.max_difficulty, corpus=[])
    model, tokenizer = load_model(release_dir(cfg.pretrain))
    return model, tokenizer, questions, cfg.pool.domains


def test_per_domain_scores_agree_with_the_gate(release):
    """The mean is the gate's ``mean`` score, the weakest domain its ``every_domain`` score, on the same model."""
    model, tokenizer, questions, domains = release
    report = probe_skills(model, tokenizer, questions)
    assert set(report.accuracy) == set(domains) and report.questions == len(questions)
    longest = max(len(tokenizer(textbook_document(q))["input_ids"]) for q in questions)
    assert report.mean == pytest.approx(textbook_probe(tokenizer, questions, longest + 8)(model))
    assert report.lowest == pytest.approx(textbook_probe(tokenizer, questions, longest + 8, every_domain=True)(model))
    assert report.mean > 0  # the release has the skill: the probe reads its answers
    for domain, sample in report.samples.items():
        assert sample["question"] in questions and sample["completion"]
        assert (sample["got"] == sample["expected"]) == (report.accuracy[domain] == 1.0)  # a wrong one when any


def test_a_model_directory_and_a_summary_give_the_same_report(release, tmp_path):
    model, tokenizer, questions, _ = release
    cfg = load_config(REPO / "params.yaml", "tiny")
    report = probe_model_dir(release_dir(cfg.pretrain), questions[:4])
    assert report == probe_skills(model, tokenizer, questions[:4])
    assert SkillReport.from_dict(report.as_dict()) == report
    text = report.describe()
    assert text.startswith("per domain: ") and all(f"{d}: {s['question']!r}" in text for d, s in report.samples.items())


def test_no_questions_is_an_error(release):
    model, tokenizer, _, _ = release
    with pytest.raises(ValueError, match="at least one question"):
        probe_skills(model, tokenizer, [])
