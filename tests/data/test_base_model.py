import pytest
import torch

from components.config import ModelConfig, PretrainConfig
from components.data.base_model import _packed_blocks, build_model, pretrain

MODEL = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
CFG = PretrainConfig(steps=6, batch_size=2, block_size=16, warmup_steps=1)


def _blocks():
    g = torch.Generator().manual_seed(0)
    return _packed_blocks([torch.randint(3, 100, (40,), generator=g).tolist() for _ in range(10)], 16, 0)


def test_pretraining_resumes_to_the_same_result(tmp_path):
    ckpt = tmp_path / "pretrain.ckpt"
    ref_model = build_model(MODEL, 100, 0, 2)
    ref = pretrain(ref_model, _blocks(), CFG)

    model = build_model(MODEL, 100, 0, 2)
    calls = {"n": 0}
    original = model.forward

    def dying_forward(*a, **kw):  # the process "dies" during step 5
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(*a, **kw)

    model.forward = dying_forward
    with pytest.raises(KeyboardInterrupt):
        pretrain(model, _blocks(), CFG, checkpoint=ckpt, checkpoint_every=2)
    assert ckpt.exists()

    resumed_model = build_model(MODEL, 100, 0, 2)
    resumed = pretrain(resumed_model, _blocks(), CFG, checkpoint=ckpt, checkpoint_every=2)
    assert resumed == pytest.approx(ref, rel=1e-5)
    for a, b in zip(ref_model.parameters(), resumed_model.parameters()):
        torch.testing.assert_close(a, b)


def test_checkpoint_from_other_settings_is_ignored(tmp_path):
    ckpt = tmp_path / "pretrain.ckpt"
    pretrain(build_model(MODEL, 100, 0, 2), _blocks(), CFG.model_copy(update={"steps": 5}), ckpt, 2)
    losses = pretrain(build_model(MODEL, 100, 0, 2), _blocks(), CFG, ckpt, 2)
    assert len(losses) == CFG.steps


WSD = CFG.model_copy(update={"steps": 30, "probe_every": 4, "cooldown_steps": 5, "probe_target": 0.5})


def _scripted_probe(values):
    calls = []

    def probe(model):
        calls.append(1)
        return values[min(len(calls), len(values)) - 1]
    return probe, calls


def test_pretraining_cools_down_and_stops_once_the_probe_passes():
    probe, calls = _scripted_probe([0.1, 0.2, 0.6])  # passes at the third probe: step 12
    hist: dict = {}
    losses = pretrain(build_model(MODEL, 100, 0, 2), _blocks(), WSD, probe=probe, history=hist)
    assert hist["probe_passed"] and hist["decay_start"] == 12 and len(calls) == 3
    assert [p[0] for p in hist["probes"]] == [4, 8, 12]
    assert len(losses) == 12 + 5 == hist["steps"]


def test_pretraining_cools_down_at_the_end_when_the_probe_never_passes():
    probe, _ = _scripted_probe([0.0])
    hist: dict = {}
    losses = pretrain(build_model(MODEL, 100, 0, 2), _blocks(), WSD, probe=probe, history=hist)
    assert not hist["probe_passed"] and hist["decay_start"] == 30 - 5 and len(losses) == 30


def test_a_resumed_run_keeps_the_probe_decision(tmp_path):
    ckpt = tmp_path / "pretrain.ckpt"
    ref = pretrain(build_model(MODEL, 100, 0, 2), _blocks(), WSD, probe=_scripted_probe([0.1, 0.6])[0])
    with pytest.raises(RuntimeError):  # killed after the probe passed, during the cool-down
        dies = _scripted_probe([0.1, 0.6])[0]
        original = torch.nn.utils.clip_grad_norm_
        count = {"n": 0}

        def boom(*a, **k):
            count["n"] += 1
            if count["n"] == 11:
                raise RuntimeError("killed")
            return original(*a, **k)
        torch.nn.utils.clip_grad_norm_ = boom
        try:
            pretrain(build_model(MODEL, 100, 0, 2), _blocks(), WSD, checkpoint=ckpt, checkpoint_every=2, probe=dies)
        finally:
            torch.nn.utils.clip_grad_norm_ = original
    never_called, calls = _scripted_probe([0.0])
    hist: dict = {}
    resumed = pretrain(build_model(MODEL, 100, 0, 2), _blocks(), WSD, checkpoint=ckpt, checkpoint_every=2,
                       probe=never_called, history=hist)
    assert not calls and hist["decay_start"] == 8  # the decision taken before the kill stands
    assert resumed == pytest.approx(ref, rel=1e-5)


