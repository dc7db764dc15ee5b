"""n-gram decontamination against crafted and real evaluation sets."""
import json
from pathlib import Path

from components.curation.decontamination import NgramIndex


def test_decontamination_8gram_and_exact():
    evals = ["Every morning Aya goes for a 9-kilometer-long walk and stops at a coffee shop afterwards.",
             "What is 1 + 1?"]
    index = NgramIndex.build(evals, n=8)
    # shares the 8-gram "aya goes for a 9 kilometer long walk", with different casing/punctuation
    assert index.contaminated("Each day, AYA goes for a 9 kilometer long walk; how far is it?")
    assert not index.contaminated("Each day Bob goes for a 9 kilometer long walk; how far is it?")
    assert index.contaminated("what is 1+1 ?")  # short text: exact match after normalisation
    assert not index.contaminated("What is 1 + 2?")


def test_decontamination_against_real_eval_sets(tmp_path):
    path = Path(__file__).resolve().parents[1] / "fixtures/eval/aime24.jsonl"
    rows = [json.loads(l) for l in path.open()]
    index = NgramIndex.build([r["problem"] for r in rows], n=8)
    leaked = "Rephrased: " + " ".join(rows[0]["problem"].split()[5:20])
    assert index.contaminated(leaked)
    assert not index.contaminated("What is the digit sum of 123456?")
