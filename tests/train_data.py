"""A small batch source for trainer tests: MLM + NSP examples from real SST-2 text.

Sentence pairs from the SST-2 training file, tokenized with the real
bert-base-uncased vocabulary, 15% of the tokens masked (80/10/10), half of the
pairs with a random second sentence; written as TFRecords in the original
BERT feature layout. The full recipe (documents, short_seq_prob, dupe factor,
whole-word masking) is `bert_jax.data.create_pretraining_data`'s job.
"""

from pathlib import Path

import numpy as np

from bert_jax.data import pretraining_records
from bert_jax.data.tokenizer import BertTokenizer


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


def write_records(shared_data: Path, out_dir: Path, n_train=256, n_eval=64, **kw) -> dict:
    """Write train/eval TFRecords; returns the config values that point at them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ex = make_examples(shared_data, n_train + n_eval, **kw)
    train = {k: v[:n_train] for k, v in ex.items()}
    held = {k: v[n_train:] for k, v in ex.items()}
    pretraining_records.write_tfrecord(str(out_dir / "train-0.tfrecord"), train)
    pretraining_records.write_tfrecord(str(out_dir / "eval-0.tfrecord"), held)
    return {
        "train_files": str(out_dir / "train-*.tfrecord"),
        "eval_files": str(out_dir / "eval-*.tfrecord"),
    }
