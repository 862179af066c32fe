"""Checkpoints in every format a test may start from, built locally (nothing downloaded).

`hf_pretraining` saves a randomly initialised HF `BertForPreTraining` (with
non-zero biases, so a mis-mapped vector shows up); `write_tf_checkpoint`
writes the same weights as an original Google TF release.
"""

import json

import numpy as np
import pytest

from bert_jax.checkpoints import names as names
from bert_jax.checkpoints import pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def hf_pretraining(tmp_path, name="hf", **cfg):
    """(HF model, its saved directory) for a BertConfig with `cfg`."""
    torch.manual_seed(0)
    config = transformers.BertConfig(**cfg)
    model = transformers.BertForPreTraining(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.05 * torch.randn_like(p))
    d = tmp_path / name
    model.save_pretrained(d)
    return model, d


def write_tf_checkpoint(d, hf_dir, extra=None):
    """Write an original-format TF BERT release from an HF model's weights.

    The variable names come from the original modeling.py scopes; values go
    through the HF -> TF layout conversion of the name table. Optimizer slots
    and global_step are written too, as run_pretraining.py checkpoints have.
    """
    import tensorflow as tf

    model, params = pretrained.load(hf_dir)
    entries = names.encoder_entries(model.config.num_layers)
    entries += names.HEAD_ENTRIES["mlm"] + names.HEAD_ENTRIES["nsp"]
    tensors = {}
    for e in entries:
        leaf = params
        for k in e.path:
            leaf = leaf[k]
        tensors[e.tf] = names.from_ours(e, leaf, "tf")
    first = entries[0].tf
    tensors[first + "/adam_m"] = np.zeros_like(tensors[first])
    tensors["global_step"] = np.array(1000, np.int64)
    tensors.update(extra or {})
    d.mkdir()
    keys = sorted(tensors)
    tf.raw_ops.SaveV2(
        prefix=str(d / "bert_model.ckpt"),
        tensor_names=keys,
        shape_and_slices=[""] * len(keys),
        tensors=[tf.constant(tensors[k]) for k in keys],
    )
    hf_cfg = json.loads((hf_dir / "config.json").read_text())
    keep = (
        "attention_probs_dropout_prob",
        "hidden_dropout_prob",
        "hidden_size",
        "initializer_range",
        "intermediate_size",
        "max_position_embeddings",
        "num_attention_heads",
        "num_hidden_layers",
        "type_vocab_size",
        "vocab_size",
    )
    bert_config = {k: hf_cfg[k] for k in keep}
    bert_config["hidden_act"] = "gelu"  # means the tanh form in the original code
    (d / "bert_config.json").write_text(json.dumps(bert_config))
