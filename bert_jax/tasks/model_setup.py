"""The model architecture and tokenizer a training config asks for.

With `init_checkpoint` set, the architecture comes from the checkpoint; an
explicit `model.size` or architecture field that disagrees with it is an
error naming the key, while numerics (dtype, dropout, scan, remat) may be
changed freely.

`attention_impl` "" (the default) is "auto": the fastest implementation the
config and the target platform allow (`resolve_attention_impl`), chosen here,
where the trainer builds its model, and logged; the model itself never looks
at the platform.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import jax
import jax.numpy as jnp
from absl import logging

from bert_jax.checkpoints import names as names
from bert_jax.checkpoints import pretrained
from bert_jax.data.pack_examples import PACKED_KEYS
from bert_jax.models.bert import SIZES, BertConfig, config_for_size, without_removed_fields
from bert_jax.tokenizers import from_folder as tokenizers_from_folder
from bert_jax.tokenizers.wordpiece import BertTokenizer

# Fields that fix parameter shapes (checked against a checkpoint).
ARCHITECTURE = (
    "vocab_size",
    "hidden_size",
    "num_layers",
    "num_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
)


def model_config(config, platform: str | None = None) -> BertConfig:
    """config.model (size + BertConfig field overrides; None = unset) -> BertConfig.

    Args:
      config: a training config.
      platform: where the model will run ("cpu", "gpu", "tpu"), for the
        automatic attention_impl; None: `jax.default_backend()`.
    """
    return with_attention_impl(_architecture(config), config, platform)


def _architecture(config) -> BertConfig:
    overrides = {k: v for k, v in config.model.items() if k != "size" and v is not None}
    overrides = without_removed_fields(overrides)  # a stored config.json's
    init = config.get("init_checkpoint", "")
    if not init:
        if not config.model.size:
            raise ValueError(f"set model.size (one of {list(SIZES)}) or init_checkpoint")
        return config_for_size(config.model.size, **overrides)
    ckpt = pretrained.load_config(init)
    if config.model.size:
        arch = {k: v for k, v in overrides.items() if k in ARCHITECTURE}
        sized = config_for_size(config.model.size, **arch)
        for key in ARCHITECTURE[1:5]:
            if getattr(sized, key) != getattr(ckpt, key):
                raise ValueError(
                    f"model.size={config.model.size!r} conflicts with init_checkpoint {init}: "
                    f"{key} {getattr(sized, key)} vs {getattr(ckpt, key)} (leave model.size "
                    "empty to take the architecture from the checkpoint)"
                )
    for key in ARCHITECTURE:
        if key in overrides and overrides[key] != getattr(ckpt, key):
            raise ValueError(
                f"model.{key}={overrides[key]} conflicts with init_checkpoint "
                f"{init} ({key}={getattr(ckpt, key)})"
            )
    return dataclasses.replace(ckpt, **overrides)


# The splash kernel tiles the sequence in blocks of the TPU's 128 lanes (models/splash.py).
SPLASH_LENGTH_MULTIPLE = 128


def resolve_attention_impl(
    cfg: BertConfig, platform: str, length: int, return_attention: bool = False
) -> str:
    """The fastest attention implementation for `cfg` on `platform`; the same math.

    Args:
      cfg: the model config (its dtype, attention dropout and head size count).
      platform: the TARGET platform ("cpu", "gpu"/"cuda", "tpu"): for an
        ahead-of-time compile for a TPU slice that is "tpu", not the host's.
      length: every batch's sequence length is a multiple of this.
      return_attention: the attention weights are asked for.

    Returns:
      "splash" on TPU with attention dropout off, no attention weights and a
      length that is a multiple of 128; "cudnn" on GPU with bf16/fp16 compute
      and a head size that is a multiple of 8; otherwise "xla". (Training with
      attention dropout runs the explicit softmax path whatever this says.)
    """
    if (
        platform == "tpu"
        and cfg.attention_dropout == 0
        and not return_attention
        and length % SPLASH_LENGTH_MULTIPLE == 0
    ):
        return "splash"
    half = cfg.compute_dtype in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    if platform in ("gpu", "cuda") and half and cfg.head_dim % 8 == 0:
        return "cudnn"
    return "xla"


def with_attention_impl(cfg: BertConfig, config, platform: str | None = None) -> BertConfig:
    """`cfg` with the attention implementation `config.model.attention_impl` names;
    "" or unset (auto): `resolve_attention_impl` for `platform` (None:
    `jax.default_backend()`), logged. `bert_jax.perf.aot` calls it with "tpu"."""
    asked = config.model.get("attention_impl") or ""
    if asked:
        return dataclasses.replace(cfg, attention_impl=asked)
    platform = platform or jax.default_backend()
    # Batches are max_seq_length long, or cut to a multiple of data.length_bucket.
    length = math.gcd(config.max_seq_length, config.data.get("length_bucket", 0) or 0)
    impl = resolve_attention_impl(cfg, platform, length)
    logging.info(
        "attention_impl auto -> %r (platform %s, dtype %s, attention_dropout %s, "
        "head size %d, lengths multiples of %d)",
        impl,
        platform,
        cfg.dtype,
        cfg.attention_dropout,
        cfg.head_dim,
        length,
    )
    return dataclasses.replace(cfg, attention_impl=impl)


# The sentence classifier each family's HF task model has (`heads.Classifier`):
# RoBERTa's and DistilBERT's read the first token through their own hidden
# dense (tanh / ReLU) instead of a pooler; BERT and ALBERT use the pooler ("").
CLASSIFIER_HIDDEN_ACT = {"bert": "", "albert": "", "roberta": "tanh", "distilbert": "relu"}


def classifier_setup(model_config: BertConfig) -> tuple[BertConfig, str]:
    """(encoder config, classifier hidden_act) of a sentence classifier in the
    encoder's family. The pooler is there exactly when the head reads it: a
    masked-LM checkpoint saves none (HF add_pooling_layer=False), so BERT and
    ALBERT classifiers get a fresh one, as HF's do; RoBERTa's drop it."""
    act = CLASSIFIER_HIDDEN_ACT[names.family_of(model_config)]
    return dataclasses.replace(model_config, use_pooler=not act), act


def vocab_file(config) -> str:
    """data.vocab_file, else the init checkpoint's vocab.txt."""
    if config.data.get("vocab_file"):
        if not Path(config.data.vocab_file).is_file():
            raise FileNotFoundError(f"data.vocab_file {config.data.vocab_file} does not exist")
        return config.data.vocab_file
    init = config.get("init_checkpoint", "")
    if not init:
        raise ValueError("set data.vocab_file or init_checkpoint (a checkpoint with a vocab.txt)")
    if not Path(init).exists():
        raise FileNotFoundError(f"init_checkpoint {init} does not exist")
    if not (Path(init) / "vocab.txt").exists():
        raise ValueError(f"set data.vocab_file: init_checkpoint {init} has no vocab.txt")
    return str(Path(init) / "vocab.txt")


def tokenizer(config):
    """data.vocab_file's WordPiece; else the tokenizer of the folder
    data.tokenizer_dir names (a workdir, for `bert_jax.tools.predict`), else of the
    init checkpoint's folder: its vocab.txt, an ALBERT spiece.model or a
    RoBERTa vocab.json + merges.txt (`tokenizers_from_folder.from_folder`)."""
    lower = config.data.get("do_lower_case", True)
    if config.data.get("vocab_file"):
        return BertTokenizer(vocab_file(config), do_lower_case=lower)
    folder = config.data.get("tokenizer_dir") or config.get("init_checkpoint", "")
    if folder and Path(folder).is_dir():
        return tokenizers_from_folder.from_folder(folder, lower)
    return BertTokenizer(vocab_file(config), do_lower_case=lower)  # its error names the keys


def encoder_inputs(batch) -> dict:
    """The model inputs of a fine-tuning batch (every task but pretraining), with
    the packed-row inputs when the batch is packed (`data.pack_examples`)."""
    out = dict(
        input_ids=batch["input_ids"],
        token_type_ids=batch["token_type_ids"],
        attention_mask=batch["attention_mask"],
    )
    return out | {k: batch[k] for k in PACKED_KEYS if k in batch}
