"""The ALBERT (SentencePiece) and RoBERTa (byte-level BPE) tokenizers, and the
folder chooser, against HF transformers on real GLUE text.

Both vocabularies are trained here, on real GLUE sentences, the way the
released ones were made (tests/data/family_vocab.py). The references are
HF's AlbertTokenizer and RobertaTokenizer loaded from the same folders.

Not covered, with the reason: a spiece.model with user-defined pieces. HF 5
makes them added tokens (matched in the raw text, each following chunk given
its own "▁" prefix) where SentencePiece emits them inside the text's
segmentation, so the two disagree ("a-of" -> "▁a", "-", "▁of" against "▁a",
"-", "of"); we follow SentencePiece.
"""

import time

import numpy as np
import pytest
from ml_collections import ConfigDict
from tokenizers import decoders

from bert_jax.tasks import model_setup
from bert_jax.tokenizers import from_folder as tokenizers_from_folder
from bert_jax.tokenizers import pairs
from bert_jax.tokenizers.bpe import RobertaTokenizer
from bert_jax.tokenizers.spm import AlbertTokenizer
from bert_jax.tokenizers.wordpiece import BertTokenizer
from tests.conftest import SHARED_DATA as SHARED
from tests.data import family_vocab
from tests.numerics import assert_equal

sentencepiece = pytest.importorskip("sentencepiece")
transformers = pytest.importorskip("transformers")

FAMILIES = ("albert", "roberta")


def _tsv(path):
    with open(SHARED / "glue" / path, encoding="utf-8", newline="\n") as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip("\n")]


@pytest.fixture(scope="module")
def glue():
    """GLUE train+dev: SST-2 and CoLA sentences, STS-B pairs."""
    if not (SHARED / "glue").is_dir():
        pytest.skip(f"shared data not found ({SHARED}); set BERT_JAX_SHARED_DATA")
    sst2 = [r[0] for s in ("train", "dev") for r in _tsv(f"SST-2/{s}.tsv")[1:]]
    cola = [r[3] for s in ("train", "dev") for r in _tsv(f"CoLA/{s}.tsv")]
    stsb = [(r[7], r[8]) for s in ("train", "dev") for r in _tsv(f"STS-B/{s}.tsv")[1:]]
    assert len(sst2) == 67_349 + 872 and len(cola) == 8_551 + 1_043 and len(stsb) == 7_249
    singles = sst2 + cola + [s for pair in stsb for s in pair]
    return {"singles": singles, "stsb": stsb}


@pytest.fixture(scope="module")
def folders(glue, tmp_path_factory):
    """Checkpoint-like folders: albert/spiece.model, roberta/vocab.json + merges.txt."""
    # A sample keeps training to a few seconds; every sentence is tokenized later.
    return family_vocab.build(glue["singles"][::6], tmp_path_factory.mktemp("family_tokenizers"))


@pytest.fixture(scope="module")
def toks(folders):
    """family -> (ours, HF's) built from the same folder."""
    hf = {"albert": transformers.AlbertTokenizer, "roberta": transformers.RobertaTokenizer}
    return {
        f: (tokenizers_from_folder.from_folder(folders[f]), hf[f].from_pretrained(str(folders[f])))
        for f in FAMILIES
    }


def _padded(rows, width, fill):
    out = np.full((len(rows), width), fill, np.int32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


# ----------------------------------------------------------------- chooser


def test_from_folder_chooses_by_files(folders, tmp_path):
    assert isinstance(tokenizers_from_folder.from_folder(folders["albert"]), AlbertTokenizer)
    assert isinstance(tokenizers_from_folder.from_folder(folders["roberta"]), RobertaTokenizer)
    (tmp_path / "bert").mkdir()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the"]
    (tmp_path / "bert" / "vocab.txt").write_text("".join(t + "\n" for t in specials))
    bert = tokenizers_from_folder.from_folder(tmp_path / "bert", do_lower_case=False)
    assert isinstance(bert, BertTokenizer) and not bert.do_lower_case
    assert tokenizers_from_folder.from_folder(tmp_path / "bert").do_lower_case
    assert not tokenizers_from_folder.from_folder(folders["albert"], False).do_lower_case

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "merges.txt").write_text("#version: 0.2\n")  # Half of BPE's pair.
    with pytest.raises(ValueError) as err:
        tokenizers_from_folder.from_folder(tmp_path / "empty")
    for name in (str(tmp_path / "empty"), "vocab.txt", "spiece.model", "vocab.json + merges.txt"):
        assert name in str(err.value)
    spiece = (folders["albert"] / "spiece.model").read_bytes()
    (tmp_path / "bert" / "spiece.model").write_bytes(spiece)
    with pytest.raises(ValueError, match="several tokenizers"):
        tokenizers_from_folder.from_folder(tmp_path / "bert")
    with pytest.raises(FileNotFoundError, match="nope"):
        tokenizers_from_folder.from_folder(tmp_path / "nope")


