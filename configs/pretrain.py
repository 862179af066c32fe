"""BERT pretraining (MLM + NSP) on TFRecords in the original feature layout.

Launch (the tiny variant runs on a laptop CPU):

    python -m bert_jax.main --config=configs/pretrain.py:model=tiny,tiny \
        --workdir=runs/tiny --config.data.train_files='data/*.tfrecord'

Recipe (BERT paper, Devlin et al. 2019, section A.2; REFERENCES.md):
batch 256 sequences, 1M steps (90% at length 128, 10% at 512), Adam lr 1e-4,
b1 0.9, b2 0.999, weight decay 0.01, 10k warmup steps then linear decay,
dropout 0.1, GELU; max_predictions_per_seq 20 at 128 and 80 at 512
(google-research/bert README).
"""

from configs import common


def get_config(arg: str | None = None):
    a = common.parse_arg(arg, model="base", tiny=False, runlocal=False)
    c = common.base_config()
    c.task = "pretraining"
    c.model.size = a.model
    c.max_seq_length = 128
    c.max_predictions_per_seq = 20
    c.nsp = True
    c.train_batch_size = 256
    c.num_train_steps = 900_000
    c.optimizer.learning_rate = 1e-4
    c.optimizer.warmup_steps = 10_000
    c.log_every = 100
    c.eval_every = 10_000
    c.checkpoint_every = 10_000
    c.best_metric = "eval/mlm_accuracy"
    c.data.train_files = ""
    c.data.eval_files = ""
    if a.tiny or a.runlocal:
        c.model.size = "tiny"
        c.train_batch_size = c.eval_batch_size = 16
        c.num_train_steps = 20
        c.optimizer.warmup_steps = 2
        c.log_every = c.eval_every = c.checkpoint_every = 10
    return c
