"""The offline demo: pretrain a tiny BERT from scratch on real text, on a laptop CPU.

    python -m bert_jax.demo [--workdir=runs/demo] [--num_train_steps=1500]

1. Corpus: the documentation strings of the Python standard library, extracted
   by `bert_jax.data.embedded_corpus` (real English present on any machine),
   split into documents; the last 10% of documents are held out.
2. Vocabulary: a WordPiece vocabulary built from the training documents
   (`bert_jax.data.build_vocab`), with BERT's special tokens and unused slots.
3. Examples: the original BERT recipe (`create_pretraining_data`: NSP pairs,
   15% masking 80/10/10) at length 64 (docstring sentences are short),
   static masking, dupe factor 5.
4. Pretraining: `configs/pretrain.py:tiny` through the one trainer, with
   evaluation on the held-out examples.
5. The result: held-out MLM accuracy next to the most-frequent-token baseline,
   a bert_jax checkpoint, and a fill-mask example.
"""

import collections
import time
from pathlib import Path

import numpy as np
from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "runs/demo", "Where corpus, data, checkpoints and metrics go.")
flags.DEFINE_integer("num_train_steps", 1500, "Pretraining steps.")
flags.DEFINE_integer("vocab_size", 8000, "WordPiece vocabulary size.")
flags.DEFINE_integer("dupe_factor", 5, "Masking passes over the training documents.")

SEQ, PRED = 64, 10  # sequence length, predictions per sequence
FILL_MASK = [
    "Return a new [MASK] containing the items of the sequence.",
    "The [MASK] argument must be a string.",
    "If the file does not exist, an [MASK] is raised.",
]


def _prepare(wd: Path) -> dict:
    """Corpus -> vocabulary -> TFRecords; reused when already there."""
    from bert_jax.data import build_vocab, corpus, embedded_corpus
    from bert_jax.data import create_pretraining_data as cpd
    from bert_jax.data.pretraining_instances import RecipeConfig

    data = wd / "data"
    paths = {k: data / f for k, f in [("train_txt", "train.txt"), ("eval_txt", "eval.txt"),
                                      ("vocab", "vocab.txt"), ("train", "train.tfrecord"),
                                      ("eval", "eval.tfrecord")]}  # fmt: skip
    if all(p.exists() for p in paths.values()):
        print(f"reusing {data}")
        return paths
    data.mkdir(parents=True, exist_ok=True)
    t = time.time()
    docs = list(embedded_corpus.embedded_documents())
    n_eval = max(1, len(docs) // 10)
    corpus.write_text_corpus(docs[:-n_eval], str(paths["train_txt"]))
    corpus.write_text_corpus(docs[-n_eval:], str(paths["eval_txt"]))
    n_sent = sum(len(d) for d in docs)
    print(f"corpus: {len(docs)} documents, {n_sent} sentences from the standard library's "
          f"docstrings ({time.time() - t:.1f} s); {n_eval} documents held out")  # fmt: skip
    t = time.time()
    tokens = build_vocab.build_vocab(
        (s for d in docs[:-n_eval] for s in d), vocab_size=FLAGS.vocab_size, do_lower_case=True
    )
    build_vocab.write_vocab(tokens, str(paths["vocab"]))
    print(f"vocabulary: {len(tokens)} word pieces ({time.time() - t:.1f} s)")
    for split, dupe in (("train", FLAGS.dupe_factor), ("eval", 1)):
        t = time.time()
        counts = cpd.run(
            [str(paths[f"{split}_txt"])], [str(paths[split])], str(paths["vocab"]),
            RecipeConfig(max_seq_length=SEQ, max_predictions_per_seq=PRED, dupe_factor=dupe),
        )  # fmt: skip
        print(f"{split} examples: {counts['examples']} ({time.time() - t:.1f} s)")
    return paths


def _baseline(paths: dict) -> tuple[str, float]:
    """Accuracy of always predicting the most frequent masked token of training."""
    from bert_jax.data import pretraining_records
    from bert_jax.data.tokenizer import BertTokenizer

    tok = BertTokenizer(str(paths["vocab"]))
    labels = {}
    for split in ("train", "eval"):
        ex = pretraining_records.read_tfrecords(str(paths[split]), SEQ, PRED)
        labels[split] = ex["masked_lm_ids"][ex["masked_lm_weights"] > 0]
    top = collections.Counter(labels["train"].tolist()).most_common(1)[0][0]
    return tok.convert_ids_to_tokens([top])[0], float(np.mean(labels["eval"] == top))


def _fill_mask(model, params, vocab_path: Path) -> None:
    from bert_jax.data.tokenizer import BertTokenizer

    tok = BertTokenizer(str(vocab_path))
    for text in FILL_MASK:
        a, b = text.split("[MASK]")
        ids = tok.encode(a)["input_ids"][:-1] + [tok.mask_id] + tok.encode(b)["input_ids"][1:]
        ids = np.asarray([ids], np.int32)
        pos = np.asarray([[int(np.argmax(ids[0] == tok.mask_id))]], np.int32)
        out = model.apply({"params": params}, ids, masked_positions=pos)
        top = np.argsort(-np.asarray(out["mlm_logits"][0, 0]))[:5]
        print(f"  {text}\n    -> {', '.join(tok.convert_ids_to_tokens(top.tolist()))}")


def main(argv):
    del argv
    import jax

    from bert_jax import pretrained, train
    from bert_jax.tasks.pretraining import PretrainingTask
    from configs import pretrain

    start = time.time()
    wd = Path(FLAGS.workdir)
    paths = _prepare(wd)
    word, base_acc = _baseline(paths)

    config = pretrain.get_config("tiny")
    config.model.vocab_size = len(paths["vocab"].read_text(encoding="utf-8").splitlines())
    config.data.train_files, config.data.eval_files = str(paths["train"]), str(paths["eval"])
    config.max_seq_length, config.max_predictions_per_seq = SEQ, PRED
    config.train_batch_size = config.eval_batch_size = 32
    config.num_train_steps = FLAGS.num_train_steps
    config.optimizer.learning_rate = 1e-3  # tiny models take a larger rate (Turc et al. 2019)
    config.optimizer.warmup_steps = FLAGS.num_train_steps // 10
    config.log_every = 100
    config.eval_every = config.checkpoint_every = max(FLAGS.num_train_steps // 3, 1)
    run_dir = wd / "run"
    state, metrics = train.run(config, str(run_dir))

    model = PretrainingTask(config).model()
    params = jax.tree.map(np.asarray, state.params)
    ckpt = wd / "bert_tiny"
    if not ckpt.exists():
        pretrained.save(ckpt, model, params)
    print(f"\nheld-out MLM accuracy {metrics['eval/mlm_accuracy']:.3f} after "
          f"{config.num_train_steps} steps; most-frequent-token baseline ({word!r}) "
          f"{base_acc:.3f}; NSP accuracy {metrics['eval/nsp_accuracy']:.3f}")  # fmt: skip
    print(f"checkpoint: {ckpt} (load with bert_jax.pretrained.load); metrics: "
          f"{run_dir / 'metrics.jsonl'}")  # fmt: skip
    print("fill-mask, top 5:")
    _fill_mask(model, params, paths["vocab"])
    print(f"demo finished in {time.time() - start:.0f} s")


if __name__ == "__main__":
    logging.set_verbosity(logging.WARNING)
    app.run(main)
