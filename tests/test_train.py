"""The trainer end to end: sharded meshes, exact resume, multi-host, metrics, bad config.

Runs on the 8 host CPU devices that conftest.py asks XLA for.
"""

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from bert_jax import checkpoint, configs, optim, sharding, tasks, train
from bert_jax.data.pretraining import embedded as embedded_pretraining
from bert_jax.data.pretraining import records as pretraining_records
from bert_jax.tools.predict import Predictor
from tests import multihost, train_data
from tests.cli_env import cli_env
from tests.numerics import assert_close, assert_equal
from tests.train_data import tiny_config

REPO = Path(__file__).resolve().parents[1]
# data x fsdp x tensor: all three axes at once, fsdp 4 (the 30,522-row vocab
# does not split 4 ways), tensor 4. Pure data parallelism is the (-1, 1, 1)
# default most other tests run on.
MESHES = [(2, 2, 2), (2, 4, 1), (1, 2, 4)]
# The learning check (the demo's shapes: length 64, 10 predictions, batch 32):
# held-out MLM accuracy 0.103 and 0.101 against most-frequent-token baselines
# of 0.054 and 0.061 at 400 steps, on two builds of the embedded data (its
# vocabulary differs a little from build to build; measured on the 2-core machine).
LEARN_STEPS = 400


@pytest.fixture(scope="module")
def records(shared_data, tmp_path_factory):
    return train_data.write_records(shared_data, tmp_path_factory.mktemp("records"))


def _flat(params):
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree.leaves_with_path(params)}


def _train_rows(workdir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "train/loss" in r]


def _column(rows: list[dict], key: str) -> list[float]:
    return [r[key] for r in rows]


@pytest.fixture(scope="module")
def single_device_run(records, tmp_path_factory):
    wd = tmp_path_factory.mktemp("single")
    state, _ = train.run(tiny_config(records), str(wd), devices=jax.devices()[:1])
    return _flat(state.params), _train_rows(wd)


def _adam_state(opt_state) -> optax.ScaleByAdamState:
    """The Adam moments, found by type wherever the optimizer chain keeps them."""
    found = [
        s
        for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
        if isinstance(s, optax.ScaleByAdamState)
    ]
    assert len(found) == 1, f"{len(found)} ScaleByAdamState in the optimizer state"
    return found[0]


