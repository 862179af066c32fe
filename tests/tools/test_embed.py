"""bert_jax.tools.embed on the real all-MiniLM-L6-v2 against HF transformers (PyTorch).

The references are sentence-transformers' pooling recipes written out in torch
on HF `BertModel`'s outputs (sentence-transformers itself is not a dependency):
mean = sum(h * mask) / clamp(sum(mask), 1e-9), then F.normalize for the
model's Normalize module; max over masked tokens; [CLS]; the last four
`hidden_states` concatenated.
"""

import json
import os
import random
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import jax
import numpy as np
import pytest

from bert_jax import sharding
from bert_jax.tokenizers.wordpiece import BertTokenizer
from bert_jax.tools import embed
from tests.cli_env import cli_env
from tests.numerics import assert_close, max_abs_diff

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[2]
TOL = 1e-5  # the bound against the reference; measured ~3e-7
ACCENTS = "Angela Merkel visited Zürich's café — naïvely, in 2019!"


def _sst2(shared_data, n):
    lines = (shared_data / "glue" / "SST-2" / "dev.tsv").read_text(encoding="utf-8").splitlines()
    return [line.split("\t")[0].strip() for line in lines[1 : n + 1]]


@pytest.fixture(scope="module")
def mean_embedder(minilm_dir):
    """sentence-transformers' all-MiniLM-L6-v2: mean pooling, normalised; every device."""
    return embed.Embedder(minilm_dir, pooling="mean", normalize=True, batch_size=8)


@pytest.fixture(scope="module")
def mixed(shared_data):
    """32 real sentences of 4 to 42 wordpieces: batches of widths 64, 32 and 16."""
    return _sst2(shared_data, 32)


@pytest.fixture(scope="module")
def uniform(shared_data, mean_embedder):
    """15 real sentences of 17..32 tokens and one with accents: one width (32) in batches of 8."""
    tok = mean_embedder.tokenizer
    texts = [t for t in _sst2(shared_data, 200) if 15 <= len(tok.tokenize(t)) <= 30][:15]
    return texts + [ACCENTS]


@pytest.fixture(scope="module")
def hf(minilm_dir):
    model = transformers.BertModel.from_pretrained(str(minilm_dir)).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))

    def run(texts, max_length=128):
        enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            out = model(**enc, output_hidden_states=True)
        return enc, out

    return run


def _st_mean(enc, out, normalize=True):
    """sentence-transformers' Pooling(mean) (+ Normalize), in torch."""
    h, mask = out.last_hidden_state, enc["attention_mask"].unsqueeze(-1).float()
    v = (h * mask).sum(1) / torch.clamp(mask.sum(1), min=1e-9)
    return (torch.nn.functional.normalize(v, p=2, dim=1) if normalize else v).numpy()


def test_mean_normalized_equals_sentence_transformers_recipe(mean_embedder, mixed, hf):
    enc, out = hf(mixed)
    assert (enc["attention_mask"] == 0).any(), "the reference batch must hold padding"
    ours = mean_embedder(mixed)
    assert ours.shape == (len(mixed), 384) and ours.dtype == np.float32
    diff = max_abs_diff(ours, _st_mean(enc, out))
    print(f"mean+normalize vs the sentence-transformers recipe: max abs diff {diff:.2e}")
    assert diff < TOL
    assert_close(np.linalg.norm(ours, axis=1), np.ones(len(mixed)), atol=1e-6)


def test_each_width_compiles_once_and_order_is_restored(mean_embedder, mixed):
    first = mean_embedder(mixed)
    perm = list(range(len(mixed)))
    random.Random(0).shuffle(perm)
    shuffled = mean_embedder([mixed[i] for i in perm])
    assert_close(shuffled, first[perm], atol=1e-6)
    # The widths the batches were cut to: longest first, 8 rows each, powers of two.
    n = sorted((len(mean_embedder.tokenizer.tokenize(t)) + 2 for t in mixed), reverse=True)
    widths = {embed.bucket_width(n[i], 128) for i in range(0, len(n), 8)}
    assert len(widths) >= 3, widths
    assert mean_embedder._jitted[False]._cache_size() == len(widths)


