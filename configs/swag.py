"""SWAG multiple choice (BERT paper section 4.4): SWAG CSV files, or HellaSwag from TFDS.

    python -m bert_jax.main --config=configs/swag.py --workdir=runs/swag \
        --config.init_checkpoint=/ckpt/uncased_L-12_H-768_A-12 --config.data.data_dir=/data/swag
    # Without data.data_dir: TFDS `hellaswag` (train / validation splits).
    python -m bert_jax.main --config=configs/swag.py --workdir=runs/hellaswag \
        --config.init_checkpoint=/ckpt/uncased_L-12_H-768_A-12

Recipe (paper section 4.4): 3 epochs, lr 2e-5, batch 16, seq 128 (our
choice for the sequence length; the paper does not state it). Expected on
SWAG: BERT-base dev accuracy 81.6, BERT-large 86.6 (paper Table 4).

TFDS has no SWAG builder. Without data.data_dir the data is TFDS
`hellaswag`: HellaSwag (Zellers et al. 2019, "HellaSwag: Can a Machine
Really Finish Your Sentence?"), SWAG's successor by the same authors, with
contexts and 4 endings built adversarially against BERT, so the SWAG
numbers above do not carry over to it.
"""

from bert_jax.configs import finetune
from bert_jax.configs.common import parse_arg


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
    # Without data_dir: a TFDS dataset with context/endings/label features.
    c.data.tfds_name = "hellaswag"
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    if a.tiny or a.runlocal:
        finetune.tiny(c)
    return c
