"""SQuAD reading, windowed features and post-processing, on the real v1.1 dev set.

References are transcriptions of google-research/bert `run_squad.py`, kept
close to its structure and deliberately plain: `read_squad_examples` (its
whitespace words), `convert_examples_to_features` (windows, targets via
`_improve_answer_span`), `_check_is_max_context` and `write_predictions`
(with our character-span text in place of `get_final_text`, the one intended
difference; see bert_jax/data/squad.py).
"""

import collections
import json
import math

import numpy as np
import pytest

from bert_jax.data import squad
from bert_jax.metrics import squad as squad_eval


@pytest.fixture(scope="module")
def dev_path(shared_data):
    return str(shared_data / "squad" / "v1.1" / "dev-v1.1.json")


@pytest.fixture(scope="module")
def tokenizer(shared_data):
    from bert_jax.tokenizers.wordpiece import BertTokenizer

    return BertTokenizer(str(shared_data / "vocab" / "bert-base-uncased" / "vocab.txt"), True)


def _read(path, **kwargs):
    """A SQuAD file as the fine-tuning task reads it: the JSON, then parsed."""
    return squad.parse_squad(squad.load_json(path), path, **kwargs)


@pytest.fixture(scope="module")
def dev(dev_path):
    return _read(dev_path)


class _CountingTokenizer:
    """A tokenizer that counts the calls made to each of its methods."""

    def __init__(self, tokenizer):
        self._tokenizer, self.calls = tokenizer, collections.Counter()

    def __getattr__(self, name):
        value = getattr(self._tokenizer, name)
        if not callable(value):
            return value

        def counted(*args, **kwargs):
            self.calls[name] += 1
            return value(*args, **kwargs)

        return counted


@pytest.fixture(scope="module")
def train_features(dev, tokenizer):
    """The whole dev set as training features (targets from each first answer), and
    the tokenizer calls that made them."""
    counting = _CountingTokenizer(tokenizer)
    features = squad.make_features(dev[0], counting, 384, 128, 64, is_training=True)
    return features, counting.calls


# ----------------------------------------------------------------- reference


def _ref_doc_tokens(text):
    """read_squad_examples: whitespace words and each character's word index."""
    doc_tokens, char_to_word, prev_ws = [], [], True
    for c in text:
        if c in " \t\r\n" or ord(c) == 0x202F:
            prev_ws = True
        else:
            if prev_ws:
                doc_tokens.append(c)
            else:
                doc_tokens[-1] += c
            prev_ws = False
        char_to_word.append(len(doc_tokens) - 1)
    return doc_tokens, char_to_word


def _ref_improve_answer_span(doc_tokens, start, end, tokenizer, answer_text):
    tok_answer = " ".join(tokenizer.tokenize(answer_text))
    for new_start in range(start, end + 1):
        for new_end in range(end, new_start - 1, -1):
            if " ".join(doc_tokens[new_start : new_end + 1]) == tok_answer:
                return new_start, new_end
    return start, end


def _ref_tokens_and_target(example, tokenizer):
    """All context wordpieces, word by word, and the first answer's wordpiece span."""
    words, char_to_word = _ref_doc_tokens(example.context)
    orig_to_tok, all_tokens = [], []
    for word in words:
        orig_to_tok.append(len(all_tokens))
        all_tokens.extend(tokenizer.tokenize(word))
    answer = example.answers[0]
    start_word = char_to_word[answer["answer_start"]]
    end_word = char_to_word[answer["answer_start"] + len(answer["text"]) - 1]
    tok_start = orig_to_tok[start_word]
    tok_end = orig_to_tok[end_word + 1] - 1 if end_word < len(words) - 1 else len(all_tokens) - 1
    target = _ref_improve_answer_span(all_tokens, tok_start, tok_end, tokenizer, answer["text"])
    return all_tokens, target


def _ref_doc_spans(n_tokens, max_tokens, doc_stride):
    spans, start = [], 0
    while start < n_tokens:
        length = min(n_tokens - start, max_tokens)
        spans.append((start, length))
        if start + length == n_tokens:
            break
        start += min(length, doc_stride)
    return spans


def _ref_check_is_max_context(doc_spans, cur_span_index, position):
    best_score, best_span_index = None, None
    for span_index, (start, length) in enumerate(doc_spans):
        end = start + length - 1
        if position < start or position > end:
            continue
        score = min(position - start, end - position) + 0.01 * length
        if best_score is None or score > best_score:
            best_score, best_span_index = score, span_index
    return cur_span_index == best_span_index