def test_batched_on_a_mesh_equals_one_at_a_time(minilm_dir, mean_embedder, uniform):
    # The batch over 8 devices (data) against one text at a time on one device.
    assert sharding.data_parallel_size(mean_embedder.mesh) == jax.device_count()
    single = embed.Embedder(minilm_dir, normalize=True, batch_size=1, mesh=_one_device())
    alone = np.concatenate([single([t]) for t in uniform])
    assert_close(mean_embedder(uniform), alone, atol=1e-6)


def _one_device():
    return sharding.make_mesh((1, 1, 1), devices=jax.devices()[:1])


@pytest.mark.parametrize("pooling", ["cls", "max"])
def test_cls_and_max_pooling(minilm_dir, uniform, hf, pooling):
    enc, out = hf(uniform)
    mask = enc["attention_mask"].unsqueeze(-1).bool()
    if pooling == "cls":
        ours = embed.Embedder(minilm_dir, pooling="cls", batch_size=8, mesh=_one_device())
        ref = out.last_hidden_state[:, 0].numpy()
    else:
        # Max over the average of the last four layers (hidden_states 3..6 of
        # 6, by positive index); sentence-transformers' max: padding set to -1e9.
        ours = embed.Embedder(
            minilm_dir,
            pooling="max",
            layers=[3, 4, 5, 6],
            layer_mode="mean",
            batch_size=8,
            mesh=_one_device(),
        )
        assert ours.dim == 384
        h = torch.stack(out.hidden_states[-4:]).mean(0)
        ref = torch.where(mask, h, torch.tensor(-1e9)).max(1).values.numpy()
    assert max_abs_diff(ours(uniform), ref) < TOL


def _check_offsets(text, tokens, offsets, tokenizer):
    assert list(tokens) == tokenizer.tokenize(text)
    for piece, (s, e) in zip(tokens, offsets, strict=True):
        # Uncased: the span, lowercased and accent-stripped, is the piece.
        span = unicodedata.normalize("NFD", text[s:e].lower())
        span = "".join(c for c in span if unicodedata.category(c) != "Mn")
        assert span == piece.removeprefix("##"), (piece, text[s:e])


def test_last_four_layers_concatenated_with_token_offsets(minilm_dir, uniform, hf):
    # On a (data 4, fsdp 1, tensor 2) mesh: heads and MLP split over `tensor`.
    mesh = sharding.make_mesh((4, 1, 2))
    concat = embed.Embedder(minilm_dir, layers="-4,-3,-2,-1", batch_size=8, mesh=mesh)
    assert concat.dim == 4 * 384
    vectors, tokens = concat.embed(uniform, with_tokens=True)
    enc, out = hf(uniform)
    mask = enc["attention_mask"].numpy()[..., None].astype(bool)
    cat = np.concatenate([s.numpy() for s in out.hidden_states[-4:]], axis=-1)  # (B, L, 1536)
    assert max_abs_diff(vectors, np.where(mask, cat, 0).sum(1) / mask.sum(1)) < TOL
    for i, t in enumerate(tokens):  # token vectors: positions 1..n (no [CLS]/[SEP])
        assert t.text == uniform[i] and not t.truncated
        _check_offsets(t.text, t.tokens, t.offsets, concat.tokenizer)
        assert enc["input_ids"][i, 1 : 1 + len(t.tokens)].tolist() == (
            concat.tokenizer.convert_tokens_to_ids(t.tokens)
        )
        assert max_abs_diff(t.vectors, cat[i, 1 : 1 + len(t.tokens)]) < TOL
    words = [ACCENTS[s:e] for s, e in tokens[-1].offsets]
    assert words[:7] == ["Angela", "Mer", "kel", "visited", "Zürich", "'", "s"], words