def test_difficulty_is_recovered_from_the_text_and_gates_direct_answers():
    import random

    from components.data.base_model import _answers_directly
    from components.data.problems import FAMILIES
    rng = random.Random(0)
    easy_only = CFG.model_copy(update={"direct_answer_max_difficulty": 2})
    for fam in FAMILIES.values():
        for d in range(1, 7):
            p = fam.generate(rng, d)
            assert fam.difficulty_of(fam.parse(p.text)) == d
            assert _answers_directly(p.text, easy_only) == (d <= 2)
            assert _answers_directly(p.text, CFG)


def _scripted_model(tokenizer, completions):
    """Stands in for a model's greedy decoding: appends the given completion to each prompt row."""
    class Scripted:
        def eval(self):
            return self

        def generate(self, input_ids, **_):
            rows = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in completions]
            width = max(map(len, rows))
            tail = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
            return torch.cat([input_ids, tail], dim=1)
    return Scripted()


def test_the_every_domain_probe_is_held_by_the_weakest_domain():
    from transformers import AutoTokenizer

    from components.data.base_model import probe_questions, textbook_probe
    from components.data.base_release import REPO
    from components.data.problems import parse_any
    tokenizer = AutoTokenizer.from_pretrained(REPO / "releases" / "tiny-base")
    questions = probe_questions(PretrainConfig(probe_questions=8), ["arithmetic", "algebra", "number_theory",
                                                                     "combinatorics"], 3, 6, corpus=[])
    parsed = [parse_any(q) for q in questions]
    completions = [f"Answer: {fam.solve(*ops) + (1 if fam.domain == 'number_theory' else 0)}\n" for fam, ops in parsed]
    model = _scripted_model(tokenizer, completions)
    assert textbook_probe(tokenizer, questions, 8)(model) == 0.75       # 6 of 8 right
    assert textbook_probe(tokenizer, questions, 8, every_domain=True)(model) == 0.0  # the digit sums all wrong


def test_textbook_solutions_slip_and_correct_themselves_at_the_given_rate():
    import random

    from components.data.base_model import textbook_document
    from components.data.problems import RECHECK
    q = "What is 4711 + 5826?"
    assert textbook_document(q, random.Random(0), 0.0) == textbook_document(q)
    lines = textbook_document(q, random.Random(0), 1.0).splitlines()
    plain = textbook_document(q).splitlines()
    (i,) = [k for k, line in enumerate(lines) if line.startswith(RECHECK)]
    assert lines[i][len(RECHECK):] == plain[i - 1]                        # the re-check writes the step right
    assert lines[i - 1] != plain[i - 1] and lines[i - 1].split("=")[0] == plain[i - 1].split("=")[0]  # the slip
    assert lines[:i - 1] + [lines[i][len(RECHECK):]] + lines[i + 1:] == plain  # nothing else changes
    docs = [textbook_document(q, rng, 0.15) for rng in [random.Random(0)] for _ in range(400)]
    assert 0.1 < sum(RECHECK in d for d in docs) / len(docs) < 0.2


