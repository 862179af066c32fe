"""Keys every fine-tuning config adds to `common`.

Defaults are the BERT paper's GLUE recipe (Devlin et al. 2019, section 4.1
and appendix A.3): batch 32, 3 epochs, learning rate chosen among
{5e-5, 4e-5, 3e-5, 2e-5} on dev, linear warmup over the first 10% of steps
(`run_classifier.py` warmup_proportion 0.1), AdamW with weight decay 0.01,
dropout 0.1, sequence length 128.

Steps: `num_train_steps` is unset (None) and derived from
`num_train_epochs` as `run_classifier.py` does, int(N / batch * epochs);
setting `num_train_steps` (e.g. `--config.num_train_steps=200`) takes it as
given and the epochs are not used. The trainer logs which it did.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from bert_jax.configs import common


def base_config(model: str = "") -> ml_collections.ConfigDict:
    c = common.base_config()
    # Empty model.size: the architecture comes from init_checkpoint.
    c.model.size = common.check_size(model)
    c.init_checkpoint = ""
    c.max_seq_length = 128
    c.train_batch_size = 32
    c.eval_batch_size = 64
    c.num_train_steps = config_dict.placeholder(int)  # None: from num_train_epochs
    c.num_train_epochs = 3.0
    c.optimizer.learning_rate = 2e-5
    c.optimizer.warmup_steps = 0
    c.optimizer.warmup_proportion = 0.1
    c.log_every = 50
    c.eval_every = 0  # evaluate at the end only
    c.checkpoint_every = 1000
    c.keep_checkpoints = 1
    c.data.data_dir = ""  # local files in the task's original format; empty: TFDS
    c.data.vocab_file = ""  # empty: the init checkpoint's tokenizer files
    # A folder with tokenizer files (vocab.txt | spiece.model | vocab.json +
    # merges.txt) when data.vocab_file is empty; empty: the init checkpoint's.
    c.data.tokenizer_dir = ""
    c.data.do_lower_case = True
    c.data.max_train_examples = 0  # 0: all
    c.data.on_bad_input = "fail"  # or "skip" malformed rows/answers (counted, logged)
    # Batches are cut to their longest row, rounded up to a multiple of this
    # (0: always max_seq_length wide). Padded positions are masked, so the
    # results are the same; each distinct width compiles once (4 at seq 128).
    c.data.length_bucket = 32
    # Rows of similar length share a batch (HF Trainer's group_by_length):
    # much less padding on short texts, but not the paper's random batches.
    c.data.group_by_length = False
    # Sentence classification only: pack each batch's examples up to this many
    # to a row (0: off). Same examples and loss per step, a fraction of the
    # padding work (bert_jax.data.pack_examples; docs/performance.md).
    c.data.pack_examples = 0
    # Packed batches have a multiple of this many rows (data-parallel size x
    # grad_accum_steps must divide it); each distinct row count compiles once.
    c.data.pack_row_multiple = 1
    return c


def tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrink to a laptop CPU run (a tiny random model unless a size or checkpoint is set)."""
    if not c.model.size and not c.init_checkpoint:
        c.model.size = "tiny"
    c.max_seq_length = 64
    c.train_batch_size = c.eval_batch_size = 16
    c.num_train_steps = 20
    c.log_every = 10
    c.data.max_train_examples = 320
    return c
