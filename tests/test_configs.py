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


def test_model_fields_are_bert_configs_fields():
    """BertConfig is built on configs/model.py's BertFields (which configs read
    without JAX): one field table, and every field reaches a config's model block."""
    import dataclasses

    from bert_jax.configs import common, model
    from bert_jax.models import bert

    assert issubclass(bert.BertConfig, model.BertFields)
    names = [f.name for f in dataclasses.fields(bert.BertConfig)]
    assert names == [f.name for f in dataclasses.fields(model.BertFields)]
    assert set(common.MODEL_FIELDS) | set(model.NUMERICS) == set(names)
    assert set(common.base_config().model) == {"size", *common.MODEL_FIELDS, *model.NUMERICS}
    assert common.MODEL_FIELDS["embedding_size"] is int  # `int | None`, settable as int


def test_overrides_parse_as_the_command_line_and_name_bad_keys():
    from bert_jax import configs
    from bert_jax.configs import overrides

    c = configs.load(configs.repository_config("pretrain.py") + ":tiny")
    out = overrides.apply(
        c,
        {
            "optimizer.learning_rate": "3e-5",  # text: parsed by the field's type
            "model.hidden_dropout": 0.0,  # a typed placeholder, set from a value
            "mesh_shape": [2, 1, 1],  # a list is written as the tuple it means
            "model.scan_layers": "True",
        },
    )
    assert out.optimizer.learning_rate == 3e-5 and out.model.hidden_dropout == 0.0
    assert out.mesh_shape == (2, 1, 1) and out.model.scan_layers is True
    assert c.optimizer.learning_rate != 3e-5 and c.model.hidden_dropout is None  # a copy
    with pytest.raises(ValueError, match=r"^here: unknown config key 'optimizer.lerning_rate'; "):
        overrides.apply(c, {"optimizer.lerning_rate": 1}, "here")
    with pytest.raises(ValueError, match=r"config key 'seed' = 'one': invalid literal"):
        overrides.apply(c, {"seed": "one"})
    with pytest.raises(ValueError, match=r"config key 'model.hidden_dropout' = 'x'"):
        overrides.apply(c, {"model.hidden_dropout": "x"})


def test_pretraining_computes_in_bf16_with_fp32_params_and_optimizer_state():
    """The TPU researcher's default, the same on every platform."""
    import jax
    import jax.numpy as jnp

    from bert_jax import optim, tasks
    from configs import pretrain

    for arg in (None, "tiny", "recipe=albert"):
        c = pretrain.get_config(arg)
        assert (c.model.dtype, c.model.param_dtype) == ("bfloat16", "float32"), arg
    c = pretrain.get_config("tiny")
    task = tasks.get(c)
    model = task.model()
    assert model.config.dtype == "bfloat16" and model.config.param_dtype == "float32"
    inputs = task.model_inputs(task.dummy_batch())
    tx, _ = optim.make_optimizer(c.optimizer, 10)

    def init():
        params = model.init(jax.random.key(0), **inputs)["params"]
        return params, tx.init(params)

    params, opt_state = jax.eval_shape(init)
    floats = [
        x for x in jax.tree.leaves((params, opt_state)) if jnp.issubdtype(x.dtype, jnp.floating)
    ]
    assert floats and {x.dtype for x in floats} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize(
    "platform, dtype, dropout, hidden, length, want",
    [
        ("tpu", "bfloat16", 0.0, 128, 128, "splash"),
        ("tpu", "float32", 0.0, 128, 512, "splash"),
        ("tpu", "bfloat16", 0.1, 128, 128, "xla"),  # the kernel has no attention dropout
        ("tpu", "bfloat16", 0.0, 128, 96, "xla"),  # not a multiple of 128
        ("gpu", "bfloat16", 0.1, 128, 100, "cudnn"),
        ("cuda", "float16", 0.0, 128, 128, "cudnn"),
        ("gpu", "float32", 0.0, 128, 128, "xla"),  # cuDNN's kernel is bf16/fp16
        ("gpu", "bfloat16", 0.0, 30, 128, "xla"),  # head size 15, not a multiple of 8
        ("cpu", "bfloat16", 0.0, 128, 128, "xla"),
    ],
)
def test_auto_attention_impl_per_platform(platform, dtype, dropout, hidden, length, want, caplog):
    import logging

    from configs import pretrain

    c = pretrain.get_config("tiny")  # 2 heads
    c.model.dtype, c.model.attention_dropout = dtype, dropout
    c.model.hidden_size, c.model.intermediate_size = hidden, 4 * hidden
    c.max_seq_length = length
    with caplog.at_level(logging.INFO):
        cfg = model_config(c, platform=platform)
    assert cfg.attention_impl == want
    assert f"attention_impl auto -> '{want}'" in caplog.text and platform in caplog.text
    # An explicit choice is kept; the math of every choice is tested in tests/models.
    c.model.attention_impl = "xla"
    assert model_config(c, platform=platform).attention_impl == "xla"


