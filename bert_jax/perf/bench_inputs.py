"""The batches `bert_jax.perf.bench` times, as host numpy arrays in the tasks' layouts.

* Pretraining: full rows (pretraining examples fill max_seq_length; packed
  ones even more so) of random word-piece ids, two segments, and
  `predictions` masked positions per row with their original ids. The step's
  cost depends on the shapes only, so the ids need not be text.
* Classification: real sentences, tokenized with a real vocabulary, so the
  batch has the lengths of real data: by default the embedded corpus's
  docstring sentences and its 8,000-piece vocabulary (present wherever
  bert_jax installs); `text_file`/`vocab_file` take others (e.g. SST-2 and
  the bert-base-uncased vocab.txt). Rows are padded to the longest in the
  batch rounded up to `length_bucket`, as the trainer pads fine-tuning
  batches (`data.length_bucket`); both frameworks get the same batch.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from bert_jax.data import files
from bert_jax.tokenizers.wordpiece import BertTokenizer

CLS, SEP, FIRST_WORD = 101, 102, 999  # bert-base-uncased ids; words start after [unusedN]


def pretraining_batch(batch: int, seq: int, predictions: int, vocab_size: int, seed: int = 0):
    """Full-length NSP pairs with `predictions` masked positions each (original layout)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(FIRST_WORD, vocab_size, size=(batch, seq), dtype=np.int64)
    half = seq // 2
    ids[:, 0], ids[:, half - 1], ids[:, -1] = CLS, SEP, SEP
    segments = np.zeros((batch, seq), np.int32)
    segments[:, half:] = 1
    candidates = [p for p in range(1, seq - 1) if p != half - 1]
    positions = np.sort(
        np.stack([rng.choice(candidates, predictions, replace=False) for _ in range(batch)]), -1
    )
    labels = np.take_along_axis(ids, positions, -1)
    masked = ids.copy()
    np.put_along_axis(masked, positions, 103, -1)  # [MASK]
    return {
        "input_ids": masked.astype(np.int32),
        "input_mask": np.ones((batch, seq), np.int32),
        "segment_ids": segments,
        "masked_lm_positions": positions.astype(np.int32),
        "masked_lm_ids": labels.astype(np.int32),
        "masked_lm_weights": np.ones((batch, predictions), np.float32),
        "next_sentence_labels": rng.integers(0, 2, size=(batch,), dtype=np.int32),
    }


def records_batch(
    patterns: str, batch: int, seq: int, predictions: int, examples_per_row: int = 0
) -> dict[str, np.ndarray]:
    """The first `batch` rows of pretraining TFRecords (real examples, packed or not),
    or of an `.npz` batch written by `save_batch` (no TensorFlow needed to read it)."""
    if patterns.endswith(".npz"):
        with np.load(patterns) as saved:
            rows = {k: saved[k] for k in saved.files}
        if rows["input_ids"].shape[1] != seq:
            width = rows["input_ids"].shape[1]
            raise ValueError(f"{patterns}: rows of length {width}, not --seq={seq}")
    else:
        from bert_jax.data.pretraining import records as pretraining_records

        rows = pretraining_records.read_tfrecords(patterns, seq, predictions, examples_per_row)
    if len(rows["input_ids"]) < batch:
        raise ValueError(f"{patterns}: {len(rows['input_ids'])} rows, fewer than batch {batch}")
    return {k: v[:batch] for k, v in rows.items()}


def save_batch(path: str, batch: dict[str, np.ndarray]) -> None:
    """`batch` as an .npz file, for a machine without TensorFlow or the data (a GPU box).
    Written beside, then renamed: never half-written."""
    if not path.endswith(".npz"):
        raise ValueError(f"--save_batch={path}: the file name must end in .npz")
    tmp = f"{path}.tmp.npz"
    np.savez(tmp, **batch)
    os.replace(tmp, path)


def sentences(text_file: str, limit: int = 20_000) -> list[str]:
    """Sentences of a text file: the `sentence` column of a TSV with that header
    (GLUE SST-2), else every non-empty line (BERT-format corpora)."""
    lines = [line for _, line in files.numbered_lines(text_file) if isinstance(line, str)]
    if lines and "sentence" in lines[0].split("\t"):
        column = lines[0].split("\t").index("sentence")
        rows = csv.reader(lines[1:], delimiter="\t", quoting=csv.QUOTE_NONE)
        out = [r[column].strip() for r in rows if len(r) > column]
    else:
        out = [line.strip() for line in lines]
    out = [s for s in out if s][:limit]
    if not out:
        raise ValueError(f"{text_file}: no sentences")
    return out


def default_text(root: str) -> tuple[str, str]:
    """(sentences file, vocab.txt) of the embedded corpus, built once under `root`."""
    from bert_jax.data.pretraining import embedded as embedded_pretraining

    paths = embedded_pretraining.prepare(os.path.expanduser(root), 128, 20, verbose=False)
    return str(paths["train_txt"]), str(paths["vocab_txt"])


def classification_batch(
    text_file: str, vocab_file: str, batch: int, seq: int, length_bucket: int, seed: int = 0
):
    """`batch` real sentences drawn at random, with labels; and the tokenizer's vocab size."""
    tok = BertTokenizer(vocab_file, do_lower_case=True)
    pool = sentences(text_file)
    rng = np.random.default_rng(seed)
    chosen = [pool[i] for i in rng.choice(len(pool), batch, replace=len(pool) < batch)]
    enc = tok.encode_batch(chosen, max_length=seq)
    longest = int(np.asarray(enc["attention_mask"]).sum(-1).max())
    width = min(-(-longest // length_bucket) * length_bucket, seq) if length_bucket else seq
    out = {k: np.asarray(v, np.int32)[:, :width] for k, v in enc.items()}
    out["label"] = rng.integers(0, 2, size=(batch,), dtype=np.int32)
    return out, tok.vocab_size
