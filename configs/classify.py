"""Text classification on any labelled data: a local .tsv/.csv/.jsonl or a TFDS dataset.

    # Intent or spam data in a table (header with the column names):
    python -m bert_jax.main --config=configs/classify.py --workdir=runs/intent \
        --config.init_checkpoint=/ckpt/bert-base-uncased \
        --config.data.train_file=train.csv --config.data.eval_file=dev.csv \
        --config.data.text_column=text --config.data.label_column=intent
    # IMDB sentiment from TFDS (`imdb_reviews`), reviews cut to 256 word pieces:
    python -m bert_jax.main --config=configs/classify.py:imdb --workdir=runs/imdb \
        --config.init_checkpoint=/ckpt/bert-base-uncased

Hyperparameters follow the BERT GLUE recipe (configs/finetune.py). For IMDB,
Sun et al. 2019 ("How to Fine-Tune BERT for Text Classification") report
BERT-base test error 5.4-6.0% with head+tail truncation at 512 tokens.
"""

from bert_jax.configs import finetune
from bert_jax.configs.common import parse_arg


def get_config(arg: str | None = None):
    a = parse_arg(arg, imdb=False, model="", tiny=False, runlocal=False)
    c = finetune.base_config(a.model)
    c.task = "classify"
    c.data.train_file = ""
    c.data.eval_file = ""
    c.data.text_column = "text"
    c.data.text_b_column = ""
    c.data.label_column = "label"
    c.data.labels = ()  # empty: the sorted labels of the training file
    c.data.tfds_name = ""
    c.data.train_split = "train"
    c.data.eval_split = "test"
    if a.imdb:
        c.data.tfds_name = "imdb_reviews"
        c.max_seq_length = 256
        c.num_train_epochs = 2.0
    if a.tiny or a.runlocal:
        finetune.tiny(c)
    return c
