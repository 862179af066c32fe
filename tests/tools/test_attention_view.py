"""Attention views and analyses on the real MiniLM checkpoint: the HTML is standalone and
carries the model's own weights, the analyses equal a direct computation, bad input fails
clearly."""

import io
import json
import re

import matplotlib
import numpy as np
import pytest

from bert_jax.checkpoints import pretrained
from bert_jax.tokenizers.wordpiece import BertTokenizer
from bert_jax.tools import attention_analysis as aa
from bert_jax.tools import attention_view as av
from tests.numerics import assert_close, assert_equal

matplotlib.use("Agg")

TEXT_A, TEXT_B = "The cat sat on the mat.", "It fell asleep, purring."


@pytest.fixture(scope="module")
def loaded(minilm_dir):
    model, params = pretrained.load(minilm_dir)
    return model, params, BertTokenizer(str(minilm_dir / "vocab.txt"), do_lower_case=True)


@pytest.fixture(scope="module")
def pair(loaded):
    return av.attention(*loaded, TEXT_A, TEXT_B)


def embedded(html: str) -> dict:
    """The JSON data block of a view, parsed back; `weights` are its attention weights."""
    blocks = re.findall(r'<script type="application/json" id="[^"]+">(.*?)</script>', html, re.S)
    assert len(blocks) == 1
    data = json.loads(blocks[0])
    return data | {"weights": np.asarray(data["attn"], np.float64) / data["scale"]}


ROUNDING = 0.5 * 10**-av.DECIMALS + 1e-9


def test_attention_is_the_models_own(loaded, pair):
    model, params, tok = loaded
    enc = tok.encode(TEXT_A, TEXT_B)
    assert pair.tokens == tuple(tok.convert_ids_to_tokens(enc["input_ids"]))
    assert pair.tokens[pair.b_start - 1] == "[SEP]" and pair.tokens[pair.b_start] == "it"
    out = model.apply(
        {"params": params},
        *(np.asarray([enc[k]]) for k in ("input_ids", "token_type_ids", "attention_mask")),
        output_attentions=True,
    )
    n = len(pair.tokens)
    assert pair.weights.shape == (6, 12, n, n)
    assert_close(pair.weights, np.stack([a[0] for a in out["attentions"]]), atol=1e-6)
    assert_close(pair.weights.sum(-1), np.ones((6, 12, n)), atol=1e-5)
    single = av.attention(*loaded, TEXT_A)
    assert single.b_start is None and single.tokens == pair.tokens[: pair.b_start]


def test_views_are_standalone_html_with_the_weights(pair, tmp_path):
    for view in (av.head_view(pair, layer=3), av.model_view(pair)):
        html = view._repr_html_()
        # Inline only: no external script, stylesheet or image, no network at all.
        assert not re.search(r"https?://|\bsrc\s*=|<link\b|@import", html)
        assert "<script>" in html and "<style>" in html
        data = embedded(html)
        assert data["tokens"] == list(pair.tokens) and data["b_start"] == pair.b_start
        assert data["layers"] == list(range(6)) and data["heads"] == list(range(12))
        # Rounded to DECIMALS: within half a unit of the last place.
        assert_close(data["weights"], pair.weights, atol=ROUNDING)
        path = view.save(tmp_path / f"{data['kind']}.html")
        text = path.read_text(encoding="utf-8")
        assert text.startswith("<!DOCTYPE html>") and html in text
        assert not re.search(r"https?://", text)
    assert embedded(av.head_view(pair, layer=3)._repr_html_())["layer"] == 3


def test_a_subset_of_layers_and_heads(pair):
    data = embedded(av.model_view(pair, layers=[1, -1], heads=[0, 5], links="AB")._repr_html_())
    assert data["layers"] == [1, 5] and data["heads"] == [0, 5] and data["filter"] == "AB"
    want = pair.weights[[1, 5]][:, [0, 5]]
    assert_close(data["weights"], want, atol=ROUNDING)
    first = embedded(av.head_view(pair, layer=5, layers=[2, 5])._repr_html_())["layer"]
    assert first == 1  # the index into the included layers