def test_auto_attention_impl_rules_beyond_the_config():
    from bert_jax.models.bert import config_for_size
    from bert_jax.tasks.model_setup import resolve_attention_impl, with_attention_impl
    from configs import pretrain

    cfg = config_for_size("tiny", attention_dropout=0.0)
    assert resolve_attention_impl(cfg, "tpu", 128) == "splash"
    assert resolve_attention_impl(cfg, "tpu", 128, return_attention=True) == "xla"
    # Batches cut to multiples of data.length_bucket: splash only if those are 128s.
    c = pretrain.get_config("tiny")
    c.model.attention_dropout = 0.0
    assert with_attention_impl(cfg, c, "tpu").attention_impl == "splash"
    c.data.length_bucket = 32
    assert with_attention_impl(cfg, c, "tpu").attention_impl == "xla"
    c.data.length_bucket = 256
    c.max_seq_length = 512
    assert with_attention_impl(cfg, c, "tpu").attention_impl == "splash"


def test_a_workdir_with_a_removed_model_key_resumes(tmp_path, caplog):
    """config.json written before model.dropout_mask_bits went away: not a config
    change (the key is dropped with a warning); any other difference still is."""
    import json
    import logging

    from etils import epath

    from bert_jax import workdir_config
    from configs import pretrain

    c = pretrain.get_config("tiny")
    stored = workdir_config.as_json(c)
    stored["model"]["dropout_mask_bits"] = 16
    wd = epath.Path(tmp_path)
    (wd / "config.json").write_text(json.dumps(stored))
    (wd / "results.json").write_text("{}")
    with caplog.at_level(logging.WARNING):
        assert workdir_config.check_resume(wd, c, latest_step=3) == {}
    assert "model.dropout_mask_bits" in caplog.text
    stored["model"]["hidden_dropout"] = 0.3
    (wd / "config.json").write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="model.hidden_dropout"):
        workdir_config.check_resume(wd, c, latest_step=3)


def test_config_checks_name_the_key_before_anything_is_built():
    """bert_jax.config_checks is where a config is checked: values alone first,
    then what the mesh and the model must divide or hold."""
    import jax

    from bert_jax import config_checks, configs, sharding
    from bert_jax.models.bert import config_for_size

    c = configs.load(configs.repository_config("pretrain.py") + ":tiny")
    config_checks.check(c)  # the repository's config passes
    bad = c.copy_and_resolve_references()
    with bad.unlocked():
        bad.num_train_steps, bad.num_train_epochs = None, None
    with pytest.raises(ValueError, match="num_train_steps and num_train_epochs: set one"):
        config_checks.check(bad)
    with bad.unlocked():
        bad.num_train_steps, bad.init_checkpoint = 10, "/nonexistent/ckpt"
    with pytest.raises(ValueError, match="config key init_checkpoint"):
        config_checks.check(bad)

    mesh = sharding.make_mesh((len(jax.devices()), 1, 1), None)
    model = config_for_size("tiny")
    config_checks.check_fits(c, mesh, model)
    for key, value, match in [
        ("train_batch_size", len(jax.devices()) + 1, "train_batch_size=.* data-parallel size"),
        ("max_seq_length", 1024, "max_seq_length=1024 exceeds .* max_position_embeddings=512"),
    ]:
        wrong = c.copy_and_resolve_references()
        with wrong.unlocked():
            wrong[key] = value
        with pytest.raises(ValueError, match=match):
            config_checks.check_fits(wrong, mesh, model)
