"""Checkpoint import/export parity against HF transformers (PyTorch) and the TF format.

Every comparison is fp32 on batches with padding; the max abs differences
measured here are quoted in docs/model.md.
"""

import dataclasses
import json
import re
import shutil

import jax
import numpy as np
import pytest

from bert_jax.checkpoints import pretrained
from bert_jax.models.bert import BertModel
from bert_jax.models.heads import BertForPreTraining
from bert_jax.tokenizers.wordpiece import BertTokenizer
from tests import checkpoint_sources
from tests.checkpoint_sources import torch, transformers
from tests.numerics import assert_close, assert_equal, max_abs_diff

TOL = 1e-4


_hf_pretraining = checkpoint_sources.hf_pretraining


def _padded_batch(vocab, batch=3, length=16, seed=0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(1, vocab, size=(batch, length)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 10:] = 0
    mask[2, 5:] = 0
    types = np.zeros_like(ids)
    types[:, length // 2 :] = 1
    return ids * mask, types, mask


def _hf_outputs(model, ids, types, mask):
    with torch.no_grad():
        o = model(
            input_ids=torch.tensor(ids),
            token_type_ids=torch.tensor(types),
            attention_mask=torch.tensor(mask),
            output_hidden_states=True,
        )
    return {
        "sequence_output": o.hidden_states[-1].numpy(),
        "mlm_logits": o.prediction_logits.numpy(),
        "nsp_logits": o.seq_relationship_logits.numpy(),
        "pooled_output": model.bert.pooler(o.hidden_states[-1]).detach().numpy(),
    }


def _max_diffs(ours, ref, mask):
    """Max abs difference per output over real positions (padded query positions
    are not defined outputs); fails on a non-finite value anywhere in either."""
    m = mask[..., None].astype(bool)
    return {
        k: max_abs_diff(np.asarray(ours[k], np.float32), v, where=m if v.ndim == 3 else None)
        for k, v in ref.items()
    }


def _assert_parity(diffs, tol=TOL):
    bad = {k: v for k, v in diffs.items() if not v < tol}
    assert not bad, f"above {tol}: {bad}"


TINY = dict(
    vocab_size=211,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=96,
    max_position_embeddings=40,
)
BASE_SHAPED = dict(
    vocab_size=30522,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
)


@pytest.mark.parametrize("cfg", [TINY, BASE_SHAPED], ids=["tiny", "base"])
def test_hf_pretraining_parity(tmp_path, cfg):
    hf, d = _hf_pretraining(tmp_path, **cfg)
    model, params = pretrained.load(d)
    assert isinstance(model, BertForPreTraining) and model.nsp
    ids, types, mask = _padded_batch(cfg["vocab_size"])
    ours = model.apply({"params": params}, ids, types, mask, deterministic=True)
    diffs = _max_diffs(ours, _hf_outputs(hf, ids, types, mask), mask)
    print("HF BertForPreTraining parity", cfg["hidden_size"], diffs)
    _assert_parity(diffs)


def test_hf_attentions_and_hidden_states(tmp_path):
    hf, d = _hf_pretraining(tmp_path, **TINY)
    model, params = pretrained.load(d)
    ids, types, mask = _padded_batch(TINY["vocab_size"])
    ours = model.apply(
        {"params": params}, ids, types, mask, output_attentions=True, output_hidden_states=True
    )
    hf.set_attn_implementation("eager")  # sdpa does not return attention weights
    with torch.no_grad():
        o = hf.bert(
            input_ids=torch.tensor(ids),
            token_type_ids=torch.tensor(types),
            attention_mask=torch.tensor(mask),
            output_attentions=True,
            output_hidden_states=True,
        )
    for a, b in zip(ours["hidden_states"], o.hidden_states, strict=True):
        assert_close(np.asarray(a)[mask == 1], b.numpy()[mask == 1], atol=TOL)
    for a, b in zip(ours["attentions"], o.attentions, strict=True):
        sel = mask.astype(bool)[:, None, :, None]
        assert_close(np.where(sel, a, 0), np.where(sel, b.numpy(), 0), atol=TOL)


def _glue_sentences(shared_data, n=64):
    lines = (shared_data / "glue" / "SST-2" / "dev.tsv").read_text(encoding="utf-8").splitlines()
    return [line.split("\t")[0] for line in lines[1 : n + 1]]


def test_minilm_real_checkpoint_on_glue_sentences(minilm_dir, shared_data):
    """all-MiniLM-L6-v2 (pip package) vs HF BertModel on real SST-2 dev sentences."""
    model, params = pretrained.load(minilm_dir)
    assert isinstance(model, BertModel)
    assert (model.config.num_layers, model.config.hidden_size, model.config.num_heads) == (
        6,
        384,
        12,
    )
    tok = BertTokenizer(str(minilm_dir / "vocab.txt"), do_lower_case=True)
    enc = tok.encode_batch(_glue_sentences(shared_data), max_length=64)
    assert (enc["attention_mask"] == 0).any(), "batch must contain padding"
    assert (enc["input_ids"] > 999).mean() > 0.2, "real word pieces, not [UNK]s"
    ours = model.apply(
        {"params": params},
        enc["input_ids"],
        enc["token_type_ids"],
        enc["attention_mask"],
        deterministic=True,
    )
    hf = transformers.BertModel.from_pretrained(str(minilm_dir)).eval()
    with torch.no_grad():
        o = hf(**{k: torch.tensor(np.asarray(v, np.int64)) for k, v in enc.items()})
    ref = {"sequence_output": o.last_hidden_state.numpy(), "pooled_output": o.pooler_output.numpy()}
    diffs = _max_diffs(ours, ref, enc["attention_mask"])
    print("MiniLM parity", diffs)
    # Measured on the 2-core CPU machine: 3.5e-6 (sequence), 3.0e-7 (pooled),
    # the numbers docs/model.md quotes. The bounds are about 3x those: room for
    # another CPU's rounding, none for a real mismatch.
    _assert_parity({"sequence_output": diffs["sequence_output"]}, tol=1e-5)
    _assert_parity({"pooled_output": diffs["pooled_output"]}, tol=1e-6)


_write_tf_checkpoint = checkpoint_sources.write_tf_checkpoint


# ---------------------------------------------------------------------------
# Original TF checkpoints, by Google's variable names (not bert_jax's table).
# ---------------------------------------------------------------------------


def google_bert_variables(
    vocab, hidden, layers, intermediate, positions, types=2, head="pretraining", labels=3
):
    """{variable name: shape} of an original BERT checkpoint, as Google's code makes them.

    Facts from github.com/google-research/bert, each read in the file named
    (stored versions modeling.py 0017e7ec, run_pretraining.py 02102dba,
    run_classifier.py 02f461f1, run_squad.py 1cd50d7a):
    - modeling.py `BertModel.__init__`: scopes bert/embeddings, bert/encoder,
      bert/pooler (`tf.layers.dense(first_token, hidden_size)`, the default
      layer name "dense"); `embedding_lookup`: word_embeddings
      [vocab_size, embedding_size]; `embedding_postprocessor`:
      token_type_embeddings [token_type_vocab_size, width],
      position_embeddings [max_position_embeddings, width], then `layer_norm`
      (tf.contrib.layers.layer_norm, scope "LayerNorm": beta, gamma [width]).
    - modeling.py `transformer_model`: scope layer_%d; attention/self holds
      `attention_layer`'s dense layers query, key, value ([hidden, heads x
      head_size] kernels: tf.layers.dense kernels are [in, out]);
      attention/output/dense [hidden, hidden] + attention/output/LayerNorm;
      intermediate/dense [hidden, intermediate]; output/dense
      [intermediate, hidden] + output/LayerNorm.
    - run_pretraining.py `get_masked_lm_output`: cls/predictions/transform/
      dense [hidden, hidden] + transform/LayerNorm, cls/predictions/output_bias
      [vocab_size] (the output weights are the word embeddings);
      `get_next_sentence_output`: cls/seq_relationship/output_weights
      [2, hidden_size] ([out, in]: used with transpose_b=True) and
      output_bias [2].
    - run_classifier.py `create_model`: output_weights [num_labels,
      hidden_size] and output_bias [num_labels], at the top level.
    - run_squad.py `create_model`: cls/squad/output_weights [2, hidden_size],
      cls/squad/output_bias [2].
    """
    v = {
        "bert/embeddings/word_embeddings": (vocab, hidden),
        "bert/embeddings/token_type_embeddings": (types, hidden),
        "bert/embeddings/position_embeddings": (positions, hidden),
        "bert/embeddings/LayerNorm/gamma": (hidden,),
        "bert/embeddings/LayerNorm/beta": (hidden,),
    }

    def dense(scope, n_in, n_out):
        v[f"{scope}/kernel"], v[f"{scope}/bias"] = (n_in, n_out), (n_out,)

    def layer_norm(scope):
        v[f"{scope}/gamma"] = v[f"{scope}/beta"] = (hidden,)

    for i in range(layers):
        s = f"bert/encoder/layer_{i}"
        for name in ("query", "key", "value"):
            dense(f"{s}/attention/self/{name}", hidden, hidden)
        dense(f"{s}/attention/output/dense", hidden, hidden)
        layer_norm(f"{s}/attention/output/LayerNorm")
        dense(f"{s}/intermediate/dense", hidden, intermediate)
        dense(f"{s}/output/dense", intermediate, hidden)
        layer_norm(f"{s}/output/LayerNorm")
    dense("bert/pooler/dense", hidden, hidden)
    if head == "pretraining":
        dense("cls/predictions/transform/dense", hidden, hidden)
        layer_norm("cls/predictions/transform/LayerNorm")
        v["cls/predictions/output_bias"] = (vocab,)
        v["cls/seq_relationship/output_weights"] = (2, hidden)
        v["cls/seq_relationship/output_bias"] = (2,)
    elif head == "classifier":
        v["output_weights"], v["output_bias"] = (labels, hidden), (labels,)
    elif head == "squad":
        v["cls/squad/output_weights"], v["cls/squad/output_bias"] = (2, hidden), (2,)
    return v


def _random_tf_release(d, variables, seed=0):
    """An original-format release at `d`: random values under exactly `variables`'
    names (non-zero biases, so a misplaced vector shows), run_pretraining.py's
    optimizer slots and global_step beside them, and a bert_config.json."""
    import tensorflow as tf

    rng = np.random.RandomState(seed)
    tensors = {
        name: (rng.normal(size=shape) * (0.05 if name.endswith("beta") else 0.1)).astype(np.float32)
        + (1.0 if name.endswith("gamma") else 0.0)
        for name, shape in variables.items()
    }
    slots = {f"{n}/adam_{m}": np.zeros_like(tensors[n]) for n in list(tensors)[:2] for m in "mv"}
    written = {**tensors, **slots, "global_step": np.array(7, np.int64)}
    d.mkdir()
    keys = sorted(written)
    tf.raw_ops.SaveV2(
        prefix=str(d / "bert_model.ckpt"),
        tensor_names=keys,
        shape_and_slices=[""] * len(keys),
        tensors=[tf.constant(written[k]) for k in keys],
    )
    cfg = {
        "vocab_size": TINY["vocab_size"],
        "hidden_size": TINY["hidden_size"],
        "num_hidden_layers": TINY["num_hidden_layers"],
        "num_attention_heads": TINY["num_attention_heads"],
        "intermediate_size": TINY["intermediate_size"],
        "max_position_embeddings": TINY["max_position_embeddings"],
        "type_vocab_size": 2,
        "hidden_act": "gelu",  # the tanh form in modeling.py's `gelu`
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02,
    }
    (d / "bert_config.json").write_text(json.dumps(cfg))
    return tensors


def _hf_by_tf_names(model, tensors):
    """Put Google-named tensors into an HF model by the rule of HF's own TF
    converter (`load_tf_weights_in_bert`, transformers 4.x modeling_bert.py;
    removed in 5.x): split the name at "/", `layer_<n>` indexes `layer[n]`,
    kernel/gamma/output_weights -> weight, beta/output_bias -> bias, an
    `*_embeddings` table -> its weight, kernels transposed. Unlike the
    original, a name that finds no module fails instead of being skipped.
    run_classifier.py's top-level output_* sit in HF's `classifier`."""
    placed = 0
    for name, array in tensors.items():
        parts = name.split("/")
        node = model.classifier if parts[0].startswith("output_") else model
        for part in parts:
            indexed = re.fullmatch(r"([A-Za-z]+)_(\d+)", part)
            base, num = indexed.groups() if indexed else (part, "")
            attr = {"kernel": "weight", "gamma": "weight", "output_weights": "weight"}.get(base)
            attr = attr or {"beta": "bias", "output_bias": "bias"}.get(base, base)
            node = getattr(node, attr)
            if num:
                node = node[int(num)]
        if parts[-1].endswith("_embeddings"):
            node = node.weight
        value = torch.from_numpy(array.T.copy() if parts[-1] == "kernel" else array)
        assert tuple(node.shape) == tuple(value.shape), (name, node.shape, value.shape)
        with torch.no_grad():
            node.copy_(value)
        placed += 1
    return placed


def test_original_tf_checkpoint_loads_to_same_outputs(tmp_path):
    """A release holding exactly Google's variables (names and shapes above)
    loads, every variable in its place: outputs equal HF's with the same
    weights placed by HF's converter rule (gelu_new: the original `gelu`)."""
    variables = google_bert_variables(
        TINY["vocab_size"],
        TINY["hidden_size"],
        TINY["num_hidden_layers"],
        TINY["intermediate_size"],
        TINY["max_position_embeddings"],
    )
    assert len(variables) == 5 + 16 * TINY["num_hidden_layers"] + 2 + 5 + 2
    tensors = _random_tf_release(tmp_path / "tf", variables)
    model, params = pretrained.load(tmp_path / "tf")
    assert isinstance(model, BertForPreTraining) and model.nsp
    assert model.config.hidden_act == "gelu_tanh"
    hf = transformers.BertForPreTraining(
        transformers.BertConfig(hidden_act="gelu_new", **TINY)
    ).eval()
    assert _hf_by_tf_names(hf, tensors) == len(variables)
    ids, types, mask = _padded_batch(TINY["vocab_size"])
    ours = model.apply({"params": params}, ids, types, mask)
    diffs = _max_diffs(ours, _hf_outputs(hf, ids, types, mask), mask)
    print("TF-format parity", diffs)
    _assert_parity(diffs)

    # A variable of Google's list missing, or under another name, is refused.
    def broken(name, variables):
        d = tmp_path / name
        _random_tf_release(d, variables)
        with pytest.raises(pretrained.CheckpointError) as e:
            pretrained.load(d)
        return str(e.value)

    drop = "bert/encoder/layer_1/attention/output/LayerNorm/beta"
    msg = broken("missing", {k: s for k, s in variables.items() if k != drop})
    assert "missing 1 variables" in msg and drop in msg
    renamed = {
        k.replace("cls/seq_relationship/output_weights", "cls/seq_relationship/kernel"): s
        for k, s in variables.items()
    }
    msg = broken("renamed", renamed)
    assert "cls/seq_relationship" in msg


@pytest.mark.parametrize("head", ["classifier", "squad"])
def test_original_tf_task_heads_by_google_names(tmp_path, head):
    """run_classifier.py's and run_squad.py's heads load into bert_jax's task
    models, each weight transposed from Google's [out, in]; the classifier's
    logits equal HF BertForSequenceClassification's with the same weights."""
    from bert_jax.models.heads import BertForQuestionAnswering, BertForSequenceClassification

    cfg = (TINY["vocab_size"], TINY["hidden_size"], TINY["num_hidden_layers"])
    variables = google_bert_variables(
        *cfg, TINY["intermediate_size"], TINY["max_position_embeddings"], head=head
    )
    tensors = _random_tf_release(tmp_path / "tf", variables)
    model, params = pretrained.load(tmp_path / "tf")
    name = "output" if head == "classifier" else "cls/squad/output"
    ours = params["classifier" if head == "classifier" else "qa_outputs"]["dense"]
    assert_equal(ours["kernel"], tensors[f"{name}_weights"].T)
    assert_equal(ours["bias"], tensors[f"{name}_bias"])
    if head == "squad":
        assert isinstance(model, BertForQuestionAnswering)
    else:
        assert isinstance(model, BertForSequenceClassification) and model.num_labels == 3
        hf = transformers.BertForSequenceClassification(
            transformers.BertConfig(hidden_act="gelu_new", num_labels=3, **TINY)
        ).eval()
        assert _hf_by_tf_names(hf, tensors) == len(variables)
        ids, types, mask = _padded_batch(TINY["vocab_size"])
        logits = model.apply({"params": params}, ids, types, mask)["logits"]
        with torch.no_grad():
            ref = hf(
                input_ids=torch.tensor(ids),
                token_type_ids=torch.tensor(types),
                attention_mask=torch.tensor(mask),
            ).logits.numpy()
        diff = max_abs_diff(np.asarray(logits), ref)
        print("TF-format classifier parity", diff)
        _assert_parity({"logits": diff})


def test_export_hf_round_trip(tmp_path, minilm_dir):
    hf, d = _hf_pretraining(tmp_path, **TINY)
    model, params = pretrained.load(d)
    out = pretrained.export_hf(model, params, tmp_path / "exported")
    back = transformers.BertForPreTraining.from_pretrained(str(out)).eval()
    ids, types, mask = _padded_batch(TINY["vocab_size"])
    ref, got = _hf_outputs(hf, ids, types, mask), _hf_outputs(back, ids, types, mask)
    _assert_parity({k: max_abs_diff(got[k], ref[k]) for k in ref}, tol=1e-6)
    # And back into bert_jax: identical parameters.
    model2, params2 = pretrained.load(out)
    assert type(model2) is type(model)
    jax.tree.map(assert_equal, params, params2)

    # A bare encoder (MiniLM, no MLM head) exports as BertModel and still
    # loads in HF BertForPreTraining, with fresh heads.
    m, p = pretrained.load(minilm_dir)
    out2 = pretrained.export_hf(m, p, tmp_path / "minilm", vocab_file=minilm_dir / "vocab.txt")
    hf2 = transformers.BertForPreTraining.from_pretrained(str(out2))
    ref_model = transformers.BertModel.from_pretrained(str(minilm_dir))
    w = ref_model.embeddings.word_embeddings.weight.detach().numpy()
    assert_equal(hf2.bert.embeddings.word_embeddings.weight.detach().numpy(), w)


def test_pytorch_bin_and_bert_jax_format(tmp_path):
    hf, d = _hf_pretraining(tmp_path, **TINY)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy(d / "config.json", bin_dir / "config.json")
    torch.save(hf.state_dict(), bin_dir / "pytorch_model.bin")
    model, params = pretrained.load(bin_dir)
    ids, types, mask = _padded_batch(TINY["vocab_size"])
    ref = _hf_outputs(hf, ids, types, mask)
    _assert_parity(_max_diffs(model.apply({"params": params}, ids, types, mask), ref, mask))

    pretrained.save(tmp_path / "ours", model, params)
    m2, p2 = pretrained.load(tmp_path / "ours", scan_layers=True)
    assert m2.config.scan_layers and "layers" in p2["bert"]["encoder"]
    _assert_parity(_max_diffs(m2.apply({"params": p2}, ids, types, mask), ref, mask))
    with pytest.raises(FileExistsError):
        pretrained.save(tmp_path / "ours", model, params)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []

    # A checkpoint saved by a TPU run stores the splash kernel it ran; a loaded
    # model computes with "xla" (the same math) on any host, unless asked.
    tpu = model.clone(config=dataclasses.replace(model.config, attention_dropout=0.0))
    pretrained.save(
        tmp_path / "tpu",
        tpu.clone(config=dataclasses.replace(tpu.config, attention_impl="splash")),
        params,
    )
    m3, p3 = pretrained.load(tmp_path / "tpu")
    assert (
        m3.config.attention_impl == ""
        and pretrained.load_config(tmp_path / "tpu").attention_impl == ""
    )
    _assert_parity(_max_diffs(m3.apply({"params": p3}, ids, types, mask), ref, mask))
    m4, _ = pretrained.load(tmp_path / "tpu", attention_impl="splash_interpret")
    assert m4.config.attention_impl == "splash_interpret"


# ---------------------------------------------------------------------------
# Bad input: one clear error naming the file and the problem.
# ---------------------------------------------------------------------------


def test_missing_and_unrecognised_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pretrained.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(pretrained.CheckpointError, match="config.json"):
        pretrained.load(tmp_path / "empty")
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text(json.dumps({**TINY, "model_type": "bert"}))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        pretrained.load(tmp_path / "noweights")
    (tmp_path / "badjson").mkdir()
    (tmp_path / "badjson" / "config.json").write_text("{not json")
    with pytest.raises(pretrained.CheckpointError, match="badjson/config.json: not valid JSON"):
        pretrained.load(tmp_path / "badjson")


def test_unknown_variable_and_wrong_shape(tmp_path):
    from safetensors.numpy import load_file, save_file

    _, d = _hf_pretraining(tmp_path, **TINY)
    tensors = load_file(d / "model.safetensors")
    save_file(
        {**tensors, "bert.encoder.layer.0.extra.weight": np.zeros(3, np.float32)},
        d / "model.safetensors",
    )
    with pytest.raises(pretrained.CheckpointError, match=r"unknown variables.*extra\.weight"):
        pretrained.load(d)
    bad = dict(tensors)
    bad["bert.encoder.layer.1.intermediate.dense.weight"] = np.zeros((95, 64), np.float32)
    save_file(bad, d / "model.safetensors")
    with pytest.raises(pretrained.CheckpointError) as e:
        pretrained.load(d)
    msg = str(e.value)
    assert "model.safetensors" in msg and "layer.1.intermediate.dense.weight" in msg
    assert "(95, 64)" in msg and "(64, 96)" in msg
    bad = dict(tensors)
    del bad["bert.pooler.dense.bias"]
    save_file(bad, d / "model.safetensors")
    with pytest.raises(pretrained.CheckpointError, match="missing 1 variables.*pooler.dense.bias"):
        pretrained.load(d)


def test_vocab_size_mismatch_and_unsafe_pickle(tmp_path, minilm_dir):
    d = tmp_path / "m"
    shutil.copytree(minilm_dir, d)
    with open(d / "vocab.txt", "a") as f:
        f.write("extra_token\n")
    with pytest.raises(pretrained.CheckpointError, match=r"vocab.txt has 30523 tokens.*30522"):
        pretrained.load(d)

    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "config.json").write_text(json.dumps({**TINY, "model_type": "bert"}))
    torch.save({"x": object()}, evil / "pytorch_model.bin")  # needs full unpickling
    with pytest.raises(pretrained.CheckpointError, match="weights-only"):
        pretrained.load(evil)


def test_tf_checkpoint_errors(tmp_path):
    _, d = _hf_pretraining(tmp_path, hidden_act="gelu_new", **TINY)
    _write_tf_checkpoint(
        tmp_path / "tf", d, extra={"bert/encoder/mystery": np.zeros(2, np.float32)}
    )
    with pytest.raises(pretrained.CheckpointError, match="bert_model.ckpt.index.*mystery"):
        pretrained.load(tmp_path / "tf")
