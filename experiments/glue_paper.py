"""The BERT paper's GLUE protocol as a sweep (Devlin et al. 2019, section 4.1).

    python -m bert_jax.experiments.sweep --sweep=experiments/glue_paper.py:task=all \\
        --config=configs/glue.py --workdir_root=runs/glue_paper \\
        --config.init_checkpoint=/ckpt/uncased_L-12_H-768_A-12 \\
        --config.data.data_dir=/data/glue
    python -m bert_jax.experiments.results runs/glue_paper --out=runs/glue_paper/results

The paper fine-tunes with batch 32 for 3 epochs (configs/glue.py's defaults
for every task when no `task=` argument is given, so pass the bare
configs/glue.py) and picks the learning rate among {5e-5, 4e-5, 3e-5, 2e-5}
on dev. On the small sets fine-tuning "was sometimes unstable" (section 4.1),
so the paper ran random restarts there and kept the best on dev; this sweep
gives those tasks more seeds, and `bert_jax.experiments.results` reports the median over
seeds per learning rate (the learning rate picked by that median) and the
spread.

Argument: `task=<name|name+name|all>` (default all nine), `seeds=N` (default
3 for MNLI, QQP, QNLI and SST-2, 5 for the small CoLA, STS-B, MRPC, RTE and
WNLI), `lrs=5e-5+4e-5` to narrow the grid (quick trials).
"""

from bert_jax.configs.common import parse_arg
from bert_jax.experiments.sweep import chain, product, sweep

TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")
SMALL = ("cola", "stsb", "mrpc", "rte", "wnli")  # under 10k training examples (GLUE paper)
LEARNING_RATES = (5e-5, 4e-5, 3e-5, 2e-5)  # BERT paper section 4.1


def get_sweep(arg=None):
    a = parse_arg(arg, task="all", seeds=0, lrs="")
    tasks = TASKS if a.task == "all" else tuple(a.task.split("+"))
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"glue_paper: unknown task(s) {unknown}; tasks: {list(TASKS)}")
    lrs = tuple(float(x) for x in a.lrs.split("+")) if a.lrs else LEARNING_RATES
    return chain(
        *[
            product(
                sweep("glue_task", [task]),
                sweep("optimizer.learning_rate", lrs),
                sweep("seed", range(a.seeds or (5 if task in SMALL else 3))),
            )
            for task in tasks
        ]
    )
