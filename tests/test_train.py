"""The trainer end to end: sharded meshes, exact resume, multi-host, metrics, bad config.

Runs on the 8 host CPU devices that conftest.py asks XLA for.
"""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from bert_jax import checkpoint, train
from configs import pretrain
from tests import train_data

REPO = Path(__file__).resolve().parents[1]
# data x fsdp x tensor: all three axes at once, fsdp 4 (the 30,522-row vocab
# does not split 4 ways), tensor 4. Pure data parallelism is the (-1, 1, 1)
# default most other tests run on.
MESHES = [(2, 2, 2), (2, 4, 1), (1, 2, 4)]


@pytest.fixture(scope="module")
def records(shared_data, tmp_path_factory):
    return train_data.write_records(shared_data, tmp_path_factory.mktemp("records"))


def tiny_config(records, **overrides):
    c = pretrain.get_config("tiny")
    c.data.train_files = records["train_files"]
    c.model.vocab_size = 30522  # the records' ids are bert-base-uncased ones
    # No held-out set (and no eval compile) unless a test asks for one.
    c.data.eval_files = ""
    c.max_seq_length, c.max_predictions_per_seq = 32, 5
    # 4 heads and a 256-wide MLP so every mesh below can split them.
    c.model.num_heads = 4
    c.model.intermediate_size = 256
    c.train_batch_size = c.eval_batch_size = 16
    c.num_train_steps = 3
    c.log_every = 1
    c.eval_every = 0
    c.checkpoint_every = 1000
    c.mesh_shape = (-1, 1, 1)
    for key, value in overrides.items():
        node, *rest = key.split(".")
        if rest:
            c[node][rest[0]] = value
        else:
            c[key] = value
    return c


def _flat(params):
    flat = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree.leaves_with_path(params)}
    # numpy's comparisons take NaN for equal to NaN: a diverged run must not pass.
    assert all(np.isfinite(v).all() for v in flat.values())
    return flat


@pytest.fixture(scope="module")
def single_device_run(records, tmp_path_factory):
    wd = tmp_path_factory.mktemp("single")
    state, _ = train.run(tiny_config(records), str(wd), devices=jax.devices()[:1])
    rows = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
    return _flat(state.params), [r["train/loss"] for r in rows if "train/loss" in r]


@pytest.mark.parametrize("mesh_shape", MESHES, ids=[str(m) for m in MESHES])
def test_meshes_match_single_device(records, tmp_path, single_device_run, mesh_shape):
    ref_params, ref_losses = single_device_run
    state, _ = train.run(tiny_config(records, mesh_shape=mesh_shape), str(tmp_path))
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    np.testing.assert_allclose(losses, ref_losses, atol=1e-5)
    got = _flat(state.params)
    for k, v in ref_params.items():
        np.testing.assert_allclose(got[k], v, atol=1e-5, err_msg=k)

    # The parameters and optimizer moments are laid out as the rules table says.
    def spec(x):
        return x.sharding.spec

    q = state.params["bert"]["encoder"]["layer_0"]["attention"]["query"]["kernel"]
    emb = state.params["bert"]["embeddings"]["word_embeddings"]["embedding"]
    data, fsdp, tensor = mesh_shape
    assert spec(q) == P("fsdp", "tensor", None)  # (embed, heads, kv) per the rules table
    if fsdp > 1:
        assert q.addressable_shards[0].data.shape[0] == q.shape[0] // fsdp
        # 30,522 rows do not split 4 ways: vocab stays whole, embed is split.
        assert emb.addressable_shards[0].data.shape[1] == emb.shape[1] // fsdp
    if tensor > 1:
        assert q.addressable_shards[0].data.shape[1] == q.shape[1] // tensor
    mu = state.opt_state[1][0].mu if hasattr(state.opt_state[1][0], "mu") else None
    if mu is not None:
        assert spec(mu["bert"]["encoder"]["layer_0"]["attention"]["query"]["kernel"]) == spec(q)