def test_chat_solutions_show_the_work_on_the_harder_questions_only():
    import random
    from collections import Counter

    from transformers import AutoTokenizer

    from components.data.base_model import corpus_documents, corpus_questions, textbook_document
    from components.data.base_release import REPO
    from components.data.problems import parse_any
    tokenizer = AutoTokenizer.from_pretrained(REPO / "releases" / "tiny-base")
    cfg = PretrainConfig(documents=600, direct_answer_fraction=0.45, direct_answer_max_difficulty=2, copy_fraction=0.5)
    corpus = corpus_questions(cfg, ["arithmetic", "algebra", "number_theory", "combinatorics"], 1, 6)
    textbook = [textbook_document(q) for q, _ in corpus]
    plain = corpus_documents(corpus, textbook, cfg, tokenizer, random.Random(0))
    mixed = corpus_documents(corpus, textbook, cfg.model_copy(update={"chat_solution_fraction": 0.3}), tokenizer,
                             random.Random(0))
    assert len(mixed) == len(plain) == 900                                # 600 questions + 300 copy drills
    replies = [d for d in mixed if "<|im_start|>assistant\n" in d                  # worked chat replies
               and not d.split("<|im_start|>assistant\n", 1)[1].startswith("Answer: ")]
    assert replies and not set(replies) & set(plain)
    hard = [q for q, _ in corpus if parse_any(q)[0].difficulty_of(parse_any(q)[1]) > 2]
    assert 0.2 < len(replies) / len(hard) < 0.4
    asked = []
    for doc in replies:
        question = doc.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
        family, ops = parse_any(question)
        assert family.difficulty_of(ops) > 2                              # easy questions keep their direct answers
        solution = textbook_document(question).split("Solution:\n", 1)[1]
        assert doc.split("<|im_start|>assistant\n", 1)[1] == f"{solution}<|im_end|>\n"
        asked.append(f"Problem: {question}\nSolution:\n{solution}")
    # the replies stand in for their questions' textbook pages; every other document is unchanged
    rest = Counter(d for d in mixed if d not in replies)
    assert not rest - Counter(plain)
    assert Counter(plain) - rest == Counter(asked)


def test_whole_documents_never_straddle_two_rows_and_the_filler_trains_nothing():
    from components.data.base_model import block_labels
    g = torch.Generator().manual_seed(1)
    docs = [torch.randint(3, 100, (int(n),), generator=g).tolist()
            for n in torch.randint(1, 15, (60,), generator=g)]
    rows = _packed_blocks(docs, 16, 0)
    assert rows.shape[1] == 16
    found = []
    for row in rows.tolist():
        assert row[0] != 0  # a row starts with a document
        pieces = [p for p in " ".join(map(str, row)).split(" 0") if p.strip()]
        found += [[int(t) for t in p.split()] for p in pieces]
    assert sorted(found) == sorted(docs)  # every document whole, once, in one row
    filler = int((rows == 0).sum()) - len(docs)  # separators beyond one per document
    assert filler < rows.numel() * 0.15
    labels = block_labels(rows, 0)
    assert int((labels == -100).sum()) == filler
    assert int((labels == 0).sum()) == len(docs)  # each document still learns to end


def test_the_stream_packing_cuts_every_block_tokens():
    docs = [[5] * 10, [6] * 10, [7] * 10]
    rows = _packed_blocks(docs, 8, 0, whole=False)
    assert rows.shape == (4, 8)
    assert rows.flatten().tolist() == ([5] * 10 + [0] + [6] * 10 + [0] + [7] * 10 + [0])[:32]


def test_a_document_longer_than_a_row_is_cut_into_rows():
    rows = _packed_blocks([[5] * 20, [6] * 3], 8, 0)
    flat = [t for r in rows.tolist() for t in r]
    assert flat.count(5) == 20 and flat.count(6) == 3


def test_the_filler_adds_nothing_to_the_loss():
    from components.data.base_model import block_labels
    model = build_model(MODEL, 100, 0, 2).eval()
    doc = torch.randint(3, 100, (1, 9), generator=torch.Generator().manual_seed(2))
    alone = torch.cat([doc, torch.zeros(1, 1, dtype=torch.long)], 1)         # the document and its separator
    padded = torch.cat([alone, torch.zeros(1, 6, dtype=torch.long)], 1)      # then filler to the row's end
    with torch.no_grad():
        a = model(input_ids=alone, labels=block_labels(alone, 0)).loss
        b = model(input_ids=padded, labels=block_labels(padded, 0)).loss
    torch.testing.assert_close(a, b)


