"""CoNLL-2003 named-entity recognition (first-subword labelling, BERT paper section 5.3).

    python -m bert_jax.main --config=configs/ner.py --workdir=runs/ner \
        --config.init_checkpoint=/ckpt/cased_L-12_H-768_A-12 \
        --config.data.data_dir=/data/conll2003

Recipe: a cased model (the BERT paper's NER results use cased WordPiece),
seq 128, batch 32, lr 5e-5, 3 epochs (the paper's fine-tuning grid, A.3).
Expected: BERT-base dev F1 96.4, test 92.4 (paper Table 7, fine-tuning with
document context; sentence-level runs land lower). Without data.data_dir the
data comes from TFDS `conll2003`.
"""

from bert_jax.configs import finetune
from bert_jax.configs.common import parse_arg


def get_config(arg: str | None = None):
    a = parse_arg(arg, model="", tiny=False, runlocal=False)
    c = finetune.base_config(a.model)
    c.task = "ner"
    c.optimizer.learning_rate = 5e-5
    c.data.do_lower_case = False
    c.data.train_file = "train.txt"
    c.data.eval_file = "valid.txt"
    c.data.test_file = "test.txt"
    if a.tiny or a.runlocal:
        finetune.tiny(c)
    return c