def _ref_write_predictions(examples, features, all_start, all_end, n_best_size, max_len, v2):
    """write_predictions, with feature fields read from our SquadFeatures."""
    by_example = collections.defaultdict(list)
    for r, index in enumerate(features.example_index):
        by_example[int(index)].append(r)
    predictions, null_odds, all_nbest = {}, {}, {}
    for index, example in enumerate(examples):
        prelim = []
        score_null, null_start, null_end, null_row = 1000000, 0, 0, 0
        for r in by_example[index]:
            start_logits = [float(x) for x in all_start[r]]
            end_logits = [float(x) for x in all_end[r]]
            offset, n_doc = int(features.doc_offset[r]), len(features.token_spans[r])
            best_s = [
                i for i, _ in sorted(enumerate(start_logits), key=lambda x: x[1], reverse=True)
            ]
            best_e = [i for i, _ in sorted(enumerate(end_logits), key=lambda x: x[1], reverse=True)]
            if v2 and start_logits[0] + end_logits[0] < score_null:
                score_null = start_logits[0] + end_logits[0]
                null_start, null_end, null_row = start_logits[0], end_logits[0], r
            for s in best_s[:n_best_size]:
                for e in best_e[:n_best_size]:
                    if not (offset <= s < offset + n_doc and offset <= e < offset + n_doc):
                        continue
                    if not features.token_is_max_context[r][s - offset]:
                        continue
                    if e < s or e - s + 1 > max_len:
                        continue
                    prelim.append((r, s, e, start_logits[s], end_logits[e]))
        if v2:
            prelim.append((null_row, 0, 0, null_start, null_end))
        prelim = sorted(prelim, key=lambda x: x[3] + x[4], reverse=True)
        seen, nbest = set(), []
        for r, s, e, s_logit, e_logit in prelim:
            if len(nbest) >= n_best_size:
                break
            if s > 0:
                offset, spans = int(features.doc_offset[r]), features.token_spans[r]
                text = example.context[spans[s - offset][0] : spans[e - offset][1]]
                if text in seen:
                    continue
            else:
                text = ""
            seen.add(text)
            nbest.append((text, s_logit, e_logit))
        if v2 and "" not in seen:
            nbest.append(("", null_start, null_end))
        if not nbest:
            nbest.append(("empty", 0.0, 0.0))
        totals = [s + e for _, s, e in nbest]
        exps = [math.exp(t - max(totals)) for t in totals]
        total_sum = 0.0
        for x in exps:
            total_sum += x
        all_nbest[example.qas_id] = [
            {"text": t, "probability": x / total_sum, "start_logit": s, "end_logit": e}
            for (t, s, e), x in zip(nbest, exps, strict=True)
        ]
        best_non_null = next(n for n in nbest if n[0])
        if v2:
            diff = score_null - best_non_null[1] - best_non_null[2]
            null_odds[example.qas_id] = diff
            predictions[example.qas_id] = "" if diff > 0.0 else best_non_null[0]
        else:
            predictions[example.qas_id] = nbest[0][0]
    return predictions, null_odds, all_nbest


# --------------------------------------------------------------------- reading


def test_read_real_dev(dev):
    examples, stats = dev
    assert stats == {
        "version": "1.1",
        "questions": 10570,
        "impossible": 0,
        "bad_answers": 0,
        "bad_answer_ids": [],
        "skipped": 0,
    }
    assert len(examples) == 10570
    first = examples[0]
    assert first.qas_id == "56be4db0acb8001400a502ec"
    assert [a["text"] for a in first.answers] == ["Denver Broncos"] * 3  # All gold kept.
    assert first.context is examples[1].context  # Shared by the paragraph, not copied.


def _write(path, data, version="1.1"):
    path.write_text(json.dumps({"version": version, "data": data}), encoding="utf-8")
    return str(path)


