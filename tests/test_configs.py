"""Every config in configs/ builds, with its laptop-sized variant, and has the common keys."""

import importlib
from pathlib import Path

import pytest

from bert_jax.tasks.model_setup import model_config

CONFIGS = sorted(
    p.stem
    for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.py")
    if "def get_config" in p.read_text()
)
COMMON_KEYS = ("task", "seed", "num_train_steps", "train_batch_size", "eval_batch_size",
               "log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "mesh_shape",
               "model", "optimizer", "init_checkpoint", "max_seq_length")  # fmt: skip
OPTIMIZER_KEYS = ("name", "learning_rate", "warmup_steps", "warmup_proportion",
                  "weight_decay", "schedule")  # fmt: skip


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("arg", [None, "tiny"])
def test_config_builds(name, arg):
    config = importlib.import_module(f"configs.{name}").get_config(arg)
    for key in COMMON_KEYS:
        assert key in config, f"configs/{name}.py lacks {key}"
    for key in OPTIMIZER_KEYS:
        assert key in config.optimizer, f"configs/{name}.py lacks optimizer.{key}"
    if config.model.size or config.init_checkpoint:
        model_config(config)  # the model settings make a valid BertConfig
    else:  # fine-tuning takes its architecture from init_checkpoint, which is unset
        with pytest.raises(ValueError, match="init_checkpoint"):
            model_config(config)
    if arg == "tiny":
        assert config.model.size in ("tiny", "mini")
        assert config.train_batch_size <= 32 and config.num_train_steps <= 1000


def test_unknown_config_argument_is_named():
    from configs import pretrain

    with pytest.raises(ValueError, match="unknown config argument 'modle'"):
        pretrain.get_config("modle=base")


@pytest.mark.parametrize(
    "arg, expect",
    [
        ("model=large,phase=2", dict(max_seq_length=512, max_predictions_per_seq=80, nsp=True)),
        ("recipe=roberta", dict(max_seq_length=512, nsp=False, train_batch_size=8192)),
        ("recipe=mlperf", dict(max_seq_length=512, max_predictions_per_seq=76)),
        ("recipe=mlperf,tiny", dict(max_seq_length=128, train_batch_size=16)),
    ],
)
def test_pretrain_recipes(arg, expect):
    from configs import pretrain

    c = pretrain.get_config(arg)
    for key, value in expect.items():
        assert c[key] == value, (arg, key)
    if "mlperf" in arg and "tiny" not in arg:
        assert c.model.size == "large" and c.optimizer.name == "lamb"
