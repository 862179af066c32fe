"""Trainer test data: MLM + NSP examples from real SST-2 text, and a tiny config for them.

Sentence pairs from the SST-2 training file, tokenized with the real
bert-base-uncased vocabulary, 15% of the tokens masked (80/10/10), half of the
pairs with a random second sentence; written as TFRecords in the original
BERT feature layout. The full recipe (documents, short_seq_prob, dupe factor,
whole-word masking) is `bert_jax.data.pretraining.create_pretraining_data`'s job.
"""

import contextlib
from pathlib import Path

import numpy as np

from bert_jax import configs
from bert_jax.data.pretraining import records as pretraining_records
from bert_jax.tokenizers.wordpiece import BertTokenizer

PRETRAIN_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "pretrain.py")


def make_examples(shared_data: Path, n: int, seq_len: int = 32, max_pred: int = 5, seed: int = 0):
    tok = BertTokenizer(str(shared_data / "vocab" / "bert-base-uncased" / "vocab.txt"))
    lines = (shared_data / "glue" / "SST-2" / "train.tsv").read_text(encoding="utf-8").splitlines()
    sentences = [line.split("\t")[0] for line in lines[1 : 2 * n + 2]]
    rng = np.random.default_rng(seed)
    cols = {k: [] for k in pretraining_records.FEATURES}
    for i in range(n):
        a = sentences[2 * i]
        is_random = rng.random() < 0.5
        b = sentences[rng.integers(len(sentences))] if is_random else sentences[2 * i + 1]
        enc = tok.encode(a, b, max_length=seq_len)
        ids = np.zeros(seq_len, np.int64)
        ids[: len(enc["input_ids"])] = enc["input_ids"]
        seg = np.zeros(seq_len, np.int64)
        seg[: len(enc["token_type_ids"])] = enc["token_type_ids"]
        mask = (ids > 0).astype(np.int64)
        special = {tok.vocab["[CLS]"], tok.vocab["[SEP]"]}
        cand = [j for j in range(seq_len) if mask[j] and ids[j] not in special]
        k = min(max_pred, max(1, round(0.15 * len(cand))))
        pos = np.sort(rng.choice(cand, size=k, replace=False))
        labels = ids[pos].copy()
        for p in pos:
            r = rng.random()
            if r < 0.8:
                ids[p] = tok.vocab["[MASK]"]
            elif r < 0.9:
                ids[p] = rng.integers(999, len(tok.vocab))
        pad = max_pred - k
        cols["input_ids"].append(ids)
        cols["input_mask"].append(mask)
        cols["segment_ids"].append(seg)
        cols["masked_lm_positions"].append(np.pad(pos, (0, pad)))
        cols["masked_lm_ids"].append(np.pad(labels, (0, pad)))
        cols["masked_lm_weights"].append(np.pad(np.ones(k, np.float32), (0, pad)))
        cols["next_sentence_labels"].append([int(is_random)])
    return {k: np.stack(v) for k, v in cols.items()}


def write_tfrecord(path: str, examples: dict[str, np.ndarray]) -> None:
    """Aligned arrays (one row per example) as tf.Examples in the original feature layout."""
    import tensorflow as tf

    with tf.io.TFRecordWriter(path) as w:
        for i in range(len(examples["input_ids"])):
            feats = {}
            for name, (dtype, _) in pretraining_records.FEATURES.items():
                row = np.asarray(examples[name][i]).reshape(-1)
                if dtype == tf.float32:
                    feats[name] = tf.train.Feature(float_list=tf.train.FloatList(value=row))
                else:
                    feats[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=row))
            w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())


def write_records(shared_data: Path, out_dir: Path, n_train=256, n_eval=64, **kw) -> dict:
    """Write train/eval TFRecords; returns the config values that point at them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ex = make_examples(shared_data, n_train + n_eval, **kw)
    train = {k: v[:n_train] for k, v in ex.items()}
    held = {k: v[n_train:] for k, v in ex.items()}
    write_tfrecord(str(out_dir / "train-0.tfrecord"), train)
    write_tfrecord(str(out_dir / "eval-0.tfrecord"), held)
    return {
        "train_files": str(out_dir / "train-*.tfrecord"),
        "eval_files": str(out_dir / "eval-*.tfrecord"),
    }


def tiny_config(records, **overrides):
    """configs/pretrain.py:tiny on `write_records`' files, 3 steps; `overrides` as
    {"key" or "node.key": value}."""
    c = configs.load(PRETRAIN_CONFIG + ":tiny")
    c.data.train_files = records["train_files"]
    c.model.vocab_size = 30522  # the records' ids are bert-base-uncased ones
    # fp32 (the config's default is bf16): meshes and processes are compared exactly.
    c.model.dtype = "float32"
    # No held-out set (and no eval compile) unless a test asks for one.
    c.data.eval_files = ""
    c.max_seq_length, c.max_predictions_per_seq = 32, 5
    # 4 heads and a 256-wide MLP so every mesh below can split them.
    c.model.num_heads = 4
    c.model.intermediate_size = 256
    c.train_batch_size = c.eval_batch_size = 16
    c.num_train_steps = 3
    c.log_every = 1
    c.eval_every = 0
    c.checkpoint_every = 1000
    c.mesh_shape = (-1, 1, 1)
    set_values(c, overrides)
    return c


def set_values(config, values: dict, new_keys: bool = False):
    """Sets {"key" or "node.sub.key": value} on a config; a key it lacks is an
    error unless `new_keys`."""
    with config.unlocked() if new_keys else contextlib.nullcontext():
        for key, value in values.items():
            node = config
            *parents, leaf = key.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = value
    return config
