"""`s1flow validate`: params first, then what the profile needs where it runs (the preflight checks)."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from flows.cli import app

PARAMS = "params.yaml"


def _validate(*args: str):
    return CliRunner().invoke(app, ["validate", "--params", PARAMS, *args])


def test_the_tiny_profile_validates_and_can_run_here():
    result = _validate()
    assert result.exit_code == 0, result.output
    assert "can run here" in result.output


def test_validate_names_the_missing_keys_of_a_profile_that_cannot_run_here(monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    result = _validate("--profile", "s1-32b")
    assert result.exit_code == 2
    assert "params OK" in result.output
    assert "teacher.api_key_env: environment variable GEMINI_API_KEY is not set" in result.output
    assert "domain.api_key_env: environment variable ANTHROPIC_API_KEY is not set" in result.output


def test_validate_checks_only_the_stages_asked_for(monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    result = _validate("--profile", "s1-32b", "--stage", "distill")
    assert result.exit_code == 2
    assert "GEMINI_API_KEY" in result.output and "ANTHROPIC_API_KEY" not in result.output
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    assert _validate("--profile", "s1-32b", "--stage", "distill").exit_code == 0


@pytest.mark.parametrize("profile", ["s1-32b", "s1.1-32b"])
def test_params_only_skips_the_machine_checks(monkeypatch, profile):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    result = _validate("--profile", profile, "--params-only")
    assert result.exit_code == 0 and "can run here" not in result.output


def test_s1_1_needs_no_teacher_key_while_it_reads_the_published_traces(monkeypatch):
    """s1.1-32b's traces come with its dataset: distill asks no one, so no key is demanded; re-distilling
    (teacher.use_published=false) needs DeepSeek's key."""
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    assert _validate("--profile", "s1.1-32b", "--stage", "distill").exit_code == 0
    result = _validate("--profile", "s1.1-32b", "--stage", "distill", "--set", "teacher.use_published=false")
    assert result.exit_code == 2 and "DEEPSEEK_API_KEY is not set" in result.output


def test_an_unknown_stage_is_named():
    result = _validate("--stage", "distil")
    assert result.exit_code == 2 and "--stage: unknown ['distil']" in result.output


def test_validate_names_the_hub_downloads_without_a_pinned_commit():
    result = _validate("--profile", "s1-32b", "--stage", "collect")
    assert result.exit_code == 2
    assert "pool.sources.0.revision" in result.output and "simplescaling/data_ablation_full59K" in result.output
