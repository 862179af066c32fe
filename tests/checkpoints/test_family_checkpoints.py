"""ALBERT, RoBERTa and DistilBERT checkpoints: parity with HF transformers (PyTorch).

Every checkpoint is an HF model at random init (biases perturbed, so a
mis-mapped vector shows up) saved with `save_pretrained` into tmp_path:
nothing is downloaded. Comparisons are fp32 on padded batches, over real
positions, through tests/numerics.py (which fails on NaN).
"""

import json
import shutil

import numpy as np
import pytest

from bert_jax.checkpoints import pretrained
from bert_jax.models.heads import (
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from tests.checkpoint_sources import torch, transformers
from tests.numerics import assert_equal, max_abs_diff

TOL = 1e-4

# Small shapes (ALBERT: embedding_size < hidden_size, 3 layers sharing one).
TINY = {
    "albert": dict(
        vocab_size=211,
        embedding_size=32,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=40,
    ),
    "roberta": dict(
        vocab_size=211,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=42,  # 40 positions after the padding index
        type_vocab_size=1,
        layer_norm_eps=1e-5,
    ),
    "distilbert": dict(
        vocab_size=211, dim=64, n_layers=2, n_heads=4, hidden_dim=96, max_position_embeddings=40
    ),
}
# The released base shapes: albert-base-v2, roberta-base, distilbert-base-uncased.
BASE = {
    "albert": dict(
        vocab_size=30000,
        embedding_size=128,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
    ),
    "roberta": dict(
        vocab_size=50265,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
    ),
    "distilbert": dict(vocab_size=30522),  # DistilBertConfig's defaults are the base shape
}
PAD = {"albert": 0, "roberta": 1, "distilbert": 0}
CONFIG = {
    "albert": "AlbertConfig",
    "roberta": "RobertaConfig",
    "distilbert": "DistilBertConfig",
}
PREFIX = {"albert": "Albert", "roberta": "Roberta", "distilbert": "DistilBert"}


def _hf_model(tmp_path, family, head, name="hf", **cfg):
    """(HF model, its saved directory) of `{Family}{head}` at random init."""
    torch.manual_seed(0)
    config = getattr(transformers, CONFIG[family])(**cfg)
    model = getattr(transformers, PREFIX[family] + head)(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.05 * torch.randn_like(p))
    d = tmp_path / name
    model.save_pretrained(d)
    return model, d


def _padded_batch(family, vocab, batch=3, length=16, seed=0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(3, vocab, size=(batch, length)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 10:] = 0
    mask[2, 5:] = 0
    ids = np.where(mask == 1, ids, PAD[family])  # RoBERTa's positions read the pad id
    types = np.zeros_like(ids)
    if family == "albert":
        types[:, length // 2 :] = 1
    return ids, types, mask


def _hf_outputs(family, model, head, ids, types, mask):
    """The HF model's outputs under bert_jax's names."""
    kw = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    if family != "distilbert":
        kw["token_type_ids"] = torch.tensor(types)
    with torch.no_grad():
        base = (model if head == "Model" else getattr(model, family))(**kw)
        o = model(**kw)
    out = {"sequence_output": base.last_hidden_state.numpy()}
    if getattr(base, "pooler_output", None) is not None:
        out["pooled_output"] = base.pooler_output.numpy()
    if head == "ForPreTraining":
        out["mlm_logits"], out["nsp_logits"] = o.prediction_logits.numpy(), o.sop_logits.numpy()
    elif head == "ForMaskedLM":
        out["mlm_logits"] = o.logits.numpy()
    elif head == "ForQuestionAnswering":
        out["start_logits"], out["end_logits"] = o.start_logits.numpy(), o.end_logits.numpy()
    elif head != "Model":
        out["logits"] = o.logits.numpy()
    return out


def _max_diffs(ours, ref, mask):
    """Max abs difference per output over real positions; fails on NaN/inf anywhere."""
    out = {}
    for k, v in ref.items():
        a = np.asarray(ours[k], np.float32)
        where = None
        if a.ndim >= 2 and a.shape[:2] == mask.shape:  # per token: real positions only
            where = mask.astype(bool).reshape(mask.shape + (1,) * (a.ndim - 2))
        out[k] = max_abs_diff(a, v, where=where)
    return out


def _assert_parity(diffs, tol=TOL):
    bad = {k: v for k, v in diffs.items() if not v < tol}
    assert not bad, f"above {tol}: {bad}"


EXPECTED = {
    "ForPreTraining": BertForPreTraining,
    "ForMaskedLM": BertForPreTraining,
    "ForSequenceClassification": BertForSequenceClassification,
    "ForTokenClassification": BertForTokenClassification,
    "ForQuestionAnswering": BertForQuestionAnswering,
}
CASES = [
    ("albert", "ForPreTraining"),
    ("albert", "ForMaskedLM"),
    ("albert", "ForSequenceClassification"),
    ("albert", "ForTokenClassification"),
    ("albert", "ForQuestionAnswering"),
    ("roberta", "Model"),
    ("roberta", "ForMaskedLM"),
    ("roberta", "ForSequenceClassification"),
    ("roberta", "ForTokenClassification"),
    ("roberta", "ForQuestionAnswering"),
    ("distilbert", "ForMaskedLM"),
    ("distilbert", "ForSequenceClassification"),
    ("distilbert", "ForTokenClassification"),
    ("distilbert", "ForQuestionAnswering"),
]


@pytest.mark.parametrize("family,head", CASES, ids=[f + h for f, h in CASES])
def test_hf_parity_and_export_round_trip(tmp_path, family, head):
    labels = {"num_labels": 3} if "Classification" in head else {}
    hf, d = _hf_model(tmp_path, family, head, **TINY[family], **labels)
    model, params = pretrained.load(d)
    if head in EXPECTED:
        assert type(model) is EXPECTED[head]
    if head == "ForPreTraining":
        assert model.nsp and model.config.share_layers
    ids, types, mask = _padded_batch(family, 211)
    ours = model.apply({"params": params}, ids, types, mask, deterministic=True)
    ref = _hf_outputs(family, hf, head, ids, types, mask)
    assert set(ref) <= set(ours)
    diffs = _max_diffs(ours, ref, mask)
    print(f"{family} {head} parity", diffs)
    _assert_parity(diffs)

    # Export: the same HF tensors bit for bit, the same class and config
    # fields, and back into bert_jax with identical parameters.
    out = pretrained.export_hf(model, params, tmp_path / "exported")
    from safetensors.numpy import load_file

    theirs, mine = load_file(d / "model.safetensors"), load_file(out / "model.safetensors")
    if head == "Model":  # HF bare models save without the prefix; the export keeps it (as BERT's)
        theirs = {f"{family}.{k}": v for k, v in theirs.items()}
    assert sorted(mine) == sorted(theirs)
    for k in theirs:
        assert_equal(mine[k], theirs[k], err_msg=k)
    exported = json.loads((out / "config.json").read_text())
    original = json.loads((d / "config.json").read_text())
    assert exported["architectures"] == original["architectures"]
    for k, v in exported.items():
        if k in original and k not in ("dtype", "transformers_version"):
            assert original[k] == v, (k, original[k], v)
    model2, params2 = pretrained.load(out)
    assert model2 == model
    flat = pretrained._flat
    assert flat(params2).keys() == flat(params).keys()
    for k, v in flat(params).items():
        assert_equal(flat(params2)[k], v, err_msg="/".join(k))


def test_albert_unshared_layers_and_scan(tmp_path):
    """num_hidden_groups = num_hidden_layers: one parameter set per layer; and the
    shared checkpoint, saved in the bert_jax format and loaded under scan_layers,
    computes what HF does."""
    cfg = {**TINY["albert"], "num_hidden_groups": TINY["albert"]["num_hidden_layers"]}
    hf, d = _hf_model(tmp_path, "albert", "ForPreTraining", **cfg)
    model, params = pretrained.load(d)
    assert not model.config.share_layers and "layer_2" in params["bert"]["encoder"]
    ids, types, mask = _padded_batch("albert", 211)
    ref = _hf_outputs("albert", hf, "ForPreTraining", ids, types, mask)
    _assert_parity(_max_diffs(model.apply({"params": params}, ids, types, mask), ref, mask))
    out = pretrained.export_hf(model, params, tmp_path / "exported")
    assert json.loads((out / "config.json").read_text())["num_hidden_groups"] == 3

    hf, d = _hf_model(tmp_path, "albert", "ForPreTraining", name="shared", **TINY["albert"])
    ref = _hf_outputs("albert", hf, "ForPreTraining", ids, types, mask)
    model, params = pretrained.load(d)
    # Through the bert_jax format, into the scanned layout (the same tree when shared).
    pretrained.save(tmp_path / "ours", model, params)
    model, params = pretrained.load(tmp_path / "ours", scan_layers=True)
    assert model.config.scan_layers and set(params["bert"]["encoder"]) == {"shared_layer"}
    ours = model.apply({"params": params}, ids, types, mask, output_hidden_states=True)
    assert len(ours["hidden_states"]) == 4
    _assert_parity(_max_diffs(ours, ref, mask))


def test_pytorch_bin(tmp_path):
    hf, d = _hf_model(tmp_path, "distilbert", "ForMaskedLM", **TINY["distilbert"])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy(d / "config.json", bin_dir / "config.json")
    torch.save(hf.state_dict(), bin_dir / "pytorch_model.bin")
    model, params = pretrained.load(bin_dir)
    ids, types, mask = _padded_batch("distilbert", 211)
    ref = _hf_outputs("distilbert", hf, "ForMaskedLM", ids, types, mask)
    _assert_parity(_max_diffs(model.apply({"params": params}, ids, types, mask), ref, mask))


@pytest.mark.parametrize("family", ["albert", "roberta", "distilbert"])
def test_base_shaped_forward(tmp_path, family):
    hf, d = _hf_model(tmp_path, family, "ForMaskedLM", **BASE[family])
    model, params = pretrained.load(d, scan_layers=True)  # one layer to compile, not 12
    ids, types, mask = _padded_batch(family, BASE[family]["vocab_size"], length=12)
    ours = model.apply({"params": params}, ids, types, mask)
    diffs = _max_diffs(ours, _hf_outputs(family, hf, "ForMaskedLM", ids, types, mask), mask)
    print(f"{family} base-shaped parity", diffs)
    _assert_parity(diffs)


# ---------------------------------------------------------------------------
# Bad input: one clear error naming the file or the parameter.
# ---------------------------------------------------------------------------


def test_unknown_model_type_names_the_file(tmp_path):
    d = tmp_path / "electra"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "electra", "vocab_size": 5}))
    with pytest.raises(
        pretrained.CheckpointError, match=r"electra/config.json: model_type 'electra'"
    ):
        pretrained.load(d)
    with pytest.raises(pretrained.CheckpointError, match="electra/config.json"):
        pretrained.load_config(d)


