"""GLUE fine-tuning: `task=<cola|sst2|mrpc|qqp|stsb|mnli|qnli|rte|wnli>[,model=<size>][,tiny]`.

    python -m bert_jax.main --config=configs/glue.py:task=mrpc --workdir=runs/mrpc \
        --config.init_checkpoint=/ckpt/uncased_L-12_H-768_A-12 \
        --config.data.data_dir=/data/glue --config.optimizer.learning_rate=2e-5

Recipe (BERT paper section 4.1, REFERENCES.md): batch 32, 3 epochs, lr best of
{5e-5, 4e-5, 3e-5, 2e-5} on dev, seq 128, warmup 10%. Expected dev/test
results: BERT-base GLUE test MNLI 84.6/83.4, QQP 71.2, QNLI 90.5, SST-2 93.5,
CoLA 52.1, STS-B 85.8, MRPC 88.9, RTE 66.4 (paper Table 1); HF's Flax example
(bert-base-cased, dev, 5 seeds): CoLA 59.04, SST-2 92.23, MRPC F1 88.97,
STS-B Pearson 88.94, QQP 90.76, MNLI-m 83.80, QNLI 90.82, RTE 64.76.
Without data.data_dir the data comes from TFDS `glue/<task>`.
"""

from bert_jax.configs import finetune
from bert_jax.configs.common import parse_arg

TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")


def get_config(arg: str | None = None):
    a = parse_arg(arg, task="sst2", model="", tiny=False, runlocal=False)
    if a.task not in TASKS:
        raise ValueError(f"unknown GLUE task {a.task!r}; tasks: {list(TASKS)}")
    c = finetune.base_config(a.model)
    c.task = "glue"
    c.glue_task = a.task
    c.best_metric = ""
    if a.task in ("mrpc", "wnli"):
        c.num_train_epochs = 5.0  # HF Flax GLUE example: 5 epochs for the small MRPC/WNLI
    if a.tiny or a.runlocal:
        finetune.tiny(c)
    return c
