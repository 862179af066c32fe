"""The BERT family as options of the one encoder: ALBERT, RoBERTa, DistilBERT switches.

HF parity of these options is tests/checkpoints/test_family_checkpoints.py; here: defaults
are BERT, ALBERT's shared layer under scan equals the loop, RoBERTa's positions,
DistilBERT's missing tables, and logical names on every new parameter.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.models.bert import BertConfig, BertModel, config_for_size
from bert_jax.models.heads import (
    BertForPreTraining,
    BertForSequenceClassification,
    BertForTokenClassification,
    Classifier,
)
from tests.numerics import assert_close, assert_equal, assert_trees_close, max_abs_diff

CFG = config_for_size("tiny", vocab_size=97, max_position_embeddings=64, num_layers=3)
ALBERT = dataclasses.replace(CFG, embedding_size=32, share_layers=True)
ROBERTA = dataclasses.replace(CFG, position_offset=2, type_vocab_size=1, use_pooler=False)
DISTILBERT = dataclasses.replace(CFG, use_token_type_embeddings=False, use_pooler=False)


def _batch():
    rng = np.random.RandomState(0)
    ids = rng.randint(3, 97, size=(3, 12)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    types = np.zeros_like(ids)
    types[:, 6:] = 1
    return jnp.asarray(ids * mask), jnp.asarray(types), jnp.asarray(mask)


def _shapes(model, *args):
    return jax.eval_shape(model.init, jax.random.key(0), *args)


def _params(model, *args):
    """Random parameters from numpy (compiling the init's RNG is the slow part on CPU)."""
    rng = np.random.default_rng(0)
    shapes = nn.unbox(_shapes(model, *args))["params"]
    return jax.tree.map(lambda s: (0.1 * rng.normal(size=s.shape)).astype(np.float32), shapes)


def test_defaults_are_bert():
    c = BertConfig()
    assert (c.embedding_size, c.share_layers, c.position_offset) == (None, False, 0)
    assert c.use_token_type_embeddings and c.use_pooler and c.embedding_width == c.hidden_size
    ids, types, mask = _batch()
    params = nn.unbox(_shapes(BertModel(CFG), ids))["params"]
    assert set(params) == {"embeddings", "encoder", "pooler"}
    assert set(params["embeddings"]) == {
        "word_embeddings",
        "position_embeddings",
        "token_type_embeddings",
        "layer_norm",
    }
    assert set(params["encoder"]) == {"layer_0", "layer_1", "layer_2"}


def test_albert_shared_layer_scan_equals_loop_and_unrolled_copies():
    ids, types, mask = _batch()
    model = BertForPreTraining(ALBERT)
    scanned = BertForPreTraining(dataclasses.replace(ALBERT, scan_layers=True))
    unshared = BertForPreTraining(dataclasses.replace(ALBERT, share_layers=False))
    params = nn.unbox(_shapes(model, ids))["params"]
    assert set(params["bert"]["encoder"]) == {"shared_layer"}
    emb = params["bert"]["embeddings"]
    assert emb["word_embeddings"]["embedding"].shape == (97, 32)
    assert emb["projection"]["kernel"].shape == (32, 128)
    assert params["mlm"]["transform"]["kernel"].shape == (128, 32)
    shapes = nn.unbox(_shapes(scanned, ids))["params"]
    assert jax.tree.map(jnp.shape, shapes) == jax.tree.map(jnp.shape, params)

    @jax.jit  # one compile for the whole comparison
    def run(p):

        def outputs(m):
            return m.apply({"params": p}, ids, types, mask, output_hidden_states=True)

        # Sharing is the same as three layers holding copies of one.
        copies = {f"layer_{i}": p["bert"]["encoder"]["shared_layer"] for i in range(3)}
        p3 = {**p, "bert": {**p["bert"], "encoder": copies}}
        o3 = unshared.apply({"params": p3}, ids, types, mask)
        return outputs(model), outputs(scanned), o3

    o1, o2, o3 = run(_params(model, ids))
    assert len(o1["hidden_states"]) == len(o2["hidden_states"]) == 4
    assert_trees_close(o2, o1, atol=1e-5)
    assert_close(o3["mlm_logits"], o1["mlm_logits"], atol=1e-5)


def test_new_params_have_logical_names():
    ids, _, _ = _batch()
    for cfg in (ALBERT, dataclasses.replace(ALBERT, scan_layers=True)):
        specs = nn.get_partition_spec(_shapes(BertForPreTraining(cfg), ids))
        specs = specs["params"]
        flat = jax.tree_util.tree_flatten_with_path(
            specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
        )[0]
        for path, spec in flat:
            assert any(name is not None for name in spec), f"{path} has no logical names"
        proj = specs["bert"]["embeddings"]["projection"]
        assert tuple(proj["kernel"]) == ("embed", "embed_out")
        # Shared layer: broadcast over scan steps, no `layers` axis.
        q = specs["bert"]["encoder"]["shared_layer"]["attention"]["query"]["kernel"]
        assert tuple(q) == ("embed", "heads", "kv")


def test_roberta_positions_count_real_tokens_after_the_padding_index():
    ids, types, mask = _batch()
    model = BertModel(ROBERTA)
    # fairseq make_positions: real tokens 2, 3, ...; padding 1.
    positions = np.where(np.asarray(mask) == 1, np.cumsum(mask, axis=1) + 1, 1)
    # Left padding computes the same as right padding at the real tokens.
    left = np.concatenate([np.ones((1, 9), np.int32), np.asarray(ids)[2:3, :3]], axis=1)
    left_mask = (np.arange(12) >= 9).astype(np.int32)[None]

    # Rows 1 (7 tokens) and 2 (3 tokens) packed into one row, positions from 0
    # per example as the packers write them: the model shifts them.
    packed = np.zeros((1, 12), np.int32)
    packed[0, :10] = np.concatenate([np.asarray(ids)[1, :7], np.asarray(ids)[2, :3]])
    example_ids = np.asarray([[1] * 7 + [2] * 3 + [0] * 2], np.int32)
    packed_pos = np.asarray([list(range(7)) + list(range(3)) + [0, 0]], np.int32)

    @jax.jit
    def run(p):
        v = {"params": p}
        return (
            model.apply(v, ids, None, mask),
            model.apply(v, ids, None, mask, positions),
            model.apply(v, left, None, left_mask),
            model.apply(
                v,
                packed,
                None,
                (example_ids > 0).astype(np.int32),
                packed_pos,
                example_ids=example_ids,
                cls_positions=np.asarray([[0, 7]], np.int32),
            ),
        )

    out, explicit, left_out, packed_out = run(_params(model, ids))
    assert "pooled_output" not in out
    assert_equal(out["sequence_output"], explicit["sequence_output"])
    a, b = out["sequence_output"][2, :3], left_out["sequence_output"][0, 9:]
    assert_close(b, a, atol=1e-5)
    seq = packed_out["sequence_output"][0]
    assert_close(seq[:7], out["sequence_output"][1, :7], atol=1e-5)
    assert_close(seq[7:10], out["sequence_output"][2, :3], atol=1e-5)


def test_distilbert_has_no_token_types_and_no_pooler():
    ids, types, mask = _batch()
    model = BertModel(DISTILBERT)
    params = _params(model, ids)
    assert "token_type_embeddings" not in params["embeddings"] and "pooler" not in params

    @jax.jit
    def run(p):
        v = {"params": p}
        return model.apply(v, ids, types, mask), model.apply(v, ids, jnp.zeros_like(types), mask)

    a, b = run(params)
    assert_equal(a["sequence_output"], b["sequence_output"])  # types are ignored
    assert "pooled_output" not in a


@pytest.mark.parametrize("cfg,act", [(ROBERTA, "tanh"), (DISTILBERT, "relu")])
def test_classifier_with_a_hidden_layer_reads_the_first_token(cfg, act):
    ids, types, mask = _batch()
    model = BertForSequenceClassification(cfg, num_labels=3, hidden_act=act)
    _shapes(BertForTokenClassification(cfg, num_labels=5), ids)  # no pooler needed

    params = _params(model, ids)
    out = jax.jit(model.apply)({"params": params}, ids, types, mask)
    head = params["classifier"]
    assert head["hidden"]["kernel"].shape == (128, 128)
    assert head["dense"]["kernel"].shape == (128, 3)
    h = out["sequence_output"][:, 0] @ head["hidden"]["kernel"] + head["hidden"]["bias"]
    h = jnp.tanh(h) if act == "tanh" else jax.nn.relu(h)
    assert_close(out["logits"], h @ head["dense"]["kernel"] + head["dense"]["bias"], atol=1e-5)
    # Dropout only in training (the head alone: a small compile).
    x = out["sequence_output"][:, 0]
    model_head = Classifier(cfg, 3, hidden_act=act)
    train = model_head.apply(
        {"params": head}, x, deterministic=False, rngs={"dropout": jax.random.key(1)}
    )
    assert_close(model_head.apply({"params": head}, x), out["logits"], atol=1e-6)
    assert max_abs_diff(train, out["logits"]) > 0


def test_variant_errors():
    ids, _, _ = _batch()
    with pytest.raises(ValueError, match="embedding_size"):
        dataclasses.replace(CFG, embedding_size=0)
    with pytest.raises(ValueError, match="position_offset"):
        dataclasses.replace(CFG, position_offset=-1)
    with pytest.raises(ValueError, match="use_pooler"):
        _shapes(BertForSequenceClassification(DISTILBERT), ids)
    with pytest.raises(ValueError, match="use_pooler"):
        _shapes(BertForPreTraining(DISTILBERT), ids)
    with pytest.raises(ValueError, match="hidden_act"):
        _shapes(BertForSequenceClassification(CFG, hidden_act="gelu"), ids)


def test_albert_shared_layer_gradients_under_scan_equal_the_loop():
    """Broadcast parameters under nn.scan: their gradient sums every step's."""
    ids, types, mask = _batch()
    cfg = dataclasses.replace(ALBERT, num_layers=2)
    loop, scanned = BertModel(cfg), BertModel(dataclasses.replace(cfg, scan_layers=True))

    @jax.jit
    def grads(p):
        def loss(p, m):
            return (m.apply({"params": p}, ids, types, mask)["sequence_output"] ** 2).mean()

        return jax.grad(loss)(p, loop), jax.grad(loss)(p, scanned)

    g1, g2 = grads(_params(loop, ids))
    assert_trees_close(g2, g1, atol=1e-6)


def test_classifier_dropout_is_the_heads_own_rate():
    """classifier_dropout (HF classifier_dropout_prob / seq_classif_dropout)
    sets the heads' dropout; the encoder keeps hidden_dropout."""
    ids, types, mask = _batch()
    x = jnp.ones((512, 128))
    for rate, want in ((None, 0.1), (0.5, 0.5), (0.0, 0.0)):
        cfg = dataclasses.replace(CFG, classifier_dropout=rate)
        head = Classifier(cfg, 2)
        v = head.init(jax.random.key(0), x)
        # The dense's input: ones, dropped to 0 or scaled to 1 / (1 - rate).
        kept = head.apply(
            v,
            x,
            deterministic=False,
            rngs={"dropout": jax.random.key(1)},
            capture_intermediates=True,
        )
        captured = jax.tree.leaves(kept[1]["intermediates"]["Dropout_0"])[0]
        assert_close(float(jnp.mean(captured == 0)), want, atol=0.01)