def test_bad_answers_reported_counted_and_skipped(tmp_path, caplog):
    context = "The quick brown fox jumps over the lazy dog."
    qas = [
        {"id": "ok", "question": "What jumps?", "answers": [{"text": "fox", "answer_start": 16}]},
        {"id": "shifted", "question": "Who?", "answers": [{"text": "fox", "answer_start": 15}]},
        {"id": "none", "question": "Where?", "answers": []},
        # Only the first (training) answer is checked: later gold answers are for evaluation.
        {
            "id": "second_off",
            "question": "What is lazy?",
            "answers": [{"text": "dog", "answer_start": 40}, {"text": "dog", "answer_start": 0}],
        },
    ]
    path = _write(
        tmp_path / "bad.json", [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]
    )
    with pytest.raises(ValueError, match=r"bad\.json: 2 answers .*shifted, none"):
        _read(path)
    with caplog.at_level("WARNING"):
        examples, stats = _read(path, on_bad_input="skip")
    assert [e.qas_id for e in examples] == ["ok", "second_off"]
    assert stats["bad_answers"] == stats["skipped"] == 2
    assert stats["bad_answer_ids"] == ["shifted", "none"]
    assert "question shifted: answer 'fox' is not at answer_start 15" in caplog.text
    assert f"{path}: question none: no answer" in caplog.text
    assert f"{path}: skipped 2 of 4 questions" in caplog.text
    with pytest.raises(ValueError, match="on_bad_input must be 'fail' or 'skip'"):
        _read(path, on_bad_input="ignore")


def _tfds_records(dataset_json, version):
    """The file as `tfds.as_numpy` gives TFDS squad records: one per question, bytes
    and arrays (tensorflow_datasets `squad_dataset_builder.py`, `qa_utils.py`)."""

    def answers(items):
        return {
            "text": np.array([a["text"].encode() for a in items], object),
            "answer_start": np.array([a["answer_start"] for a in items], np.int32),
        }

    for article in dataset_json["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                record = {
                    "id": qa["id"].encode(),
                    "title": article["title"].encode(),
                    "context": paragraph["context"].encode(),
                    "question": qa["question"].encode(),
                    "answers": answers(qa["answers"]),
                }
                if version == "2.0":
                    record["is_impossible"] = np.bool_(qa["is_impossible"])
                    record["plausible_answers"] = answers(qa.get("plausible_answers", []))
                yield record


def test_tfds_records_rebuild_the_official_json(dev_path):
    dev_json = squad.load_json(dev_path)
    assert squad.from_tfds_records(_tfds_records(dev_json, "1.1"), "1.1") == dev_json
    # v2.0: every third question impossible, its answers kept as plausible ones.
    v2 = {"version": "v2.0", "data": dev_json["data"][:3]}
    for i, qa in enumerate(qa for a in v2["data"] for p in a["paragraphs"] for qa in p["qas"]):
        qa["is_impossible"] = i % 3 == 2
        if qa["is_impossible"]:
            qa["plausible_answers"], qa["answers"] = qa["answers"], []
    rebuilt = squad.from_tfds_records(_tfds_records(v2, "2.0"), "2.0")
    assert rebuilt == v2
    examples, stats = squad.parse_squad(rebuilt, "TFDS squad/v2.0 split 'validation'")
    assert stats["version"] == "2.0" and stats["impossible"] == stats["questions"] // 3


def test_version_2_detection(tmp_path):
    context = "Denver won."
    qa = {"id": "a", "question": "Who won?", "answers": [{"text": "Denver", "answer_start": 0}]}
    impossible = {"id": "b", "question": "Who lost?", "answers": [], "is_impossible": True}
    paragraphs = [{"context": context, "qas": [qa, impossible]}]
    examples, stats = _read(_write(tmp_path / "v2.json", [{"paragraphs": paragraphs}]))
    assert stats["version"] == "2.0" and stats["impossible"] == 1
    assert [e.is_impossible for e in examples] == [False, True]
    # By the version string alone; there, a question without answers is impossible.
    no_flag = {k: v for k, v in impossible.items() if k != "is_impossible"}
    paragraphs = [{"context": context, "qas": [qa, no_flag]}]
    examples, stats = _read(
        _write(tmp_path / "v2b.json", [{"paragraphs": paragraphs}], version="v2.0")
    )
    assert stats["version"] == "2.0" and [e.is_impossible for e in examples] == [False, True]
    features = squad.make_features(examples, _tiny_tokenizer(tmp_path), 32, 8, 8, is_training=True)
    # [CLS] who won ? [SEP] denver ...; the impossible question's target is [CLS].
    assert features.arrays["start_positions"].tolist() == [5, 0]
    assert features.arrays["end_positions"].tolist() == [5, 0]