def test_running_sum_drills_are_right_facts_in_the_digit_sum_traces_shape():
    import random
    import re

    from components.data.base_model import running_sum_drill
    rng, from_one_digit = random.Random(0), 0
    for _ in range(200):
        head, *lines = running_sum_drill(rng).split("\n")
        assert head == "Running sum:" and 4 <= len(lines) <= 8
        total = None
        for line in lines:
            a, d, s = map(int, re.fullmatch(r"(\d+)\+(\d)=(\d+)", line).groups())
            assert a + d == s and (total is None or a == total)  # the total carried on
            if total is None:
                assert a <= 40
                from_one_digit += a < 10
            total = s
    # about half start from one digit, as every digit sum does (its opening facts: "1+5=6")
    assert 80 <= from_one_digit <= 120


def test_copy_and_extraction_drills_reach_the_corpus_s_longest_number():
    import random
    import re

    from components.config import PretrainConfig
    from components.data.base_model import corpus_documents, longest_number
    corpus = [("What is the digit sum of 12345678?", "36"), ("What is 12 + 3?", "15")]
    assert longest_number(corpus) == 8 and longest_number([]) == 7
    cfg = PretrainConfig(copy_fraction=1, extraction_fraction=1, running_sum_fraction=0,
                         chat_solution_fraction=0, direct_answer_fraction=0)
    docs = corpus_documents(corpus * 200, [f"Problem: {q}" for q, _ in corpus] * 200, cfg, None, random.Random(0))
    lengths = {len(n) for d in docs if d.startswith(("Copy:", "Text:")) for n in re.findall(r"\d+", d)}
    assert max(lengths) == 8 and 1 in lengths


def test_the_drills_are_added_per_corpus_question_each_from_its_own_rng():
    import random

    from components.config import PretrainConfig
    from components.data.base_model import corpus_documents
    corpus = [(f"What is {i} + 1?", str(i + 1)) for i in range(200)]
    textbook = [f"Problem: {q}\nSolution:\nAnswer: {a}" for q, a in corpus]
    base = PretrainConfig(copy_fraction=0.5, direct_answer_fraction=0.0)  # textbook pages and drills only

    def docs(cfg):
        return corpus_documents(corpus, textbook, cfg, None, random.Random(0))
    without = docs(base)
    with_sums = docs(base.model_copy(update={"running_sum_fraction": 0.25}))
    assert sum(d.startswith("Running sum:") for d in with_sums) == 50
    assert sorted(d for d in with_sums if not d.startswith("Running sum:")) == sorted(without)
    with_extractions = docs(base.model_copy(update={"running_sum_fraction": 0.25, "extraction_fraction": 0.5}))
    assert sum(d.startswith("Text: ") for d in with_extractions) == 100
    assert sorted(d for d in with_extractions if not d.startswith("Text: ")) == sorted(with_sums)


def test_extraction_drills_copy_each_number_out_of_its_sentence_in_order():
    import random
    import re

    from components.data.base_model import extraction_drill
    rng, same_length = random.Random(0), 0
    for _ in range(300):
        text, numbers = extraction_drill(rng).split("\n")
        assert text.startswith("Text: ") and numbers.startswith("Numbers: ")
        written = re.findall(r"\d+", text)
        assert numbers == "Numbers: " + " + ".join(written) and 2 <= len(written) <= 3
        # no number is followed in the sentence by what follows it in the copy
        assert not re.search(r"\d \+ ", text)
        same_length += len({len(n) for n in written}) == 1
    assert same_length > 100  # a third or more: numbers alike in length, told apart by their place alone


