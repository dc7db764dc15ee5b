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


def test_an_eval_row_with_no_words_contaminates_nothing():
    """A row of symbols only (or in a script an ASCII tokenizer drops) must not match every question that
    shares its emptiness."""
    index = NgramIndex.build(["∑∫ ≠ √ ?!", "Сколько будет два плюс два?"], n=8)
    assert not index.contaminated("求正整数 n 使得 n² + 1 整除 n! 的最小值。")
    assert not index.contaminated("Найдите все натуральные n, при которых число n^2 + 1 делит n!.")
    assert not index.contaminated("求所有素数之和") and not index.contaminated("Найдите наибольшее простое число")
    assert not index.contaminated("!!!") and not index.contaminated("")


def test_non_latin_overlap_is_caught_by_words_or_by_characters():
    evals = ["Найдите наименьшее натуральное число, которое при делении на семь даёт остаток три.",
             "求所有满足方程 x² + y² = 2025 的正整数解的个数。",
             "नीचे दिए गए समीकरण का सबसे छोटा धनात्मक पूर्णांक हल ज्ञात कीजिए।"]
    index = NgramIndex.build(evals, n=8)
    assert index.contaminated("Задача: НАЙДИТЕ наименьшее натуральное число, которое при делении на семь даёт остаток пять")
    assert index.contaminated("请回答：求所有满足方程x²+y²=2025的正整数解")  # characters: the eval row has no spaces
    assert index.contaminated("प्रश्न: नीचे दिए गए समीकरण का सबसे छोटा धनात्मक पूर्णांक हल बताइए")  # words keep their vowel signs
    assert not index.contaminated("Найдите наибольшее простое число, меньшее ста.")
    assert not index.contaminated("求所有素数之和")
    assert not index.contaminated("नीचे दिए गए वाक्य का अनुवाद कीजिए।")
