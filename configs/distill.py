"""Distillation (DistilBERT): `task=pretraining|glue[,glue_task=sst2][,teacher=PATH][,tiny]`.

General distillation: a student from layers [0, 2, 4, 7, 9, 11] of a BERT-base
teacher (any checkpoint or workdir `bert_jax.checkpoints.pretrained.load` reads), trained
on masked-LM records with the teacher's soft targets:

    python -m bert_jax.main --config=configs/distill.py:teacher=/ckpt/bert-base-uncased \
        --workdir=runs/distil-base --config.data.train_files='data/seq128-*.tfrecord'

Whether it fits a TPU slice, compiled here with the teacher in the step
(`bert_jax.perf.aot`; the teacher checkpoint gives its shapes):

    python -m bert_jax.perf.aot --config=configs/distill.py:teacher=/ckpt/bert-base-uncased \
        --topology=v5p-8

Task-specific distillation: the teacher is a fine-tuned classification
workdir (here SST-2); the student starts from its layers, or from a
general-distilled student (`--config.distill.student_layers='()'
--config.init_checkpoint=runs/distil-base`):

    python -m bert_jax.main --config=configs/distill.py:task=glue,glue_task=sst2,teacher=runs/sst2 \
        --workdir=runs/sst2-distil --config.data.data_dir=/data/glue

Recipe (REFERENCES.md; Sanh et al. 2019, arXiv 1910.01108, and HF
transformers' examples/research_projects/distillation README): loss
5.0 x KL(T=2) x T^2 + 2.0 x MLM + 1.0 x cosine of the last hidden states, no
NSP, dynamic-size batches up to 4K examples with gradient accumulation, Adam
lr 5e-4; student initialised from teacher layers [0, 2, 4, 7, 9, 11].
Expected: DistilBERT GLUE dev macro 77.0 vs BERT-base-uncased 79.5 (SST-2
91.3, MNLI 82.1, CoLA 51.3), 66M parameters. Task-specific weights: HF's
`run_squad_w_distillation.py` defaults, T = 2, alpha_ce 0.5 and 0.5 on the
task loss. `tiny` shrinks a run for a laptop (a tiny teacher, e.g. a
`configs/pretrain.py:tiny` workdir, and its layer 0; data built from the
embedded corpus).
"""

import ml_collections

from bert_jax.configs import common, finetune

TASKS = ("pretraining", "glue")


def get_config(arg: str | None = None):
    a = common.parse_arg(
        arg, task="pretraining", glue_task="sst2", teacher="", tiny=False, runlocal=False
    )
    if a.task not in TASKS:
        raise ValueError(f"config argument task={a.task!r}: choose one of {list(TASKS)}")
    laptop = a.tiny or a.runlocal
    if a.task == "pretraining":
        c = common.base_config()
        c.model.size = ""  # the teacher's width; num_layers = len(distill.student_layers)
        c.nsp = False  # DistilBERT drops NSP (paper section 3)
        c.max_seq_length, c.max_predictions_per_seq = 128, 20
        c.masked_lm_prob = 0.15  # dynamic-masking records only
        c.whole_word_mask = False
        c.data.train_files = ""  # TFRecords (create_pretraining_data), or "embedded"
        c.data.eval_files = ""
        c.data.embedded_dir = ""  # where "embedded" data is built (default ~/.cache/bert_jax)
        c.data.dupe_factor = 5  # "embedded" only: passes over the corpus
        c.data.vocab_file = ""  # empty: the teacher's vocab.txt
        c.data.do_lower_case = True
        c.data.num_shards = 0
        c.data.examples_per_row = 0
        c.data.shuffle_buffer = 10_000
        c.best_metric = "eval/mlm_accuracy"
        c.train_batch_size = 4096  # DistilBERT: up to 4K examples (grad accumulation)
        c.num_train_steps = 100_000
        c.log_every, c.eval_every, c.checkpoint_every = 100, 10_000, 10_000
        # HF distillation train.py: lr 5e-4, warmup 5%, no weight decay, clip 5.0.
        c.optimizer.learning_rate, c.optimizer.weight_decay = 5e-4, 0.0
        c.optimizer.grad_clip_norm = 5.0
        c.optimizer.warmup_proportion, c.optimizer.warmup_steps = 0.05, 0
        alphas = dict(alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=1.0, alpha_label=0.0)
    else:
        c = finetune.base_config()
        c.glue_task = a.glue_task
        alphas = dict(alpha_ce=0.5, alpha_mlm=0.0, alpha_cos=0.0, alpha_label=0.5)
    c.task = "distill"
    c.distill = ml_collections.ConfigDict(
        dict(
            task=a.task,  # the base task: its data, metrics and predictions
            teacher_checkpoint=a.teacher,  # frozen; any format pretrained.load reads
            # Teacher layers the student starts from, in order; () = model.* /
            # init_checkpoint as in any run. DistilBERT: every other of 12.
            student_layers=(0, 2, 4, 7, 9, 11),
            temperature=2.0,
            **alphas,
        )
    )
    if laptop:
        c.model.size = "tiny"  # the teacher's width must be tiny's (checked)
        c.distill.student_layers = (0,)
        c.train_batch_size = c.eval_batch_size = 16
        c.num_train_steps = 20
        c.optimizer.warmup_steps, c.optimizer.warmup_proportion = 2, 0.0
        c.log_every = c.eval_every = c.checkpoint_every = 10
        if a.task == "pretraining":
            c.data.train_files = c.data.eval_files = "embedded"
            c.model.vocab_size = 8000  # embedded_pretraining.VOCAB_SIZE (a tiny teacher's)
            c.max_seq_length, c.max_predictions_per_seq = 64, 10
        else:
            finetune.tiny(c)
    return c
