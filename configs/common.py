"""Keys every bert_jax training config has, with their defaults.

Task configs start from `base_config()` and set what differs; the trainer
reads nothing that is not declared here or in the task config, and the
config is locked, so a misspelled `--config.key` fails naming the key.
"""

import ml_collections

from bert_jax import optim


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """'a=1,b=x,tiny' -> {a: 1, b: 'x', tiny: True} over `defaults`; unknown keys fail."""
    out = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        if key not in out:
            raise ValueError(f"unknown config argument {key!r}; known: {sorted(out)}")
        if not _:
            out[key] = True
        elif isinstance(out[key], bool):
            out[key] = value.lower() in ("1", "true", "yes")
        else:
            out[key] = type(out[key])(value)
    return ml_collections.ConfigDict(out)


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = ""
    c.seed = 0
    c.num_train_steps = 1000
    c.train_batch_size = 32  # global, over all hosts and devices
    c.eval_batch_size = 32
    c.log_every = 50
    c.eval_every = 1000
    c.checkpoint_every = 1000
    c.keep_checkpoints = 3
    c.best_metric = ""  # e.g. "eval/mlm_accuracy": also keep the best checkpoint
    c.best_mode = "max"
    # Mesh over (data, fsdp, tensor); -1 fills with the remaining devices.
    c.mesh_shape = (-1, 1, 1)
    c.dcn_mesh_shape = (1, 1, 1)  # slices per axis, multi-slice TPU jobs
    c.init_checkpoint = ""  # any format bert_jax.pretrained.load reads
    c.max_seq_length = 128
    # A size from bert_jax.models.bert.SIZES; a field left None comes from it.
    c.model = ml_collections.ConfigDict(
        dict(
            size="base",
            vocab_size=None,
            hidden_size=None,
            num_layers=None,
            num_heads=None,
            intermediate_size=None,
            hidden_act=None,
            max_position_embeddings=None,
            hidden_dropout=None,
            attention_dropout=None,
            dtype="float32",
            param_dtype="float32",
            scan_layers=False,
            remat_policy="none",
        )
    )
    c.optimizer = optim.default_config()
    c.data = ml_collections.ConfigDict()
    return c
