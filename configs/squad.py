"""SQuAD fine-tuning: `version=<1.1|2.0>[,model=<size>][,tiny]`.

    python -m bert_jax.main --config=configs/squad.py:version=1.1 --workdir=runs/squad11 \
        --config.init_checkpoint=/ckpt/uncased_L-12_H-768_A-12 --config.data.data_dir=/data/squad
    python -m bert_jax.tasks.squad_eval /data/squad/dev-v1.1.json runs/squad11/predictions.json

Recipe (BERT paper section 4.2-4.3; google-research/bert run_squad.py flags):
seq 384, doc stride 128, max query 64, n-best 20, max answer 30; v1.1: batch
32, lr 5e-5 (3e-5 for large), 3 epochs; v2.0: batch 48, lr 5e-5, 2 epochs,
null_score_diff_threshold tuned on dev (the official script reports the best
threshold as best_f1_thresh). Expected: BERT-base v1.1 dev 80.8 EM / 88.5 F1
(paper Table 2; the original README: 81.25 / 88.41); BERT-large v2.0 test
80.0 EM / 83.1 F1 (paper Table 3).
"""

from configs import finetune
from configs.common import parse_arg


def get_config(arg: str | None = None):
    a = parse_arg(arg, version="1.1", model="", tiny=False, runlocal=False)
    if a.version not in ("1.1", "2.0"):
        raise ValueError(f"version={a.version!r}: choose 1.1 or 2.0")
    c = finetune.base_config(a.model)
    c.task = "squad"
    c.version = a.version
    c.max_seq_length, c.doc_stride, c.max_query_length = 384, 128, 64
    c.n_best_size, c.max_answer_length = 20, 30
    c.null_score_diff_threshold = 0.0
    c.optimizer.learning_rate = 5e-5
    c.num_train_epochs = 3.0 if a.version == "1.1" else 2.0
    c.train_batch_size = 32 if a.version == "1.1" else 48
    c.data.train_file = f"train-v{a.version}.json"
    c.data.eval_file = f"dev-v{a.version}.json"
    c.data.on_error = "fail"  # or "skip" answers whose text does not match answer_start
    c.data.max_eval_examples = 0  # 0: all
    if a.tiny or a.runlocal:
        finetune.tiny(c)
        c.max_seq_length, c.doc_stride, c.max_query_length = 128, 64, 32
    return c
