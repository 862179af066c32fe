"""SQuAD v1.1 / v2.0 as in the BERT paper (Devlin et al. 2019, sections 4.2 and 4.3).

    python -m bert_jax.experiments.sweep --sweep=experiments/squad_paper.py:version=1.1 \\
        --config=configs/squad.py --workdir_root=runs/squad11 \\
        --config.init_checkpoint=/ckpt/uncased_L-12_H-768_A-12 \\
        --config.data.data_dir=/data/squad
    python -m bert_jax.experiments.results runs/squad11 --out=runs/squad11/results

The paper's settings: v1.1 3 epochs, learning rate 5e-5, batch 32; v2.0 2
epochs, 5e-5, batch 48 (REFERENCES.md). The original repository fine-tunes
BERT-large with 3e-5, so the grid holds both; seeds give the spread
`bert_jax.experiments.results` reports. Pass the bare configs/squad.py: the points set
the version and what goes with it (files, epochs, batch).

Argument: `version=<1.1|2.0>` (default 1.1), `seeds=N` (default 3).
"""

from bert_jax.configs.common import parse_arg
from bert_jax.experiments.sweep import product, sweep

LEARNING_RATES = (5e-5, 3e-5)  # paper (5e-5); google-research/bert README, large (3e-5)
PER_VERSION = {  # BERT paper 4.2 (v1.1) and 4.3 (v2.0)
    "1.1": {"num_train_epochs": 3.0, "train_batch_size": 32},
    "2.0": {"num_train_epochs": 2.0, "train_batch_size": 48},
}


def get_sweep(arg=None):
    a = parse_arg(arg, version="1.1", seeds=3)
    if a.version not in PER_VERSION:
        raise ValueError(f"squad_paper: version={a.version!r}; choose 1.1 or 2.0")
    fixed = {
        "version": a.version,
        "data.train_file": f"train-v{a.version}.json",
        "data.eval_file": f"dev-v{a.version}.json",
        **PER_VERSION[a.version],
    }
    return product(
        [fixed], sweep("optimizer.learning_rate", LEARNING_RATES), sweep("seed", range(a.seeds))
    )