def _cli(*args, one_device=False):
    # one_device: the plain single-device case (and a quicker compile).
    env = cli_env(1) if one_device else dict(os.environ)
    cmd = [sys.executable, "-m", "bert_jax.tools.embed", *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_cli_end_to_end(tmp_path, minilm_dir, mixed, uniform, hf):
    long = " ".join(uniform)  # over 126 wordpieces: cut
    texts = mixed[:9] + ["", ACCENTS, long]  # a blank line keeps its row
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = _cli(
        f"--checkpoint={minilm_dir}",
        f"--input={tmp_path / 'texts.txt'}",
        f"--output={tmp_path / 'emb.npy'}",
        f"--tokens={tmp_path / 'tokens.jsonl'}",
        "--pooling=mean",
        "--normalize",
        "--batch_size=8",
        one_device=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    vectors = np.load(tmp_path / "emb.npy")
    assert vectors.shape == (len(texts), 384) and vectors.dtype == np.float32
    assert max_abs_diff(vectors, _st_mean(*hf(texts))) < TOL
    rows = [json.loads(line) for line in (tmp_path / "tokens.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == texts
    assert rows[9]["tokens"] == [] and rows[9]["vectors"] == []
    tok = BertTokenizer(str(minilm_dir / "vocab.txt"))
    _check_offsets(ACCENTS, rows[10]["tokens"], rows[10]["offsets"], tok)
    assert np.asarray(rows[10]["vectors"], np.float32).shape == (len(rows[10]["tokens"]), 384)
    assert len(rows[11]["tokens"]) == 126 and rows[11]["truncated"]
    assert not any(r["truncated"] for r in rows[:11])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.npy", "texts.txt", "tokens.jsonl"]


def test_bad_input_names_the_flag_and_writes_nothing(tmp_path, minilm_dir, shared_data):
    good = tmp_path / "good.txt"
    good.write_text("a fine film\n", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("\n \n", encoding="utf-8")
    out = str(tmp_path / "out.npy")
    cases = [
        (dict(input_path=tmp_path / "empty.txt"), "--input .*empty.txt: no text"),
        (dict(input_path=tmp_path / "missing.txt"), "--input .*missing.txt: no such file"),
        (dict(checkpoint=tmp_path / "nope"), "--checkpoint .*nope: no such directory"),
        (
            dict(checkpoint=shared_data / "glue"),
            "--checkpoint: no tokenizer files in .*glue: looked for wordpiece: vocab.txt",
        ),
        (dict(layers="7"), "--layers: 7 out of range for a 6-layer model"),
        (dict(layers="-8,-1"), "--layers: -8 out of range"),
        (dict(layers="last"), "--layers='last'"),
        (dict(pooling="sum"), "--pooling='sum'"),
        (dict(max_length=1024), "--max_length=1024: must be in 3..512"),
        (dict(output=str(tmp_path / "no" / "out.npy")), "--output .*no such directory"),
        (dict(mesh_shape=(3, 1, 1)), "--mesh_shape"),
    ]
    for change, message in cases:
        kw = dict(checkpoint=minilm_dir, input_path=good, output=out) | change
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            embed.run(**kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt", "good.txt"]

    # A failure while writing leaves neither file (nor a temporary one).
    class Broken:
        def to_json(self):
            raise RuntimeError("disk full")

    vectors = np.zeros((2, 3), np.float32)
    with pytest.raises(RuntimeError, match="disk full"):
        embed.write_outputs(out, vectors, str(tmp_path / "t.jsonl"), [Broken()])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt", "good.txt"]

    # The command: the message on stderr and a non-zero exit.
    args = [f"--checkpoint={tmp_path / 'nope'}", f"--input={good}", f"--output={out}"]
    res = _cli(*args, one_device=True)
    assert res.returncode == 1
    assert re.search("error: --checkpoint .*nope: no such directory", res.stderr), res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt", "good.txt"]
