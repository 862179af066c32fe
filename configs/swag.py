"""SWAG multiple choice (BERT paper section 4.4) from the SWAG CSV files.

    python -m bert_jax.main --config=configs/swag.py --workdir=runs/swag \
        --config.init_checkpoint=/ckpt/uncased_L-12_H-768_A-12 --config.data.data_dir=/data/swag

Recipe (paper section 4.4): 3 epochs, lr 2e-5, batch 16, seq 128 (our
choice for the sequence length; the paper does not state it). Expected:
BERT-base dev accuracy 81.6, BERT-large 86.6 (paper Table 4).
"""

from configs import finetune
from configs.common import parse_arg


def get_config(arg: str | None = None):
    a = parse_arg(arg, model="", tiny=False, runlocal=False)
    c = finetune.base_config(a.model)
    c.task = "multiple_choice"
    c.num_choices = 4
    c.train_batch_size = 16
    c.eval_batch_size = 32
    c.optimizer.learning_rate = 2e-5
    c.data.train_file = "train.csv"
    c.data.eval_file = "val.csv"
    if a.tiny or a.runlocal:
        finetune.tiny(c)
    return c