@pytest.mark.parametrize("mesh_shape", MESHES, ids=[str(m) for m in MESHES])
def test_meshes_match_single_device(records, tmp_path, single_device_run, mesh_shape):
    ref_params, ref_rows = single_device_run
    state, _ = train.run(tiny_config(records, mesh_shape=mesh_shape), str(tmp_path))
    rows = _train_rows(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in ("train/loss", "train/grad_norm", "train/param_norm"):
        assert_close(_column(rows, key), _column(ref_rows, key), rtol=1e-5, err_msg=key)
    got = _flat(state.params)
    for k, v in ref_params.items():
        assert_close(got[k], v, atol=1e-5, err_msg=k)

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
    # Adam's moments follow the parameters' layout, leaf by leaf (ZeRO-3 style:
    # sharded over fsdp where the parameter is).
    adam = _adam_state(state.opt_state)
    for moments in (adam.mu, adam.nu):
        pairs = zip(jax.tree.leaves(moments), jax.tree.leaves(state.params), strict=True)
        for m, p in pairs:
            assert m.sharding.is_equivalent_to(p.sharding, m.ndim), (m.sharding, p.sharding)
            assert m.addressable_shards[0].data.shape == p.addressable_shards[0].data.shape
    mu_q = adam.mu["bert"]["encoder"]["layer_0"]["attention"]["query"]["kernel"]
    assert spec(mu_q) == spec(q)
    if fsdp > 1:
        assert mu_q.addressable_shards[0].data.shape[0] == q.shape[0] // fsdp


def test_metrics_files_and_eval(records, tmp_path):
    c = tiny_config(records, num_train_steps=4, log_every=2, eval_every=2, checkpoint_every=2)
    c.data.eval_files = records["eval_files"]
    state, metrics = train.run(c, str(tmp_path), devices=jax.devices()[:1])
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_rows = _train_rows(tmp_path)
    assert [r["step"] for r in train_rows] == [2, 4]
    train_ex = pretraining_records.read_tfrecords(records["train_files"], 32, 5)
    lengths = train_ex["input_mask"].sum(axis=1).tolist()
    for r in train_rows:
        assert r["wall_time"] > 0 and r["perf/steps_per_second"] > 0
        assert_close(r["train/loss"], r["train/mlm_loss"] + r["train/nsp_loss"], rtol=1e-6)
        # Real (unpadded) tokens only: at least 16 of the shortest rows a step,
        # and fewer than the 16 x 32 slots (most SST-2 pairs are padded).
        per_step = r["perf/tokens_per_second"] / r["perf/steps_per_second"]
        assert 16 * min(lengths) <= per_step < 512, (per_step, min(lengths))
        # A whole number of tokens over the row's two steps.
        assert_close(2 * per_step, round(2 * per_step), rtol=1e-9)
        assert r["train/grad_norm"] > 0 and r["train/param_norm"] > 0
    # The rate of each row's last step: warmup over 2 steps, then linear decay to 0.
    _, schedule = optim.make_optimizer(c.optimizer, 4)
    rates = [float(schedule(1)), float(schedule(3))]
    assert_close(_column(train_rows, "train/learning_rate"), rates, rtol=1e-6)
    evals = [r for r in rows if "eval/mlm_accuracy" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert metrics == {k: v for k, v in evals[-1].items() if k.startswith("eval/")}
    # The held-out accuracies, recomputed in one forward pass over every row.
    held = pretraining_records.read_tfrecords(records["eval_files"], 32, 5)
    out = (
        tasks.get(c)
        .model()
        .apply(
            {"params": state.params},
            held["input_ids"],
            held["segment_ids"],
            held["input_mask"],
            masked_positions=held["masked_lm_positions"],
        )
    )
    w = held["masked_lm_weights"]
    hits = (np.argmax(out["mlm_logits"], -1) == held["masked_lm_ids"]) * w
    assert_close(metrics["eval/mlm_accuracy"], hits.sum() / w.sum(), rtol=1e-6)
    nsp = np.argmax(out["nsp_logits"], -1) == held["next_sentence_labels"].reshape(-1)
    assert_close(metrics["eval/nsp_accuracy"], nsp.mean(), rtol=1e-6)
    assert json.loads((tmp_path / "config.json").read_text())["num_train_steps"] == 4
    assert list(tmp_path.glob("events.out.tfevents.*"))
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [2, 4]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["step"] == 4 and results["metrics"] == metrics


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
        "--config.model.dtype=float32",  # as tiny_config: compared with it exactly
        "--config.data.eval_files=",  # no held-out set (tiny's default builds one)
        *extra,
    ]


def _restore_params(workdir, config):
    """The final checkpoint's params as numpy, planned like the trainer does."""
    task = tasks.get(config)
    model = task.model()
    mesh = sharding.make_mesh(config.mesh_shape)
    tx, _ = optim.make_optimizer(config.optimizer, config.num_train_steps)
    dummy = task.model_inputs(task.dummy_batch())
    abstract, _ = train.plan_state(model, tx, dummy, mesh, train.seed_key(config))
    state, _ = checkpoint.Checkpointer(workdir).restore(abstract)
    assert int(state.step) == config.num_train_steps
    return _flat(state.params)


def test_two_processes_match_one(records, tmp_path):
    """2 processes x 4 CPU devices (gloo collectives) == 1 process x 8 devices."""
    # Two data shards in both runs, so the global batches are the same.
    extra = [
        "--config.num_train_steps=3",
        "--config.mesh_shape=(2,2,2)",
        "--config.log_every=1",
        "--config.data.num_shards=2",
    ]
    wd = tmp_path / "multi"
    multihost.finish(multihost.launch(_main_cmd(wd, records, *extra)))
    c = tiny_config(records, mesh_shape=(2, 2, 2), **{"data.num_shards": 2})
    c.model.num_heads, c.model.intermediate_size = None, None
    ref_state, _ = train.run(c, str(tmp_path / "single"))
    got = _restore_params(wd, c)
    for k, v in _flat(ref_state.params).items():
        assert_close(got[k], v, atol=1e-5, err_msg=k)
    # Only process 0 wrote metrics: one row per step, with the same numbers.
    rows, ref_rows = _train_rows(wd), _train_rows(tmp_path / "single")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in ("train/loss", "train/grad_norm", "train/param_norm"):
        assert_close(_column(rows, key), _column(ref_rows, key), rtol=1e-5, err_msg=key)


def test_init_checkpoint_loads_encoder_and_logs_fresh(records, tmp_path, caplog):
    """A bare-encoder checkpoint initialises `bert`; the heads stay fresh and are logged."""
    from bert_jax.checkpoints import pretrained
    from bert_jax.models.bert import BertModel
    from bert_jax.tasks.model_setup import model_config

    # One step at learning rate 0: the parameters stay exactly as initialised.
    c = tiny_config(
        records, num_train_steps=1, **{"optimizer.learning_rate": 0.0, "optimizer.warmup_steps": 0}
    )
    one = jax.devices()[:1]
    fresh, _ = train.run(c, str(tmp_path / "fresh"), devices=one)
    trained, _ = train.run(tiny_config(records), str(tmp_path / "a"))  # on 8 devices
    encoder = jax.tree.map(np.asarray, trained.params["bert"])
    pretrained.save(tmp_path / "enc", BertModel(model_config(c)), encoder)
    c2 = tiny_config(
        records,
        num_train_steps=1,
        init_checkpoint=str(tmp_path / "enc"),
        **{"optimizer.learning_rate": 0.0, "optimizer.warmup_steps": 0},
    )
    with caplog.at_level("INFO"):
        state, _ = train.run(c2, str(tmp_path / "b"), devices=one)
    got, want_bert, want_fresh = _flat(state.params), _flat(trained.params), _flat(fresh.params)
    for k in got:
        want = want_bert[k] if k.startswith("['bert']") else want_fresh[k]
        assert_equal(got[k], want, err_msg=k)
    assert "mlm/transform/kernel (the checkpoint has no mlm head)" in caplog.text
    assert "nsp/dense/bias (the checkpoint has no nsp head)" in caplog.text

    # A training workdir is a checkpoint too (phase 2 starts from phase 1 so):
    # every parameter comes from its newest checkpoint, written on another mesh.
    c3 = tiny_config(
        records,
        num_train_steps=1,
        init_checkpoint=str(tmp_path / "a"),
        **{"optimizer.learning_rate": 0.0, "optimizer.warmup_steps": 0},
    )
    state3, _ = train.run(c3, str(tmp_path / "c"), devices=one)
    for k, v in _flat(state3.params).items():
        assert_equal(v, want_bert[k], err_msg=k)


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
    other = tiny_config(records, **{"model.intermediate_size": 128})
    with pytest.raises(ValueError, match=r"model\.intermediate_size: 256 -> 128"):
        train.run(other, str(tmp_path / "wd"))
    # Without the stored config, the checkpoint itself refuses the other model.
    (tmp_path / "wd" / "config.json").unlink()
    mismatch = r"(?s)does not fit the model's state.*intermediate/kernel: checkpoint \(128, 256\)"
    with pytest.raises(ValueError, match=mismatch):
        train.run(other, str(tmp_path / "wd"))


def test_bf16_scan_remat_and_accumulation_from_config(records, tmp_path, single_device_run):
    """The memory/precision switches are config keys; they train to nearly the same place."""
    ref_losses = _column(single_device_run[1], "train/loss")
    c = tiny_config(records, mesh_shape=(2, 2, 2))
    c.model.dtype, c.model.scan_layers, c.model.remat_policy = "bfloat16", True, "save_dots"
    c.optimizer.grad_accum_steps = 2
    state, _ = train.run(c, str(tmp_path))
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert_close(losses, ref_losses, atol=0.05)
    layers = state.params["bert"]["encoder"]["layers"]  # stacked by nn.scan
    assert layers["attention"]["query"]["kernel"].shape[0] == 2
    assert layers["attention"]["query"]["kernel"].dtype == np.float32  # fp32 master params


def test_tiny_pretraining_runs_out_of_the_box_and_learns(tmp_path):
    """The README's offline pretraining command (data built from the embedded
    corpus), run for LEARN_STEPS: the held-out MLM accuracy clearly beats always
    predicting the most frequent masked token, and the workdir fills masks."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bert_jax.main",
            "--config=configs/pretrain.py:tiny",
            f"--workdir={tmp_path / 'run'}",
            f"--config.data.embedded_dir={tmp_path / 'data'}",
            f"--config.num_train_steps={LEARN_STEPS}",
            f"--config.eval_every={LEARN_STEPS // 2}",
            f"--config.checkpoint_every={LEARN_STEPS // 2}",
            "--config.max_seq_length=64",
            "--config.max_predictions_per_seq=10",
            "--config.train_batch_size=32",
            "--config.eval_batch_size=32",
            f"--config.optimizer.warmup_steps={LEARN_STEPS // 10}",
            # A tiny model takes a larger, constant rate (Turc et al. 2019 use
            # 1e-4..1e-3 for compact BERTs; 2e-3 stalls at the unigram here).
            "--config.optimizer.learning_rate=1e-3",
            "--config.optimizer.schedule=constant",
        ],
        cwd=REPO,
        env=cli_env(1, compile_cache=False),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    wd = tmp_path / "run"
    rows = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/mlm_accuracy" in r]
    half = LEARN_STEPS // 2
    assert [r["step"] for r in evals] == [half, LEARN_STEPS]
    assert sorted(int(p.name) for p in (wd / "checkpoints").iterdir()) == [half, LEARN_STEPS]
    paths = embedded_pretraining.prepare(str(tmp_path / "data"), 64, 10)
    labels = {}
    for split in ("train", "eval"):
        ex = pretraining_records.read_tfrecords(str(paths[f"{split}_tfrecord"]), 64, 10)
        labels[split] = ex["masked_lm_ids"][ex["masked_lm_weights"] > 0]
    top = np.bincount(labels["train"]).argmax()
    baseline = float(np.mean(labels["eval"] == top))
    accuracy = evals[-1]["eval/mlm_accuracy"]
    print(
        f"tiny pretraining, {LEARN_STEPS} steps: MLM accuracy {accuracy:.3f}, "
        f"most-frequent-token baseline {baseline:.3f}"
    )
    # ~4,700 held-out predictions: a standard error of about 0.004 on either.
    assert 0.02 < baseline < 0.15, baseline
    assert accuracy > baseline + 0.025, (accuracy, baseline)
    # Packed rows (tiny,pack=3: the same data packed 3 examples a row) train too,
    # with more real tokens per step: this data's rows are 93% real tokens
    # unpacked, 97% packed (pack_records prints both).
    packed = configs.load(train_data.PRETRAIN_CONFIG + ":tiny,pack=3")
    packed.data.embedded_dir = str(tmp_path / "data")
    packed.max_seq_length, packed.max_predictions_per_seq = 64, 10
    packed.train_batch_size = packed.eval_batch_size = 32
    packed.num_train_steps, packed.log_every = 10, 10
    packed.eval_every = 0
    _, m = train.run(packed, str(tmp_path / "packed"), devices=jax.devices()[:1])
    assert 0 < m["eval/mlm_accuracy"] < 1 and 0 < m["eval/nsp_accuracy"] < 1
    (p_row,) = _train_rows(tmp_path / "packed")
    u_row = [r for r in rows if "train/loss" in r][0]
    per_step = lambda r: r["perf/tokens_per_second"] / r["perf/steps_per_second"]  # noqa: E731
    assert per_step(p_row) > 1.02 * per_step(u_row), (per_step(p_row), per_step(u_row))
    # The workdir fills masks (the pretraining task's predict): top 5 per [MASK].
    (row,) = Predictor(str(wd))(["The [MASK] argument must be a [MASK]."])
    assert len(row["masks"]) == 2
    for mask in row["masks"]:
        probs = [p["probability"] for p in mask["predictions"]]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
        assert all(p["token"] and p["token"] != "[MASK]" for p in mask["predictions"])


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
    with pytest.raises(
        FloatingPointError, match=r"train/(loss|param_norm) is (nan|inf) at step \d"
    ):
        train.run(c, str(tmp_path / "nan"), devices=jax.devices()[:1])


def test_albert_recipe_pretrains_tiny_on_the_embedded_corpus(tmp_path):
    """configs/pretrain.py recipe=albert (SOP data with n-gram masks, shared
    layers, factorised embeddings, LAMB) trains a few steps tiny on the
    embedded corpus and evaluates (the bert recipe: the test above; roberta
    and mlperf change only the NSP head and the optimizer, both covered by
    the tiny-record tests)."""
    c = configs.load(f"{train_data.PRETRAIN_CONFIG}:recipe=albert,tiny")
    c.data.embedded_dir = str(tmp_path / "data")
    c.max_seq_length, c.max_predictions_per_seq = 64, 10
    c.num_train_steps = c.eval_every = c.checkpoint_every = c.log_every = 4
    state, metrics = train.run(c, str(tmp_path / "run"), devices=jax.devices()[:1])
    assert 0.0 <= metrics["eval/mlm_accuracy"] <= 1.0 and np.isfinite(metrics["eval/mlm_loss"])
    assert 0.0 <= metrics["eval/nsp_accuracy"] <= 1.0  # the NSP head learns SOP
    assert set(state.params["bert"]["encoder"]) == {"shared_layer"}
    emb = state.params["bert"]["embeddings"]
    assert emb["word_embeddings"]["embedding"].shape == (8000, 64)
    assert emb["projection"]["kernel"].shape == (64, 128)
    # The ALBERT data: sentence order swapped for about half the pairs (label 1)
    # and masks in spans of up to 3.
    folder = next((tmp_path / "data").glob("*-sop-n3"))
    import tensorflow as tf

    spec = pretraining_records.parse_spec(64, 10)
    batch = next(iter(tf.data.TFRecordDataset(str(folder / "train.tfrecord")).batch(2000)))
    ex = {k: v.numpy() for k, v in tf.io.parse_example(batch, spec).items()}
    assert 0.3 < ex["next_sentence_labels"].mean() < 0.55
    pos, w = ex["masked_lm_positions"], ex["masked_lm_weights"] > 0
    adjacent = ((pos[:, 1:] == pos[:, :-1] + 1) & w[:, 1:]).sum() / w.sum()
    assert adjacent > 0.25  # BERT's single-token masks at 15% give about 0.15