def _tiny_tokenizer(tmp_path):
    from bert_jax.tokenizers.wordpiece import BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "who", "won", "lost", "?", ".", "denver"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    return BertTokenizer(str(tmp_path / "vocab.txt"), True)


# -------------------------------------------------------------------- features


def test_features_layout_on_real_dev(dev, tokenizer, train_features):
    examples, _ = dev
    features, calls = train_features
    # Tokenizing is make_features' cost (~1.1 s for the dev set on a 2-core CPU): each
    # of the 2,067 contexts once, shared by its questions, and each question once.
    assert calls["tokenize_with_offsets"] == len({e.context for e in examples}) == 2067
    assert calls["tokenize"] == len(examples) == 10570
    # The whole dev set: 10,570 questions -> 10,833 windows.
    assert len(features) == 10833
    a = features.arrays
    assert {k: (v.shape, v.dtype) for k, v in a.items()} == {
        "input_ids": ((10833, 384), np.int32),
        "token_type_ids": ((10833, 384), np.int32),
        "attention_mask": ((10833, 384), np.int32),
        "start_positions": ((10833,), np.int32),
        "end_positions": ((10833,), np.int32),
    }
    assert np.all(np.diff(features.example_index) >= 0)
    assert set(features.example_index.tolist()) == set(range(len(examples)))
    cls, sep, pad = tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id
    for r in range(0, len(features), 37):
        ex = examples[features.example_index[r]]
        ids, h = a["input_ids"][r], features.doc_offset[r]
        n = len(features.token_spans[r])
        query = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(ex.question))[:64]
        assert ids[:h].tolist() == [cls, *query, sep]
        pieces, offsets = tokenizer.tokenize_with_offsets(ex.context)
        start = features.doc_start[r]
        assert ids[h : h + n].tolist() == tokenizer.convert_tokens_to_ids(pieces[start : start + n])
        assert features.token_spans[r].tolist() == [list(o) for o in offsets[start : start + n]]
        assert ids[h + n] == sep and np.all(ids[h + n + 1 :] == pad)
        assert a["token_type_ids"][r].tolist() == [0] * h + [1] * (n + 1) + [0] * (383 - h - n)
        assert a["attention_mask"][r].tolist() == [1] * (h + n + 1) + [0] * (383 - h - n)


def test_windows_and_max_context_match_original(dev, tokenizer):
    """Small windows (64 tokens, stride 16) so most examples have many of them."""
    examples = dev[0][::40]
    features = squad.make_features(examples, tokenizer, 64, 16, 24)
    rows = collections.defaultdict(list)
    for r, index in enumerate(features.example_index):
        rows[int(index)].append(r)
    multi = 0
    for index, ex in enumerate(examples):
        n_tokens = len(tokenizer.tokenize(ex.context))
        query = tokenizer.tokenize(ex.question)[:24]
        spans = _ref_doc_spans(n_tokens, 64 - len(query) - 3, 16)
        ours = rows[index]
        assert [(features.doc_start[r], len(features.token_spans[r])) for r in ours] == spans
        multi += len(spans) > 1
        for j, (start, length) in enumerate(spans):
            expected = [_ref_check_is_max_context(spans, j, start + i) for i in range(length)]
            assert features.token_is_max_context[ours[j]].tolist() == expected
    assert multi > 200


def test_training_targets_match_original(dev, tokenizer, train_features):
    """Character-span targets equal the original's word + _improve_answer_span ones."""
    examples, _ = dev
    features, _ = train_features
    a = features.arrays
    target = {}
    for r in np.nonzero(a["start_positions"])[0]:
        shift = features.doc_start[r] - features.doc_offset[r]
        span = (a["start_positions"][r] + shift, a["end_positions"][r] + shift)
        assert target.setdefault(int(features.example_index[r]), span) == span
    assert len(target) == len(examples)  # Every answer fits in some 384-token window.
    differ = []
    for index, ex in enumerate(examples):
        tokens, ref = _ref_tokens_and_target(ex, tokenizer)
        if index % 10 == 0:
            assert tokens == tokenizer.tokenize(ex.context)  # Word by word = whole context.
        ours = target[index]
        if ours != ref:
            # Only where the answer is no whole-wordpiece match, so the
            # original keeps whole whitespace words (with their punctuation).
            # Ours is then the tighter span: the wordpieces the answer overlaps.
            answer = " ".join(tokenizer.tokenize(ex.answers[0]["text"]))
            assert " ".join(tokens[ours[0] : ours[1] + 1]) != answer
            assert ref[0] <= ours[0] <= ours[1] <= ref[1]
            differ.append(ex.qas_id)
    # E.g. "8" in "20–18": ours ["18"], the original's ["20", "–", "18"];
    # "Japan" in "(Japanese)": ours ["japanese"], the original's ["japanese", ")"].
    assert len(differ) == 14
    assert {"56be4e1facb8001400a502f9", "573060b48ab72b1400f9c4c9"} <= set(differ)