def test_model_setup_takes_the_checkpoint_folders_tokenizer(folders, tmp_path):
    def config(init, vocab_file=""):
        return ConfigDict(dict(init_checkpoint=str(init), data=dict(vocab_file=vocab_file)))

    assert isinstance(model_setup.tokenizer(config(folders["albert"])), AlbertTokenizer)
    assert isinstance(model_setup.tokenizer(config(folders["roberta"])), RobertaTokenizer)
    # A vocab.txt (in the folder or as data.vocab_file) is read as before.
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(t + "\n" for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    tok = model_setup.tokenizer(config(folders["albert"], vocab_file=str(vocab)))
    assert isinstance(tok, BertTokenizer) and tok.do_lower_case
    assert isinstance(model_setup.tokenizer(config(tmp_path)), BertTokenizer)
    with pytest.raises(ValueError, match="no tokenizer files"):
        model_setup.tokenizer(config(folders["albert"].parent))


# ------------------------------------------------------------- HF equality


def test_special_tokens(toks):
    albert, roberta = toks["albert"][0], toks["roberta"][0]
    ids = [albert.pad_id, albert.unk_id, albert.cls_id, albert.sep_id, albert.mask_id]
    assert ids == [0, 1, 2, 3, 4]  # <pad> <unk> [CLS] [SEP] [MASK]
    ids = [roberta.cls_id, roberta.pad_id, roberta.sep_id, roberta.unk_id, roberta.mask_id]
    assert ids == [0, 1, 2, 3, 4]  # <s> <pad> </s> <unk> <mask>
    for ours, hf in toks.values():
        assert ours.vocab_size == len(ours.vocab) == hf.vocab_size
        assert ours.convert_ids_to_tokens(range(5)) == hf.convert_ids_to_tokens(list(range(5)))
    enc = albert.encode("a b", "c")
    assert enc["input_ids"][0] == albert.cls_id and enc["input_ids"].count(albert.sep_id) == 2
    assert enc["token_type_ids"] == [0] * (len(enc["input_ids"]) - 2) + [1, 1]
    enc = roberta.encode("a b", "c")
    assert enc["input_ids"][:1] + enc["input_ids"][-3:-2] == [0, 2]
    assert enc["input_ids"].count(2) == 3 and set(enc["token_type_ids"]) == {0}


@pytest.mark.parametrize("family", FAMILIES)
def test_glue_ids_match_hf(toks, glue, family):
    """Every SST-2, CoLA and STS-B train+dev sentence, through encode_batch and encode."""
    ours, hf = toks[family]
    texts = glue["singles"]
    start = time.perf_counter()
    expected = hf(texts, split_special_tokens=True)["input_ids"]
    hf_s, start = time.perf_counter() - start, time.perf_counter()
    width = max(map(len, expected))
    enc = ours.encode_batch(texts, max_length=width)
    ours_s = time.perf_counter() - start
    print(f"{family}: {len(texts)} sentences, HF {hf_s:.1f} s, ours {ours_s:.1f} s")
    assert_equal(enc["input_ids"], _padded(expected, width, ours.pad_id))
    assert_equal(enc["attention_mask"].sum(1), [len(ids) for ids in expected])
    assert not enc["token_type_ids"].any()
    for text, ids in zip(texts[::97], expected[::97], strict=True):
        assert ours.encode(text)["input_ids"] == ids, repr(text)
        assert ours.convert_tokens_to_ids(ours.tokenize(text)) == ids[1:-1], repr(text)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("max_length", [None, 16, 33])
def test_stsb_pairs_match_hf(toks, glue, family, max_length):
    """STS-B pairs, whole and cut by HF's longest_first (16: most pairs cut, both
    texts often; 33: odd budgets for the both-cut case)."""
    ours, hf = toks[family]
    text_a, text_b = map(list, zip(*glue["stsb"], strict=True))
    cut = dict(truncation="longest_first", max_length=max_length) if max_length else {}
    expected = hf(text_a, text_b, split_special_tokens=True, return_token_type_ids=True, **cut)
    width = max_length or max(map(len, expected["input_ids"]))
    enc = ours.encode_batch(text_a, text_b, max_length=width)
    for key, fill in (("input_ids", ours.pad_id), ("token_type_ids", 0)):
        assert_equal(enc[key], _padded(expected[key], width, fill), err_msg=key)
    lengths = enc["attention_mask"].sum(1)
    assert (lengths == [len(row) for row in expected["input_ids"]]).all()
    if max_length:
        assert (lengths == max_length).mean() > 0.3  # Truncation was exercised.
    for i in range(0, len(text_a), 61):
        enc = ours.encode(text_a[i], text_b[i], max_length)
        assert enc["input_ids"] == expected["input_ids"][i], (text_a[i], text_b[i])


def test_pair_truncation_rule():
    """HF's longest_first: the longer text keeps the extra token, b on ties."""
    cut = pairs.truncate_pair
    a, b = list(range(10)), list(range(100, 110))
    assert cut(a[:3], b, 8) == (a[:3], b[:5])  # Only the longer is cut.
    assert cut(a, b, 7) == (a[:3], b[:4])  # Tie: b keeps the extra token.
    assert cut(a, b[:6], 7) == (a[:4], b[:3])  # a longer: a keeps it.
    assert cut(a[:5], b, 7) == (a[:3], b[:4])
    assert cut(a, b, 0) == ([], [])
    assert cut(a[:2], b[:2], 4) == (a[:2], b[:2])


# ----------------------------------------------------------------- offsets


def test_albert_offsets(toks, glue):
    """Each piece's span holds its text (normalized as the tokenizer does);
    spans are HF's except for a bare "▁", which we give an empty span."""
    ours, hf = toks["albert"]
    texts = glue["singles"][::20] + ["Ünïcode ``quoted'' İstanbul ﬁne  ½ ΟΔΟΣ 我爱 😀 tab\tend"]
    expected = hf(texts, return_offsets_mapping=True, split_special_tokens=True)
    checked = 0
    pairs = zip(expected["offset_mapping"], expected["input_ids"], strict=True)
    for text, (hf_spans, hf_ids) in zip(texts, pairs, strict=True):
        tokens, spans = ours.tokenize_with_offsets(text)
        assert ours.convert_tokens_to_ids(tokens) == hf_ids[1:-1], repr(text)
        assert [s for s, _ in spans] == sorted(s for s, _ in spans), repr(text)
        for token, (start, end), hf_span in zip(tokens, spans, hf_spans[1:-1], strict=True):
            if token == "▁":
                assert start == end == hf_span[0], repr(text)
                continue
            # HF gives a '"' made of "``" or "''" the span of the second character.
            quote = text[start : start + 2] in ("``", "''") and token.endswith('"')
            assert (start + quote, end) == tuple(hf_span), (text, token)
            if token != "<unk>":
                # A piece may hold part of a character's decomposition ("½" -> "1⁄2").
                surface = ours.normalize(text[start:end])
                assert token.lstrip("▁") in surface, (text, token)
                checked += surface == token.lstrip("▁")
    assert checked > 50_000  # Of about 70,000 pieces.


def test_roberta_offsets(toks, glue):
    """Spans are HF's; a token that is whole characters is exactly its span's text."""
    ours, hf = toks["roberta"]
    decode = decoders.ByteLevel().decode
    texts = glue["singles"][::20] + ["Ünïcode ``quoted'' İstanbul ﬁne  ½ ΟΔΟΣ 我爱 😀 tab\tend"]
    expected = hf(texts, return_offsets_mapping=True, split_special_tokens=True)
    checked = 0
    for text, hf_spans in zip(texts, expected["offset_mapping"], strict=True):
        tokens, spans = ours.tokenize_with_offsets(text)
        assert spans == [tuple(s) for s in hf_spans[1:-1]], repr(text)
        for token, (start, end) in zip(tokens, spans, strict=True):
            surface = decode([token])
            if "\ufffd" not in surface:  # Not part of a character's bytes.
                assert text[start:end] == surface.lstrip(" "), (text, token)
                checked += 1
    assert checked > 50_000  # Of about 70,000 pieces.


def test_hard_strings_match_hf(toks):
    hard = [
        "",
        "   ",
        "Héllo Wörld naïve café RÉSUMÉ Straße ﬁne Ⅻ ① ｆｕｌｌｗｉｄｔｈ",
        "``double'' quotes `single' and ''' and ``` x",
        "我爱北京天安门 한국어 日本語のテキスト",
        "emoji 😀👍🏽 and flags 🇺🇸!",
        " \t\n\r\u00a0\u3000 spaces  inside\u2028text ",
        "x\u0301y \u0301 \u0301\u0302 a\u1fefb İstanbul",
        "1,990, 3,000,000 and 4.5%",
    ]
    for family, (ours, hf) in toks.items():
        for text in hard:
            expected = hf(text, split_special_tokens=True)["input_ids"]
            assert ours.encode(text)["input_ids"] == expected, (family, repr(text))
            tokens, spans = ours.tokenize_with_offsets(text)
            assert len(tokens) == len(expected) - 2
            assert all(0 <= s <= e <= len(text) for s, e in spans), (family, repr(text))


def test_decode_round_trip(toks, glue):
    albert, roberta = toks["albert"][0], toks["roberta"][0]
    for text in glue["singles"][::500]:
        ids = roberta.encode_batch([text], max_length=200)["input_ids"][0]
        assert roberta.decode(ids) == f"<s>{text}</s>"
        ids = albert.encode_batch([text], max_length=200)["input_ids"][0]
        if albert.unk_id not in ids:  # SentencePiece decodes <unk> as " ⁇ ".
            assert albert.decode(ids) == " ".join(albert.normalize(text).split())


# ------------------------------------------------ SQuAD and NER row layouts


@pytest.mark.parametrize("family", FAMILIES)
def test_squad_rows_match_hf_question_context_pairs(toks, family):
    """Real SQuAD dev questions whose context fits one window: the row is HF's
    encoding of (question, context): RoBERTa's <s> q </s></s> c </s> with one
    token type, ALBERT's [CLS] q [SEP] c [SEP] with types 0/1."""
    from bert_jax.data import squad

    path = SHARED / "squad" / "v1.1" / "dev-v1.1.json"
    examples = squad.parse_squad(squad.load_json(str(path)), str(path))[0][:400:20]
    ours, hf = toks[family]
    feats = squad.make_features(examples, ours, max_seq_length=384, max_query_length=64)
    checked = 0
    for r, i in enumerate(feats.example_index):
        ex = examples[i]
        want = hf(ex.question, ex.context, return_token_type_ids=True, split_special_tokens=True)
        n = len(want["input_ids"])
        if n > 384 or np.sum(feats.example_index == i) > 1:
            continue  # windowed: HF's overflow windows are laid out differently
        checked += 1
        assert_equal(feats.arrays["input_ids"][r, :n], want["input_ids"])
        assert feats.arrays["attention_mask"][r].sum() == n
        assert_equal(feats.arrays["token_type_ids"][r, :n], want["token_type_ids"])
        # The first context token is where HF's second sequence starts.
        assert feats.doc_offset[r] == want.sequence_ids().index(1)
    assert checked >= 10


@pytest.mark.parametrize("family", FAMILIES)
def test_ner_rows_match_hf_pre_split_words(toks, family):
    """Real CoNLL-2003 sentences as pre-split words: the row is HF's encoding
    with is_split_into_words (RoBERTa needs add_prefix_space=True)."""
    from bert_jax.data import conll

    sentences = conll.read_conll(str(SHARED / "conll2003" / "test.txt"))[0][:60:3]
    ours, hf = toks[family]
    if family == "roberta":
        hf = transformers.RobertaTokenizer.from_pretrained(hf.name_or_path, add_prefix_space=True)
    arrays, _ = conll.make_features(sentences, ours, max_seq_length=256)
    for r, s in enumerate(sentences):
        want = hf(list(s.tokens), is_split_into_words=True, split_special_tokens=True)
        want = want["input_ids"]
        assert_equal(arrays["input_ids"][r, : len(want)], want)
        assert arrays["attention_mask"][r].sum() == len(want)
