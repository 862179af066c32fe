"""The model architecture and tokenizer a training config asks for.

With `init_checkpoint` set, the architecture comes from the checkpoint; an
explicit `model.size` or architecture field that disagrees with it is an
error naming the key, while numerics (dtype, dropout, scan, remat) may be
changed freely.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bert_jax.checkpoints import names as names
from bert_jax.checkpoints import pretrained
from bert_jax.data.pack_examples import PACKED_KEYS
from bert_jax.models.bert import SIZES, BertConfig, config_for_size
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


def model_config(config) -> BertConfig:
    """config.model (size + BertConfig field overrides; None = unset) -> BertConfig."""
    overrides = {k: v for k, v in config.model.items() if k != "size" and v is not None}
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