def test_round_trip_gold_logits_on_real_dev(dev, dev_path, train_features):
    """Gold spans as logits -> postprocess -> official EM/F1.

    On the full dev set (n_best 20, max_answer_length 30): EM 99.697, F1
    99.752 (32 misses). 23 are tokenization-boundary losses, answers that
    start or end inside a wordpiece, so the whole piece is predicted:
    "gold" in "golden" (56be4db0acb8001400a502f0), "8" in "20–18"
    (56be4e1facb8001400a502f9), "5" in "50", "10." in "2010.", "L" in "NFL",
    "wards" in "backwards", "four" in "fourth", "ten" in "contenders",
    "y through ..." starting inside "probably" (57264991f1498d1400e8db30),
    "7,000,000 square kilometres (2,70" ending inside "2,700,000". The other
    9 gold answers are longer than max_answer_length=30 wordpieces (e.g.
    5725c071271a42140099d127, 31 tokens); with no length limit EM is 99.782.
    """
    examples, _ = dev
    features, _ = train_features
    a = features.arrays
    rows = np.arange(len(features))
    start = np.zeros(a["input_ids"].shape, np.float32)
    end = np.zeros(a["input_ids"].shape, np.float32)
    start[rows, a["start_positions"]] = 10.0  # [CLS] where the window lacks the answer.
    end[rows, a["end_positions"]] = 10.0
    predictions, null_odds, nbest = squad.postprocess(examples, features, start, end)
    assert null_odds == {} and len(predictions) == len(nbest) == 10570
    result = squad_eval.evaluate(squad.load_json(dev_path), predictions)
    assert result["exact_match"] >= 99.0
    assert result == pytest.approx({"exact_match": 99.6972563859981, "f1": 99.75187215163007})
    assert predictions["56be4db0acb8001400a502f0"] == "golden"
    assert predictions["56be4db0acb8001400a502ec"] == "Denver Broncos"


@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.parametrize("logits", ["normal", "ties"])
def test_postprocess_matches_original(dev, tokenizer, v2, logits):
    """Random logits (and integer ones, full of ties) on real questions, small windows."""
    examples = dev[0][3::53]
    features = squad.make_features(examples, tokenizer, 96, 32, 24)
    rng = np.random.default_rng(0)
    shape = features.arrays["input_ids"].shape
    if logits == "normal":
        start, end = rng.normal(size=(2, *shape)).astype(np.float32)
    else:
        start, end = rng.integers(0, 3, size=(2, *shape)).astype(np.float32)
    start[::2, 0] += 4  # Some [CLS] scores high enough to predict "" (v2.0).
    end[::2, 0] += 4
    ours = squad.postprocess(examples, features, start, end, 20, 30, version_2=v2)
    ref = _ref_write_predictions(examples, features, start, end, 20, 30, v2)
    # Our n-best entries also carry the answer's character span; the
    # original's do not. Compare the original's fields, then check the spans.
    context = {e.qas_id: e.context for e in examples}
    for qid, entries in ours[2].items():
        for entry in entries:
            start_char, end_char = entry.pop("start"), entry.pop("end")
            if start_char >= 0:
                assert context[qid][start_char:end_char] == entry["text"]
            else:
                assert entry["text"] in ("", "empty")
    assert ours == ref
    if v2:
        assert any(p == "" for p in ours[0].values()) and any(ours[0].values())


def test_postprocess_checks_shapes(dev, tokenizer):
    examples = dev[0][:3]
    features = squad.make_features(examples, tokenizer)
    with pytest.raises(ValueError, match="3 features"):
        squad.postprocess(examples, features, np.zeros((2, 384)), np.zeros((2, 384)))


def test_query_too_long_for_window(dev, tokenizer):
    with pytest.raises(ValueError, match="no room for the context"):
        squad.make_features(dev[0][:1], tokenizer, max_seq_length=8, max_query_length=64)