def test_tokens_cannot_break_out_of_the_script():
    tokens = ("[CLS]", "</script><b>", "&", "[SEP]")
    weights = np.full((1, 2, 4, 4), 0.25, np.float32)
    html = av.head_view(av.Attention(tokens, weights))._repr_html_()
    assert html.count("</script>") == 2  # the data block's and the code's own
    assert embedded(html)["tokens"] == list(tokens)
    assert_equal(embedded(html)["weights"], weights)


def test_two_views_of_one_input_get_distinct_ids(pair):
    ids = [re.search(r'id="([^"]+)"', av.head_view(pair)._repr_html_())[1] for _ in range(2)]
    assert ids[0] != ids[1]


def test_analyses_equal_a_direct_computation(pair):
    w = pair.weights.astype(np.float64)
    layers, heads, n, _ = w.shape
    kinds = aa.token_kind_attention(pair)
    for name, members in (("[CLS]", {"[CLS]"}), ("[SEP]", {"[SEP]"}), (". or ,", {".", ","})):
        keys = [j for j, t in enumerate(pair.tokens) if t in members]
        assert keys, name
        want = np.zeros((layers, heads))
        for layer in range(layers):
            for head in range(heads):
                want[layer, head] = np.mean([w[layer, head, q, keys].sum() for q in range(n)])
        assert_close(kinds[name], want, atol=1e-6)
    ent = np.zeros((layers, heads))
    for layer in range(layers):
        for head in range(heads):
            rows = [-(p[p > 0] * np.log(p[p > 0])).sum() for p in w[layer, head]]
            ent[layer, head] = np.mean(rows)
    assert_close(aa.head_entropy(pair), ent, atol=1e-5)
    assert (ent > 0).all() and (ent < np.log(n)).all()


def test_entropy_of_known_distributions():
    one_hot = np.zeros((1, 2, 3, 3), np.float32)
    one_hot[..., 0] = 1.0
    one_hot[0, 1] = 1 / 3  # head 1: uniform
    ent = aa.head_entropy(av.Attention(("[CLS]", "a", "[SEP]"), one_hot))
    assert_close(ent, [[0.0, np.log(3)]], atol=1e-6)


def test_figures_render_without_a_display(pair):
    for fig, panels in ((aa.plot_token_kind_attention(pair), 3), (aa.plot_head_entropy(pair), 1)):
        assert len(fig.axes) == panels
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        assert buf.getvalue().startswith(b"\x89PNG")


def test_bad_input_fails_clearly(loaded, pair):
    out_of_range = r"layer 6 is out of range: the model has 6 layers \(0-5\)"
    with pytest.raises(ValueError, match=out_of_range):
        av.head_view(pair, layer=6)
    with pytest.raises(ValueError, match="layer -7 is out of range"):
        av.model_view(pair, layers=[0, -7])
    with pytest.raises(ValueError, match=r"head 12 is out of range: the model has 12 heads"):
        av.model_view(pair, heads=[12])
    with pytest.raises(ValueError, match="not among the included layers"):
        av.head_view(pair, layer=0, layers=[2, 3])
    with pytest.raises(ValueError, match="links 'A->B' is not one of"):
        av.head_view(pair, links="A->B")
    with pytest.raises(ValueError, match="needs a sentence pair"):
        av.head_view(av.Attention(pair.tokens, pair.weights), links="AB")
    for a, b, name in (("", None, "text_a"), ("  \n", None, "text_a"), ("Hi.", "", "text_b")):
        with pytest.raises(ValueError, match=f"{name} is empty"):
            av.attention(*loaded, a, b)
    with pytest.raises(ValueError, match="the input is 602 tokens; the model takes at most 512"):
        av.attention(*loaded, "word " * 600)
    with pytest.raises(ValueError, match=r"weights must be \(layers, heads, 2, 2\)"):
        av.Attention(("[CLS]", "[SEP]"), np.zeros((1, 1, 3, 3)))


def test_from_checkpoint_reads_the_tokenizer_setting(minilm_dir, pair, tmp_path):
    att = av.from_checkpoint(minilm_dir, TEXT_A, TEXT_B)
    assert att.tokens == pair.tokens
    assert_close(att.weights, pair.weights, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="no tokenizer files in .*the tokenizer needs"):
        av.from_checkpoint(tmp_path, TEXT_A)
