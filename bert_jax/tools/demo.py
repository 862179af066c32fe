"""The offline demo: pretrain a tiny BERT from scratch on real text, on a laptop CPU.

    python -m bert_jax.tools.demo [--workdir=runs/demo] [--num_train_steps=2000]

1. Corpus: the documentation strings of the Python standard library, extracted
   by `bert_jax.data.pretraining.embedded_corpus` (real English present on any machine),
   split into documents; the last 10% of documents are held out.
2. Vocabulary: a WordPiece vocabulary built from the training documents
   (`bert_jax.data.pretraining.build_vocab`), with BERT's special tokens and unused slots.
3. Examples: the original BERT recipe (`create_pretraining_data`: NSP pairs,
   15% masking 80/10/10) at length 64 (docstring sentences are short),
   static masking, dupe factor 5.
4. Pretraining: `configs/pretrain.py:tiny` through the one trainer, with
   evaluation on the held-out examples.
5. The result: held-out MLM accuracy next to the most-frequent-token baseline,
   a bert_jax checkpoint, and a fill-mask example.
"""

import collections
import json
import time
from pathlib import Path

import numpy as np
from absl import app, flags, logging

from bert_jax import cli, cpu_env

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "runs/demo", "Where corpus, data, checkpoints and metrics go.")
flags.DEFINE_integer("num_train_steps", 2000, "Pretraining steps.")
flags.DEFINE_integer("vocab_size", 8000, "WordPiece vocabulary size.")
flags.DEFINE_integer("dupe_factor", 5, "Masking passes over the training documents.")

SEQ, PRED = 64, 10  # sequence length, predictions per sequence
FILL_MASK = [
    "Return a new [MASK] containing the items of the sequence.",
    "The [MASK] argument must be a string.",
    "If the file does not exist, an [MASK] is raised.",
]


def _baseline(paths: dict) -> tuple[str, float]:
    """Accuracy of always predicting the most frequent masked token of training."""
    from bert_jax.data.pretraining import records as pretraining_records
    from bert_jax.tokenizers.wordpiece import BertTokenizer

    tok = BertTokenizer(str(paths["vocab_txt"]))
    labels = {}
    for split in ("train", "eval"):
        ex = pretraining_records.read_tfrecords(str(paths[f"{split}_tfrecord"]), SEQ, PRED)
        labels[split] = ex["masked_lm_ids"][ex["masked_lm_weights"] > 0]
    top = collections.Counter(labels["train"].tolist()).most_common(1)[0][0]
    return tok.convert_ids_to_tokens([top])[0], float(np.mean(labels["eval"] == top))


def _fill_mask(run_dir: Path) -> None:
    from bert_jax.tools.predict import Predictor

    for row in Predictor(str(run_dir))(FILL_MASK):
        words = ", ".join(p["token"] for p in row["masks"][0]["predictions"])
        print(f"  {row['text']}\n    -> {words}")


def main(argv):
    del argv
    import jax

    from bert_jax import configs, tasks, train
    from bert_jax.checkpoints import pretrained
    from bert_jax.data.pretraining import embedded as embedded_pretraining

    start = time.time()
    wd = Path(FLAGS.workdir)
    paths = embedded_pretraining.prepare(
        str(wd / "data"), SEQ, PRED, FLAGS.dupe_factor, FLAGS.vocab_size
    )
    word, base_acc = _baseline(paths)

    config = configs.load(configs.repository_config("pretrain.py") + ":tiny")
    config.model.vocab_size = embedded_pretraining.vocab_size(paths)
    config.data.train_files = str(paths["train_tfrecord"])
    config.data.eval_files = str(paths["eval_tfrecord"])
    config.data.vocab_file = str(paths["vocab_txt"])  # the workdir keeps it for fill-mask
    config.max_seq_length, config.max_predictions_per_seq = SEQ, PRED
    config.train_batch_size = config.eval_batch_size = 32
    config.num_train_steps = FLAGS.num_train_steps
    config.optimizer.learning_rate = 1e-3  # tiny models take a larger rate (Turc et al. 2019)
    config.optimizer.warmup_steps = FLAGS.num_train_steps // 10
    config.log_every = 100
    config.eval_every = config.checkpoint_every = max(FLAGS.num_train_steps // 4, 1)
    run_dir = wd / "run"
    try:
        state, metrics = train.run(config, str(run_dir))
    except train.Stopped as e:  # Ctrl-C: saved; a rerun resumes
        e.exit("bert_jax.tools.demo")

    model = tasks.get(config).model()
    params = jax.tree.map(np.asarray, state.params)
    ckpt = wd / "bert_tiny"
    if not ckpt.exists():
        pretrained.save(ckpt, model, params)
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    curve = [(r["step"], r["eval/mlm_accuracy"]) for r in rows if "eval/mlm_accuracy" in r]
    print("\nheld-out MLM accuracy by step: " + ", ".join(f"{s}: {a:.3f}" for s, a in curve))
    print(
        f"held-out MLM accuracy {metrics['eval/mlm_accuracy']:.3f} after "
        f"{config.num_train_steps} steps; most-frequent-token baseline ({word!r}) "
        f"{base_acc:.3f}; NSP accuracy {metrics['eval/nsp_accuracy']:.3f}"
    )
    print(
        f"checkpoint: {ckpt} (load with bert_jax.checkpoints.pretrained.load); metrics: "
        f"{run_dir / 'metrics.jsonl'}"
    )
    print("fill-mask, top 5:")
    _fill_mask(run_dir)
    print(f"demo finished in {time.time() - start:.0f} s")


if __name__ == "__main__":
    # The CPU settings `python -m bert_jax.main` starts with (docs/performance.md).
    cpu_env.apply()
    cli.quiet_logging()  # libraries' INFO lines only at --verbosity=1
    logging.set_verbosity(logging.WARNING)
    app.run(main)