def test_metrics_files_and_eval(records, tmp_path):
    c = tiny_config(records, num_train_steps=4, log_every=2, eval_every=2, checkpoint_every=2)
    c.data.eval_files = records["eval_files"]
    _, metrics = train.run(c, str(tmp_path))
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train_rows] == [2, 4]
    for key in (
        "train/loss",
        "train/mlm_loss",
        "train/nsp_loss",
        "train/learning_rate",
        "train/grad_norm",
        "train/param_norm",
        "perf/steps_per_second",
        "perf/tokens_per_second",
        "wall_time",
        "step",
    ):
        assert key in train_rows[0], key
    evals = [r for r in rows if "eval/mlm_accuracy" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert {"eval/mlm_loss", "eval/nsp_accuracy"} <= set(evals[-1])
    assert 0.0 <= metrics["eval/mlm_accuracy"] <= 1.0
    assert json.loads((tmp_path / "config.json").read_text())["num_train_steps"] == 4
    assert list(tmp_path.glob("events.out.tfevents.*"))
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [2, 4]
    assert json.loads((tmp_path / "results.json").read_text())["step"] == 4


def _main_cmd(workdir, records, *extra):
    return [
        sys.executable,
        "-m",
        "bert_jax.main",
        "--config=configs/pretrain.py:tiny",
        f"--workdir={workdir}",
        f"--config.data.train_files={records['train_files']}",
        "--config.max_seq_length=32",
        "--config.max_predictions_per_seq=5",
        "--config.train_batch_size=16",
        "--config.eval_batch_size=16",
        "--config.eval_every=0",
        "--config.model.vocab_size=30522",
        "--config.data.eval_files=",  # no held-out set (tiny's default builds one)
        *extra,
    ]


def _env(devices=8):
    env = dict(os.environ)
    # The other XLA flags stay: the CLI runs must compile as this process does.
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    return env


def test_sigterm_then_resume_is_bitwise_identical(records, tmp_path):
    steps = 16
    extra = [
        f"--config.num_train_steps={steps}",
        "--config.checkpoint_every=8",
        "--config.log_every=2",
        "--config.mesh_shape=(2,2,2)",
    ]
    wd = tmp_path / "interrupted"
    proc = subprocess.Popen(
        _main_cmd(wd, records, *extra),
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("step 2/"):
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, "".join(lines) + rest
    stopped = checkpoint.Checkpointer(wd).latest_step()
    assert stopped is not None and 2 <= stopped < steps, stopped
    subprocess.run(
        _main_cmd(wd, records, *extra), cwd=REPO, env=_env(), check=True, capture_output=True
    )

    c = tiny_config(
        records, num_train_steps=steps, checkpoint_every=8, mesh_shape=(2, 2, 2), log_every=2
    )
    c.model.num_heads, c.model.intermediate_size = None, None  # as the CLI runs: tiny defaults
    ref_state, _ = train.run(c, str(tmp_path / "straight"))
    resumed = _restore_params(wd, c)
    for k, v in _flat(ref_state.params).items():
        np.testing.assert_array_equal(resumed[k], v, err_msg=k)
    losses = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in losses) == steps


def _restore_params(workdir, config):
    """The final checkpoint's params as numpy, planned like the trainer does."""
    from bert_jax import optim, sharding, tasks

    task = tasks.get(config)
    model = task.model()
    mesh = sharding.make_mesh(config.mesh_shape)
    tx, _ = optim.make_optimizer(config.optimizer, config.num_train_steps)
    dummy = task.model_inputs(task.dummy_batch())
    abstract, _ = train.plan_state(model, tx, dummy, mesh, jax.random.key(config.seed))
    state, _ = checkpoint.Checkpointer(workdir).restore(abstract)
    assert int(state.step) == config.num_train_steps
    return _flat(state.params)


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(records, tmp_path):
    """2 processes x 4 CPU devices (gloo collectives) == 1 process x 8 devices."""
    # Two data shards in both runs, so the global batches are the same.
    extra = [
        "--config.num_train_steps=3",
        "--config.mesh_shape=(2,2,2)",
        "--config.log_every=1",
        "--config.data.num_shards=2",
    ]
    port = _free_port()
    wd = tmp_path / "multi"
    env = _env(devices=4) | {"JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"}
    procs = [
        subprocess.Popen(
            _main_cmd(wd, records, *extra)
            + [
                "--jax_distributed",
                f"--coordinator_address=localhost:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out
    c = tiny_config(records, mesh_shape=(2, 2, 2), **{"data.num_shards": 2})
    c.model.num_heads, c.model.intermediate_size = None, None
    ref_state, _ = train.run(c, str(tmp_path / "single"))
    got = _restore_params(wd, c)
    for k, v in _flat(ref_state.params).items():
        np.testing.assert_allclose(got[k], v, atol=1e-5, err_msg=k)
    # Only process 0 wrote metrics: one row per step.
    rows = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3]


def test_init_checkpoint_loads_encoder_and_logs_fresh(records, tmp_path, caplog):
    """A bare-encoder checkpoint initialises `bert`; the heads stay fresh and are logged."""
    from bert_jax import pretrained
    from bert_jax.models.bert import BertModel
    from bert_jax.tasks.model_setup import model_config

    # One step at learning rate 0: the parameters stay exactly as initialised.
    c = tiny_config(
        records, num_train_steps=1, **{"optimizer.learning_rate": 0.0, "optimizer.warmup_steps": 0}
    )
    fresh, _ = train.run(c, str(tmp_path / "fresh"))
    trained, _ = train.run(tiny_config(records), str(tmp_path / "a"))
    encoder = jax.tree.map(np.asarray, trained.params["bert"])
    pretrained.save(tmp_path / "enc", BertModel(model_config(c)), encoder)
    c2 = tiny_config(
        records,
        num_train_steps=1,
        init_checkpoint=str(tmp_path / "enc"),
        **{"optimizer.learning_rate": 0.0, "optimizer.warmup_steps": 0},
    )
    with caplog.at_level("INFO"):
        state, _ = train.run(c2, str(tmp_path / "b"))
    got, want_bert, want_fresh = _flat(state.params), _flat(trained.params), _flat(fresh.params)
    for k in got:
        want = want_bert[k] if k.startswith("['bert']") else want_fresh[k]
        np.testing.assert_array_equal(got[k], want, err_msg=k)
    assert "not loaded (fresh init)" in caplog.text and "mlm/transform/kernel" in caplog.text

    # A training workdir is a checkpoint too (phase 2 starts from phase 1 so):
    # every parameter comes from its newest checkpoint, written on another mesh.
    c3 = tiny_config(
        records,
        num_train_steps=1,
        init_checkpoint=str(tmp_path / "a"),
        **{"optimizer.learning_rate": 0.0, "optimizer.warmup_steps": 0},
    )
    state3, _ = train.run(c3, str(tmp_path / "c"), devices=jax.devices()[:1])
    for k, v in _flat(state3.params).items():
        np.testing.assert_array_equal(v, want_bert[k], err_msg=k)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"mesh_shape": (3, 1, 1)}, "needs 3 devices but 8"),
        ({"mesh_shape": (8, 1, 1), "train_batch_size": 12}, "train_batch_size=12 is not divisible"),
        ({"max_seq_length": 600}, "max_seq_length=600 exceeds"),
        ({"mesh_shape": (1, 1, 8)}, "model.num_heads=4 is not divisible by the tensor"),
        ({"optimizer.grad_accum_steps": 3}, "grad_accum_steps=3"),
    ],
)
def test_bad_config_fails_before_compute(records, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        train.run(tiny_config(records, **overrides), str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_unwritable_workdir_and_other_model_checkpoint(records, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="not writable"):
        train.run(tiny_config(records), str(blocker / "sub"))
    train.run(tiny_config(records), str(tmp_path / "wd"))
    mismatch = r"(?s)does not fit the model's state.*intermediate/kernel: checkpoint \(128, 256\)"
    with pytest.raises(ValueError, match=mismatch):
        train.run(tiny_config(records, **{"model.intermediate_size": 128}), str(tmp_path / "wd"))


def test_cli_misspelled_key_is_named(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bert_jax.main",
            "--config=configs/pretrain.py:tiny",
            f"--workdir={tmp_path}",
            "--config.optimizer.learnin_rate=1e-3",
        ],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "learnin_rate" in out.stderr


def test_bf16_scan_remat_and_accumulation_from_config(records, tmp_path, single_device_run):
    """The memory/precision switches are config keys; they train to nearly the same place."""
    _, ref_losses = single_device_run
    c = tiny_config(records, mesh_shape=(2, 2, 2))
    c.model.dtype, c.model.scan_layers, c.model.remat_policy = "bfloat16", True, "save_dots"
    c.optimizer.grad_accum_steps = 2
    state, _ = train.run(c, str(tmp_path))
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    np.testing.assert_allclose(losses, ref_losses, atol=0.05)
    layers = state.params["bert"]["encoder"]["layers"]  # stacked by nn.scan
    assert layers["attention"]["query"]["kernel"].shape[0] == 2
    assert layers["attention"]["query"]["kernel"].dtype == np.float32  # fp32 master params


def test_tiny_pretraining_runs_out_of_the_box(tmp_path):
    """The issue's command, offline: data is built from the embedded corpus."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bert_jax.main",
            "--config=configs/pretrain.py:tiny",
            f"--workdir={tmp_path / 'run'}",
            f"--config.data.embedded_dir={tmp_path / 'data'}",
        ],
        cwd=REPO,
        env=_env(devices=1),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval/mlm_accuracy" in r] == [10, 20]
    assert sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir()) == [10, 20]


def test_data_from_another_vocabulary_and_diverging_loss(records, tmp_path):
    # bert-base-uncased ids in the records, an 8,000-piece model: XLA would
    # gather NaN embeddings for the ids past the table.
    c = tiny_config(records, **{"model.vocab_size": 8000})
    with pytest.raises(ValueError, match=r"input_ids up to \d+ but model.vocab_size is 8000"):
        train.run(c, str(tmp_path / "vocab"), devices=jax.devices()[:1])
    assert not list((tmp_path / "vocab" / "checkpoints").glob("*"))
    c = tiny_config(
        records, num_train_steps=4, checkpoint_every=1, **{"optimizer.learning_rate": 1e30}
    )
    with pytest.raises(FloatingPointError, match=r"train/loss is (nan|inf) at step \d"):
        train.run(c, str(tmp_path / "nan"), devices=jax.devices()[:1])
