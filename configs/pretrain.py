"""BERT pretraining (MLM + NSP/SOP) on TFRecords from create_pretraining_data.

Arguments: `model=tiny|mini|small|medium|base|large` (default base; large
for MLPerf; tiny for the laptop variant), `phase=1|2`,
`recipe=bert|roberta|albert|mlperf`, `pack=K` (records packed up to K examples a
row by `python -m bert_jax.data.pretraining.pack_records`; the tiny variant packs its
own), and `tiny` (or `runlocal`) for a laptop-sized run (data, batch and
steps; an explicit `model=` is kept). Launch:

    # Data (original recipe, static masking), then phase 1 at length 128:
    python -m bert_jax.data.pretraining.create_pretraining_data --input_file='corpus/*.txt' \
        --output_file=data/seq128.tfrecord --vocab_file=vocab.txt \
        --max_seq_length=128 --max_predictions_per_seq=20
    python -m bert_jax.main --config=configs/pretrain.py:model=base,phase=1 \
        --workdir=gs://BUCKET/base-p1 --config.data.train_files='data/seq128*.tfrecord'
    # Phase 2 at length 512, initialised from phase 1's workdir:
    python -m bert_jax.main --config=configs/pretrain.py:model=base,phase=2 \
        --workdir=gs://BUCKET/base-p2 --config.init_checkpoint=gs://BUCKET/base-p1 \
        --config.data.train_files='data/seq512*.tfrecord'

Expected results, with their sources:
  * recipe=bert (Devlin et al. 2019, section A.2; google-research/bert
    README): batch 256, 1M steps, 90% at length 128 (20 predictions) and 10%
    at 512 (80 predictions), Adam lr 1e-4, b1 0.9, b2 0.999, weight decay
    0.01, 10k warmup steps then linear decay, dropout 0.1. BERT-base then
    reaches SQuAD v1.1 dev 88.5 F1 / 80.8 EM and GLUE test average 79.6
    (paper Tables 1-2); the pretraining MLM accuracy is not reported.
  * recipe=roberta (Liu et al. 2019, RoBERTa, section 4 and Table 9): no
    NSP, dynamic masking, full sentences packed to 512 across documents
    (create_pretraining_data --dynamic --objective=none), batch 8k, peak lr
    6e-4 (base), b2 0.98, 24k warmup steps, 500k steps.
  * recipe=albert (Lan et al. 2020, ALBERT, sections 3.1, 4.1 and 4.2;
    google-research/albert run_pretraining.py flags): ALBERT-base's
    encoder (factorised 128-wide embeddings, all 12 layers sharing one,
    gelu_new), sentence-order prediction instead of NSP, n-gram masking with
    n <= 3 (create_pretraining_data --objective=sop --max_ngram=3), length
    512 with 20 predictions, LAMB at lr 0.00176, batch 4096, 125k steps,
    3,125 warmup steps. ALBERT-base (v1) then reaches SQuAD v1.1 89.3/82.3,
    MNLI 81.6, SST-2 90.3, average 80.1 (paper Table 2; REFERENCES.md).
  * recipe=mlperf (MLPerf Training BERT, mlcommons/training
    language_model/tensorflow/bert; REFERENCES.md): BERT-large, length 512,
    76 predictions, LAMB, starts from the reference checkpoint (MLM accuracy
    about 0.341) and stops at MLM accuracy >= 0.720 on the fixed 10k
    eval set. Batch size and learning rate are tuned per submission; the
    values here are placeholders to set (--config.train_batch_size,
    --config.optimizer.learning_rate).
  * tiny: runs in minutes on a laptop CPU; `python -m bert_jax.tools.demo` uses it
    and prints the MLM accuracy it reaches next to the most-frequent-token
    baseline.
"""

from bert_jax.configs import common