def test_albert_shared_checkpoint_into_an_unshared_model(tmp_path):
    import dataclasses

    import jax

    _, d = _hf_model(tmp_path, "albert", "ForPreTraining", **TINY["albert"])
    model, params = pretrained.load(d)
    assert pretrained.load_config(d) == model.config
    # Into a model built without sharing (a fine-tuning config): names the key.
    unshared = model.clone(config=dataclasses.replace(model.config, share_layers=False))
    ids = np.zeros((1, 8), np.int32)
    target = jax.eval_shape(lambda: unshared.init(jax.random.key(0), ids))["params"]
    with pytest.raises(
        pretrained.CheckpointError, match=r"bert/encoder/shared_layer.*share_layers"
    ):
        pretrained.load_into(target, d)
    with pytest.raises(pretrained.CheckpointError, match="bert/encoder/shared_layer"):
        pretrained.load(d, share_layers=False)
    # A config.json that says one group per layer over shared tensors.
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "num_hidden_groups": 3}))
    with pytest.raises(
        pretrained.CheckpointError, match=r"albert_layer_groups\.1\..*num_hidden_groups"
    ):
        pretrained.load(d)


def test_head_dropout_settings_load_and_export(tmp_path):
    """HF's head dropout keys become classifier_dropout and go back out."""
    want = {"albert": 0.1, "roberta": None, "distilbert": 0.2}  # HF's defaults
    for family, rate in want.items():
        _, d = _hf_model(tmp_path, family, "ForSequenceClassification", name=family, **TINY[family])
        model, params = pretrained.load(d)
        assert model.config.classifier_dropout == rate, family
        exported = pretrained.export_hf(model, params, tmp_path / f"{family}-out")
        out = json.loads((exported / "config.json").read_text())
        key = {
            "albert": "classifier_dropout_prob",
            "roberta": "classifier_dropout",
            "distilbert": "seq_classif_dropout",
        }[family]
        assert out.get(key) == rate, family  # roberta: None, so no key