def test_the_weight_average_warms_up_and_is_put_back_after_the_probe():
    from components.data.base_model import WeightAverage
    model = build_model(MODEL, 100, 0, 2)
    first = {k: v.clone() for k, v in model.state_dict().items()}
    average = WeightAverage(model, 0.99)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    average.update(model)  # decay min(0.99, 2 / 11): the average moves most of the way at once
    key = "model.norm.weight"
    torch.testing.assert_close(average.shadow[key], first[key] + 1 - 2 / 11)
    live = model.state_dict()[key].clone()
    with average.applied(model):
        torch.testing.assert_close(model.state_dict()[key], average.shadow[key])
    torch.testing.assert_close(model.state_dict()[key], live)


def test_the_probe_reads_the_average_and_a_resumed_run_keeps_it(tmp_path):
    """With probe_average the probe sees the averaged weights (not the live ones, which it leaves as they were);
    the average is saved with the pre-training state, so a resumed run probes what an unbroken one probes."""
    cfg = WSD.model_copy(update={"probe_average": 0.9})
    seen = []

    def probe(model):
        seen.append(model.state_dict()["model.norm.weight"].clone())
        return 0.0
    live = []
    model = build_model(MODEL, 100, 0, 2)
    original = model.train

    def train(mode=True):  # called right after each probe: the live weights are back
        if mode:
            live.append(model.state_dict()["model.norm.weight"].clone())
        return original(mode)
    model.train = train
    ref = pretrain(model, _blocks(), cfg, probe=probe)
    assert len(seen) == 25 // 4 and not torch.equal(seen[-1], live[-1])
    plain_seen = []
    pretrain(build_model(MODEL, 100, 0, 2), _blocks(), WSD,
             probe=lambda m: plain_seen.append(m.state_dict()["model.norm.weight"].clone()) or 0.0)
    torch.testing.assert_close(plain_seen[-1], live[-1])  # the live weights are the plain run's

    ckpt, resumed_seen = tmp_path / "pretrain.ckpt", []
    first = build_model(MODEL, 100, 0, 2)
    first.forward = lambda *a, _f=first.forward, _n=[0], **k: (_n.__setitem__(0, _n[0] + 1) or _f(*a, **k)) \
        if _n[0] < 11 else (_ for _ in ()).throw(KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        pretrain(first, _blocks(), cfg, checkpoint=ckpt, checkpoint_every=2, probe=lambda m: 0.0)
    resumed = pretrain(build_model(MODEL, 100, 0, 2), _blocks(), cfg, checkpoint=ckpt, checkpoint_every=2,
                       probe=lambda m: resumed_seen.append(m.state_dict()["model.norm.weight"].clone()) or 0.0)
    assert resumed == pytest.approx(ref, rel=1e-5)
    torch.testing.assert_close(resumed_seen[-1], seen[-1])


def test_a_state_saved_without_the_weight_average_starts_over(tmp_path):
    """A pre-training state under the same key but without the probe's average (written with the average off)
    is not usable for a run that probes the average: it starts over instead of failing on the missing tensors."""
    from components.data.base_model import WeightAverage, load_pretrain_state, pretrain_state_key, save_pretrain_state
    cfg = WSD.model_copy(update={"probe_average": 0.9})
    model = build_model(MODEL, 100, 0, 2)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    gen = torch.Generator().manual_seed(0)
    key, ckpt = pretrain_state_key(model, _blocks(), cfg), tmp_path / "pretrain.ckpt"
    save_pretrain_state(ckpt, key, 3, [1.0, 0.9, 0.8], model, opt, sched, gen)  # no average
    assert load_pretrain_state(ckpt, key, model, opt, sched, gen, WeightAverage(model, 0.9)) is None
    assert load_pretrain_state(ckpt, key, model, opt, sched, gen)[0] == 3  # a run without the average resumes
    losses = pretrain(build_model(MODEL, 100, 0, 2), _blocks(), cfg, checkpoint=ckpt, checkpoint_every=2,
                      probe=lambda m: 0.0)
    assert len(losses) == cfg.steps  # from step 0
