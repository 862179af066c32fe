"""SQuAD fine-tuning: `version=<1.1|2.0>[,model=<size>][,tiny]`.

    python -m bert_jax.main --config=configs/squad.py:version=1.1 --workdir=runs/squad11 \
        --config.init_checkpoint=/ckpt/uncased_L-12_H-768_A-12 --config.data.data_dir=/data/squad
    python -m bert_jax.metrics.squad /data/squad/dev-v1.1.json runs/squad11/predictions.json
    # Without data.data_dir: TFDS squad/v2.0 (train / validation splits).
    python -m bert_jax.main --config=configs/squad.py:version=2.0 --workdir=runs/squad20 \
        --config.init_checkpoint=/ckpt/uncased_L-12_H-768_A-12

Recipe (BERT paper section 4.2-4.3; google-research/bert run_squad.py flags):
seq 384, doc stride 128, max query 64, n-best 20, max answer 30; v1.1: batch
32, lr 5e-5 (3e-5 for large), 3 epochs; v2.0: batch 48, lr 5e-5, 2 epochs.
Expected: BERT-base v1.1 dev 80.8 EM / 88.5 F1 (paper Table 2; the original
README: 81.25 / 88.41); BERT-large v2.0 test 80.0 EM / 83.1 F1 (paper Table 3).

v2.0 null threshold: predict "" where null score - best span score >
null_score_diff_threshold (run_squad.py `write_predictions`). The paper
tunes it on dev (section 4.3: the threshold tau "is selected on the dev set
to maximize F1"); the original README runs once, reads best_f1_thresh from the
official evaluation and reruns with --null_score_diff_threshold. Evaluation
here does both in one run: eval/exact_match and eval/f1 (predictions.json)
are at this configured threshold, eval/null_score_diff_threshold is the
threshold tuned on dev, with eval/tuned_exact_match and eval/tuned_f1
(predictions_tuned.json); `bert_jax.tools.predict` uses the tuned one.
"""

from bert_jax.configs import finetune
from bert_jax.configs.common import parse_arg


def get_config(arg: str | None = None):
    a = parse_arg(arg, version="1.1", model="", tiny=False, runlocal=False)
    if a.version not in ("1.1", "2.0"):
        raise ValueError(f"version={a.version!r}: choose 1.1 or 2.0")
    c = finetune.base_config(a.model)
    c.task = "squad"
    c.version = a.version
    c.max_seq_length, c.doc_stride, c.max_query_length = 384, 128, 64
    c.n_best_size, c.max_answer_length = 20, 30
    c.null_score_diff_threshold = 0.0  # run_squad.py default; v2.0 eval also tunes it on dev
    c.optimizer.learning_rate = 5e-5
    c.num_train_epochs = 3.0 if a.version == "1.1" else 2.0
    c.train_batch_size = 32 if a.version == "1.1" else 48
    c.data.train_file = f"train-v{a.version}.json"
    c.data.eval_file = f"dev-v{a.version}.json"
    # Without data_dir: TFDS squad/v<version> (tensorflow_datasets squad_dataset_builder.py).
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    c.data.max_eval_examples = 0  # 0: all
    c.data.length_bucket = 128  # most windows are long: at most 3 widths to compile
    if a.tiny or a.runlocal:
        finetune.tiny(c)
        c.max_seq_length, c.doc_stride, c.max_query_length = 128, 64, 32
    return c
