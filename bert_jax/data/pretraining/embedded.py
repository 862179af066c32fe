"""Pretraining data from the embedded corpus, built once into a directory.

`configs/pretrain.py:tiny` (and the demo) train offline on it: the Python
standard library's docstrings (`embedded_corpus`), 10% of the documents held
out, an 8,000-piece WordPiece vocabulary built from the training documents,
and examples made with the original recipe. The files are built once and
reused from the directory. The example creation is deterministic, but the
Rust WordPiece trainer (`tokenizers`) breaks ties between equally frequent
merges in hash order, so two builds of the vocabulary can differ in a few
rare pieces (about 10 of 8,000 here): a multi-host job should build the
data once on shared storage (or point data.* at files it made) rather than
on every host.
"""

from __future__ import annotations

import time
from pathlib import Path

from bert_jax.data import files

VOCAB_SIZE = 8000
FILES = ("train.txt", "eval.txt", "vocab.txt", "train.tfrecord", "eval.tfrecord")


def prepare(
    out_dir: str,
    max_seq_length: int,
    max_predictions: int,
    dupe_factor: int = 5,
    vocab_size: int = VOCAB_SIZE,
    verbose: bool = True,
    examples_per_row: int = 0,
    objective: str = "nsp",
    max_ngram: int = 1,
) -> dict[str, Path]:
    """Corpus -> vocabulary -> TFRecords in `out_dir`; returns the paths by name.

    With `examples_per_row` = K > 0 the records are also packed
    (`bert_jax.data.pretraining.pack_records`, `max_predictions` predictions a row)
    and `train_tfrecord`/`eval_tfrecord` name the packed files. `objective`
    and `max_ngram` are `RecipeConfig`'s (ALBERT: "sop", 3).
    """
    recipe = dict(objective=objective, max_ngram=max_ngram)
    d = (
        Path(out_dir).expanduser()
        / f"embedded-v{vocab_size}-s{max_seq_length}-p{max_predictions}-d{dupe_factor}"
    )
    if recipe != dict(objective="nsp", max_ngram=1):  # BERT's keeps its old folder name
        d = d.with_name(f"{d.name}-{objective}-n{max_ngram}")
    paths = {f.replace(".", "_"): d / f for f in FILES}
    if not all(p.exists() for p in paths.values()):
        _build(d, paths, max_seq_length, max_predictions, dupe_factor, vocab_size, verbose, recipe)
    if examples_per_row:
        paths |= _packed(paths, max_seq_length, max_predictions, examples_per_row, verbose)
    return paths


def _packed(paths, max_seq_length, max_predictions, examples_per_row, verbose) -> dict:
    """Packed copies of the train and eval records (built once)."""
    from bert_jax.data.pretraining import pack_records

    out = {}
    for split in ("train", "eval"):
        src = paths[f"{split}_tfrecord"]
        dst = src.with_name(f"{split}-packed{examples_per_row}.tfrecord")
        if not dst.exists():
            stats = pack_records.run(
                [str(src)], [str(dst)], max_seq_length, max_predictions, examples_per_row
            )
            before, after = stats.efficiency(max_seq_length)
            if verbose:
                print(f"{split} packed: {stats.rows} rows, efficiency {before:.1%} -> {after:.1%}")
        out[f"{split}_tfrecord"] = dst
    return out


def _build(
    d, paths, max_seq_length, max_predictions, dupe_factor, vocab_size, verbose, recipe
) -> None:
    from bert_jax.data.pretraining import build_vocab, corpus, embedded_corpus
    from bert_jax.data.pretraining import create_pretraining_data as cpd
    from bert_jax.data.pretraining.instances import RecipeConfig

    say = print if verbose else (lambda *a, **k: None)
    d.mkdir(parents=True, exist_ok=True)
    t = time.time()
    docs = list(embedded_corpus.embedded_documents())
    n_eval = max(1, len(docs) // 10)
    corpus.write_text_corpus(docs[:-n_eval], str(paths["train_txt"]))
    corpus.write_text_corpus(docs[-n_eval:], str(paths["eval_txt"]))
    n_sent = sum(len(doc) for doc in docs)
    say(
        f"corpus: {len(docs)} documents, {n_sent} sentences from the standard library's "
        f"docstrings ({time.time() - t:.1f} s); {n_eval} documents held out"
    )
    tokens = build_vocab.build_vocab(
        (s for doc in docs[:-n_eval] for s in doc), vocab_size=vocab_size, do_lower_case=True
    )
    build_vocab.write_vocab(tokens, str(paths["vocab_txt"]))
    say(f"vocabulary: {len(tokens)} word pieces")
    for split, dupe in (("train", dupe_factor), ("eval", 1)):
        counts = cpd.run(
            [str(paths[f"{split}_txt"])],
            [str(paths[f"{split}_tfrecord"])],
            str(paths["vocab_txt"]),
            RecipeConfig(
                max_seq_length=max_seq_length,
                max_predictions_per_seq=max_predictions,
                dupe_factor=dupe,
                **recipe,
            ),
            num_workers=1,
        )
        say(f"{split} examples: {counts['examples']}")


def vocab_size(paths: dict[str, Path]) -> int:
    """Lines of the built vocab.txt: the model's vocab_size."""
    with files.open_read(paths["vocab_txt"]) as f:
        return sum(1 for _ in f)
