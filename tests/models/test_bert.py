"""The encoder and heads: shapes, masking, scan/remat equivalence, dtypes, logical names."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.checkpoints.layout import pad_vocab, stack_layers
from bert_jax.models import attention
from bert_jax.models.bert import SIZES, BertConfig, BertModel, config_for_size
from bert_jax.models.heads import (
    BertForMultipleChoice,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from tests.numerics import assert_close, assert_differ, assert_equal

CFG = config_for_size("tiny", vocab_size=97, max_position_embeddings=64)


def _batch():
    rng = np.random.RandomState(0)
    ids = rng.randint(1, 97, size=(3, 12)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    ids = ids * mask
    types = np.zeros_like(ids)
    types[:, 6:] = 1
    return jnp.asarray(ids), jnp.asarray(types), jnp.asarray(mask)


def _init(model, *args):
    return nn.meta.unbox(model.init(jax.random.key(0), *args)["params"])


def test_outputs_and_shapes():
    ids, types, mask = _batch()
    model = BertModel(CFG)
    params = _init(model, ids)
    out = model.apply(
        {"params": params}, ids, types, mask, output_attentions=True, output_hidden_states=True
    )
    assert out["sequence_output"].shape == (3, 12, 128)
    assert out["pooled_output"].shape == (3, 128)
    assert len(out["attentions"]) == 2 and out["attentions"][0].shape == (3, 2, 12, 12)
    assert len(out["hidden_states"]) == 3
    assert_close(out["hidden_states"][-1], out["sequence_output"])
    probs = np.asarray(out["attentions"][1])
    assert_close(probs.sum(-1), 1.0, rtol=1e-5)
    assert np.all(probs[2, :, :, 3:] == 0.0), "padded keys must get zero attention"


def test_padding_does_not_change_real_positions():
    ids, types, mask = _batch()
    model = BertModel(CFG)
    params = _init(model, ids)
    full = model.apply({"params": params}, ids, types, mask)["sequence_output"]
    short = model.apply({"params": params}, ids[2:, :3], types[2:, :3], mask[2:, :3])
    assert_close(full[2, :3], short["sequence_output"][0], atol=1e-5)


def test_fused_and_explicit_attention_agree():
    # output_attentions forces the einsum path; the default uses
    # jax.nn.dot_product_attention.
    ids, types, mask = _batch()
    model = BertModel(CFG)
    params = _init(model, ids)
    a = model.apply({"params": params}, ids, types, mask)["sequence_output"]
    b = model.apply({"params": params}, ids, types, mask, output_attentions=True)
    assert_close(a, b["sequence_output"], atol=1e-5)


@pytest.mark.parametrize("policy", ["none", "full", "save_dots"])
def test_scan_and_remat_give_identical_outputs_and_grads(policy):
    ids, types, mask = _batch()
    loop = BertModel(CFG)
    params = _init(loop, ids)
    scan_cfg = dataclasses.replace(CFG, scan_layers=True, remat_policy=policy)
    scanned = BertModel(scan_cfg)
    sparams = {**params, "encoder": stack_layers(params["encoder"], CFG.num_layers)}
    assert jax.tree.structure(sparams) == jax.tree.structure(_init(scanned, ids))

    def loss(p, model):
        out = model.apply({"params": p}, ids, types, mask, output_hidden_states=True)
        return jnp.sum(out["pooled_output"] ** 2), out

    (la, oa), ga = jax.value_and_grad(loss, has_aux=True)(params, loop)
    (lb, ob), gb = jax.value_and_grad(loss, has_aux=True)(sparams, scanned)
    assert_close(la, lb, rtol=1e-6)
    for x, y in zip(oa["hidden_states"], ob["hidden_states"], strict=True):
        assert_close(x, y, atol=1e-6)
    ga = {**ga, "encoder": stack_layers(ga["encoder"], CFG.num_layers)}
    jax.tree.map(lambda x, y: assert_close(x, y, atol=1e-5), ga, gb)
    # remat alone (no scan) changes nothing either.
    remat = BertModel(dataclasses.replace(CFG, remat_policy=policy))
    lc, _ = loss(params, remat)
    assert_close(la, lc, rtol=1e-6)


def test_bf16_compute_with_fp32_params():
    ids, types, mask = _batch()
    model16 = BertForPreTraining(dataclasses.replace(CFG, dtype="bfloat16"))
    params = _init(model16, ids)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    out16 = model16.apply({"params": params}, ids, types, mask, output_attentions=True)
    out32 = BertForPreTraining(CFG).apply({"params": params}, ids, types, mask)
    assert out16["sequence_output"].dtype == jnp.bfloat16
    assert out16["attentions"][0].dtype == jnp.float32  # softmax in fp32
    assert out16["mlm_logits"].dtype == jnp.float32
    assert_close(
        np.asarray(out16["sequence_output"], np.float32), out32["sequence_output"], atol=0.1
    )


def test_every_param_has_logical_names():
    ids, _, _ = _batch()
    for cfg in (CFG, dataclasses.replace(CFG, scan_layers=True)):
        variables = BertForPreTraining(cfg).init(jax.random.key(0), ids)
        specs = nn.get_partition_spec(variables)["params"]
        flat = jax.tree_util.tree_flatten_with_path(
            specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
        )[0]
        for path, spec in flat:
            assert isinstance(spec, jax.sharding.PartitionSpec), path
            assert any(name is not None for name in spec), f"{path} has no logical names"
        q = specs["bert"]["encoder"]
        q = q["layers"] if cfg.scan_layers else q["layer_0"]
        expected = ("embed", "heads", "kv")
        assert tuple(q["attention"]["query"]["kernel"]) == (
            ("layers",) + expected if cfg.scan_layers else expected
        )
    emb = specs["bert"]["embeddings"]["word_embeddings"]["embedding"]
    assert tuple(emb) == ("vocab", "embed")


def test_heads():
    ids, types, mask = _batch()
    pre = BertForPreTraining(CFG)
    params = _init(pre, ids)
    positions = jnp.array([[1, 2], [0, 5], [1, 1]])
    full = pre.apply({"params": params}, ids, types, mask)
    at = pre.apply({"params": params}, ids, types, mask, masked_positions=positions)
    assert full["mlm_logits"].shape == (3, 12, 97) and at["mlm_logits"].shape == (3, 2, 97)
    want = np.take_along_axis(np.asarray(full["mlm_logits"]), np.asarray(positions)[..., None], 1)
    assert_close(at["mlm_logits"], want, atol=1e-5)
    assert full["nsp_logits"].shape == (3, 2)
    assert "nsp" in params and "mlm" in params
    assert "nsp" not in _init(BertForPreTraining(CFG, nsp=False), ids)

    cls = BertForSequenceClassification(CFG, num_labels=1)
    assert cls.apply({"params": _init(cls, ids)}, ids)["logits"].shape == (3, 1)
    tag = BertForTokenClassification(CFG, num_labels=9)
    assert tag.apply({"params": _init(tag, ids)}, ids)["logits"].shape == (3, 12, 9)
    qa = BertForQuestionAnswering(CFG)
    out = qa.apply({"params": _init(qa, ids)}, ids, types, mask)
    assert out["start_logits"].shape == out["end_logits"].shape == (3, 12)
    mc = BertForMultipleChoice(CFG)
    choices = jnp.stack([ids, ids], axis=1)  # (B, C=2, L)
    mparams = _init(mc, choices)
    logits = mc.apply({"params": mparams}, choices, None, jnp.stack([mask, mask], 1))["logits"]
    assert logits.shape == (3, 2)
    assert_close(logits[:, 0], logits[:, 1], atol=1e-6)


def test_dropout_only_when_training():
    ids, types, mask = _batch()
    model = BertForSequenceClassification(CFG, num_labels=2)
    params = _init(model, ids)

    def run(det, seed):
        return model.apply(
            {"params": params},
            ids,
            types,
            mask,
            deterministic=det,
            rngs={"dropout": jax.random.key(seed)},
        )["logits"]

    assert_equal(run(True, 0), run(True, 1))
    assert_differ(run(False, 0), run(False, 1))


def test_sizes_table_and_param_counts():
    assert SIZES["base"] == (12, 768, 12) and SIZES["large"] == (24, 1024, 16)
    ids = jnp.zeros((1, 8), jnp.int32)
    shapes = jax.eval_shape(lambda: BertModel(config_for_size("base")).init(jax.random.key(0), ids))
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(shapes["params"])))
    # HF BertModel(bert-base-uncased) has 109,482,240 parameters.
    assert n == 109_482_240


def test_config_errors():
    with pytest.raises(ValueError, match="not divisible"):
        BertConfig(hidden_size=100, num_heads=12)
    with pytest.raises(ValueError, match="hidden_act"):
        BertConfig(hidden_act="swish")
    with pytest.raises(ValueError, match="unknown model size"):
        config_for_size("huge")
    with pytest.raises(ValueError, match="remat_policy"):
        BertConfig(remat_policy="some")


def test_a_padded_vocabulary_computes_the_same_logits():
    """vocab_pad_multiple=128: the table has 128 rows (97 real), the logits 97 columns."""
    ids, types, mask = _batch()
    padded_cfg = dataclasses.replace(CFG, vocab_pad_multiple=128)
    assert padded_cfg.padded_vocab_size == 128
    model, padded = BertForPreTraining(CFG), BertForPreTraining(padded_cfg)
    params = _init(model, ids)
    bigger = pad_vocab(params, 128)
    assert bigger["bert"]["embeddings"]["word_embeddings"]["embedding"].shape == (128, 128)
    assert bigger["mlm"]["bias"].shape == (128,)
    assert_equal(bigger["mlm"]["bias"][97:], np.zeros(31, np.float32))
    assert jax.tree.structure(_init(padded, ids)) == jax.tree.structure(bigger)
    positions = jnp.asarray([[1, 2], [0, 3], [1, 1]])
    a = model.apply({"params": params}, ids, types, mask, masked_positions=positions)
    b = padded.apply({"params": bigger}, ids, types, mask, masked_positions=positions)
    assert b["mlm_logits"].shape == a["mlm_logits"].shape == (3, 2, 97)
    assert_close(b["mlm_logits"], a["mlm_logits"], atol=1e-6)
    assert_close(b["nsp_logits"], a["nsp_logits"], atol=1e-6)
    # Back to the real vocabulary: the same parameters.
    jax.tree.map(assert_equal, pad_vocab(bigger, 97), params)


def test_packed_examples_compute_what_each_computes_alone():
    """Two examples in one row (example_ids, restarting positions, per-example [CLS]):
    the same outputs as each in its own padded row. No attention crosses examples."""
    model = BertForPreTraining(CFG)
    rng = np.random.RandomState(1)
    lengths, width = (7, 5), 16
    examples = [rng.randint(5, 97, size=n).astype(np.int32) for n in lengths]
    types = [np.asarray([0] * 3 + [1] * (n - 3), np.int32) for n in lengths]
    masked = [np.asarray([2, 5]), np.asarray([1, 3])]
    # Alone: one padded row each.
    ids, tt, mask = (np.zeros((2, width), np.int32) for _ in range(3))
    for i, (e, t) in enumerate(zip(examples, types, strict=True)):
        ids[i, : len(e)], tt[i, : len(e)], mask[i, : len(e)] = e, t, 1
    params = _init(model, jnp.asarray(ids))
    alone = model.apply(
        {"params": params}, ids, tt, mask, masked_positions=np.stack(masked).astype(np.int32)
    )
    # Packed: both in one row, then padding.
    row = np.concatenate(examples)
    p_ids, p_tt, p_mask, p_ex, p_pos = (np.zeros((1, width), np.int32) for _ in range(5))
    p_ids[0, :12], p_tt[0, :12], p_mask[0, :12] = row, np.concatenate(types), 1
    p_ex[0, :12] = [1] * 7 + [2] * 5
    p_pos[0, :12] = list(range(7)) + list(range(5))
    positions = np.asarray([[2, 5, 7 + 1, 7 + 3]], np.int32)
    packed = model.apply(
        {"params": params},
        p_ids,
        p_tt,
        p_mask,
        masked_positions=positions,
        position_ids=p_pos,
        example_ids=p_ex,
        cls_positions=np.asarray([[0, 7]], np.int32),
    )
    seq = packed["sequence_output"][0]
    assert_close(seq[:7], alone["sequence_output"][0, :7], atol=1e-5)
    assert_close(seq[7:12], alone["sequence_output"][1, :5], atol=1e-5)
    assert_close(packed["mlm_logits"][0], alone["mlm_logits"].reshape(4, -1), atol=1e-5)
    assert packed["nsp_logits"].shape == (1, 2, 2)
    assert_close(packed["nsp_logits"][0], alone["nsp_logits"], atol=1e-5)
    assert_close(packed["pooled_output"][0], alone["pooled_output"], atol=1e-5)


@pytest.mark.parametrize("impl", ["", "xla"])
def test_attention_paths_agree_on_a_packed_mask(impl):
    """attention.attend: the fused path ("" runs "xla") and the explicit one agree
    on a (B, L, L) packed mask; the explicit one returns fp32 probabilities."""
    q, k, v = (jax.random.normal(jax.random.key(i), (2, 8, 2, 4)) for i in range(3))
    ids = jnp.asarray([[1, 1, 1, 2, 2, 2, 2, 0], [1] * 8])
    mask, segments = attention.masks(jnp.ones_like(ids), ids)
    assert mask.shape == (2, 8, 8)
    fused, none = attention.attend(q, k, v, mask, segments, impl=impl)
    explicit, probs = attention.attend(q, k, v, mask, segments, impl=impl, return_weights=True)
    assert none is None and probs.dtype == jnp.float32 and probs.shape == (2, 2, 8, 8)
    assert_close(fused, explicit, atol=1e-5)
    assert_equal(np.asarray(probs[0, :, :3, 3:]), np.zeros((2, 3, 5), np.float32))
    with pytest.raises(ValueError, match="attention impl 'flash'"):
        attention.attend(q, k, v, mask, segments, impl="flash")