def get_config(arg: str | None = None):
    a = common.parse_arg(arg, model="", phase=1, recipe="bert", pack=0, tiny=False, runlocal=False)
    if a.recipe not in ("bert", "roberta", "albert", "mlperf"):
        raise ValueError(f"recipe={a.recipe!r}: choose bert, roberta, albert or mlperf")
    if a.phase not in (1, 2):
        raise ValueError(f"phase={a.phase}: choose 1 or 2")
    laptop = a.tiny or a.runlocal
    # An explicit model= is kept by every variant (model=mini,tiny trains a
    # mini model on the laptop data); without it: base, large for MLPerf, tiny
    # for the laptop variant.
    size = common.check_size(a.model) or (
        "tiny" if laptop else "large" if a.recipe == "mlperf" else "base"
    )
    c = common.base_config()
    c.task = "pretraining"
    c.model.size = size
    # bf16 compute with fp32 parameters and optimizer state, on every platform
    # (what TPU pretraining runs; the matmuls take bf16 inputs at full rate).
    c.model.dtype, c.model.param_dtype = "bfloat16", "float32"
    c.nsp = True  # NSP head and loss; False for RoBERTa-style MLM only
    c.masked_lm_prob = 0.15  # dynamic masking only; static records carry their masks
    c.whole_word_mask = False
    c.data.train_files = ""  # comma-separated globs of TFRecords, or "embedded"
    c.data.eval_files = ""
    c.data.embedded_dir = ""  # where "embedded" data is built (default ~/.cache/bert_jax)
    c.data.vocab_file = ""  # needed for dynamic-masking records
    c.data.do_lower_case = True
    c.data.num_shards = 0  # 0: one data shard per process
    # K > 0: records packed K examples a row at most (bert_jax.data.pretraining.pack_records,
    # a row with max_predictions_per_seq masked positions). Arg `pack=K`.
    c.data.examples_per_row = 0
    c.data.shuffle_buffer = 10_000
    # The recipe of "embedded" data (`RecipeConfig.objective`, `max_ngram`);
    # records from files carry what create_pretraining_data was given.
    c.data.objective = "nsp"
    c.data.max_ngram = 1
    c.best_metric = "eval/mlm_accuracy"
    c.log_every = 100
    c.eval_every = 10_000
    c.checkpoint_every = 10_000
    c.optimizer.learning_rate = 1e-4
    c.optimizer.warmup_steps = 10_000
    c.train_batch_size = 256
    # BERT recipe: 900k steps at 128 then 100k at 512 (paper A.2).
    if a.phase == 1:
        c.max_seq_length, c.max_predictions_per_seq, c.num_train_steps = 128, 20, 900_000
    else:
        c.max_seq_length, c.max_predictions_per_seq, c.num_train_steps = 512, 80, 100_000
        c.optimizer.warmup_steps = 1_000
        c.init_checkpoint = ""  # set to the phase-1 workdir
    if a.recipe == "roberta":
        c.nsp = False
        c.max_seq_length, c.num_train_steps, c.train_batch_size = 512, 500_000, 8192
        c.optimizer.learning_rate, c.optimizer.warmup_steps, c.optimizer.b2 = 6e-4, 24_000, 0.98
    elif a.recipe == "albert":
        c.model.embedding_size, c.model.share_layers = 128, True
        c.model.hidden_act = "gelu_tanh"  # ALBERT's gelu_new
        c.data.objective, c.data.max_ngram = "sop", 3  # the NSP head learns SOP
        c.max_seq_length, c.max_predictions_per_seq = 512, 20
        c.train_batch_size, c.num_train_steps = 4096, 125_000
        c.optimizer.name, c.optimizer.learning_rate = "lamb", 0.00176
        c.optimizer.warmup_steps = 3_125
    elif a.recipe == "mlperf":
        c.max_seq_length, c.max_predictions_per_seq = 512, 76
        c.optimizer.name, c.optimizer.warmup_steps = "lamb", 0
        c.num_train_steps = 10_000
        c.eval_every = c.checkpoint_every = 500
    if a.pack:
        if a.pack < 2:
            raise ValueError(f"pack={a.pack}: packing puts 2 or more examples in a row")
        c.data.examples_per_row = a.pack
    if laptop:
        # Offline: pretraining data built from the standard library's
        # docstrings (bert_jax/data/pretraining/embedded.py) unless set.
        c.data.train_files = c.data.eval_files = "embedded"
        c.model.vocab_size = 8000  # embedded_pretraining.VOCAB_SIZE
        if a.recipe == "albert":
            c.model.embedding_size = 64  # under the tiny model's 128
        c.max_seq_length = min(c.max_seq_length, 128)
        c.max_predictions_per_seq = min(c.max_predictions_per_seq, 20)
        c.train_batch_size = c.eval_batch_size = 16
        c.num_train_steps = 20
        c.optimizer.warmup_steps = 2
        c.log_every = c.eval_every = c.checkpoint_every = 10
    return c
