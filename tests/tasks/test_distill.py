"""Distillation (bert_jax/tasks/distill.py): the student from teacher layers, the loss
against a float64 numpy reference, the frozen teacher, tiny runs through the trainer.

Teachers are tiny random models saved as bert_jax checkpoints (4 layers x 128):
an MLM model on the embedded corpus's vocabulary and an SST-2 classifier on
bert-base-uncased's.
"""

import json
import shutil

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from bert_jax import configs, sharding, tasks, train
from bert_jax.checkpoints import pretrained
from bert_jax.data.pretraining import embedded as embedded_pretraining
from bert_jax.models.bert import config_for_size
from bert_jax.models.heads import BertForPreTraining, BertForSequenceClassification
from tests.numerics import assert_close, assert_equal

DISTILL = str(configs.repository_config("distill.py"))
SEQ, PRED = 32, 5


def _save_teacher(path, model, vocab_file):
    ids = np.zeros((1, 8), np.int32)
    kw = {"masked_positions": ids[:, :2]} if isinstance(model, BertForPreTraining) else {}
    params = model.init(jax.random.key(1), ids, ids, ids, **kw)["params"]
    pretrained.save(path, model, sharding.unboxed(params))
    shutil.copy(vocab_file, path / "vocab.txt")
    return path


@pytest.fixture(scope="module")
def embedded_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("embedded")
    embedded_pretraining.prepare(str(root), SEQ, PRED, dupe_factor=1, verbose=False)
    return root


@pytest.fixture(scope="module")
def mlm_teacher(embedded_dir, tmp_path_factory):
    paths = embedded_pretraining.prepare(str(embedded_dir), SEQ, PRED, dupe_factor=1)
    cfg = config_for_size("tiny", num_layers=4, vocab_size=8000)
    path = tmp_path_factory.mktemp("teachers") / "mlm"
    return _save_teacher(path, BertForPreTraining(cfg, nsp=True), paths["vocab_txt"])


@pytest.fixture(scope="module")
def sst2_teacher(shared_data, tmp_path_factory):
    cfg = config_for_size("tiny", num_layers=4)
    path = tmp_path_factory.mktemp("teachers") / "sst2"
    vocab = shared_data / "vocab" / "bert-base-uncased" / "vocab.txt"
    return _save_teacher(path, BertForSequenceClassification(cfg, num_labels=2), vocab)


def general_config(teacher, embedded_dir, **distill):
    c = configs.load(f"{DISTILL}:tiny,teacher={teacher}")
    c.distill.student_layers = (1, 3)
    c.data.embedded_dir, c.data.dupe_factor = str(embedded_dir), 1
    c.max_seq_length, c.max_predictions_per_seq = SEQ, PRED
    for k, v in distill.items():
        c.distill[k] = v
    return c


def glue_config(teacher, shared_data):
    c = configs.load(f"{DISTILL}:task=glue,glue_task=sst2,tiny,teacher={teacher}")
    c.distill.student_layers = (1, 3)
    c.data.data_dir = str(shared_data / "glue")
    c.max_seq_length = SEQ
    return c


def _flat(tree):
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree.leaves_with_path(tree)}


def _same(a, b):
    a, b = _flat(a), _flat(b)
    assert sorted(a) == sorted(b)
    for k in a:
        assert_equal(a[k], b[k], err_msg=k)


def test_student_copies_the_chosen_layers(mlm_teacher, embedded_dir):
    _, t = pretrained.load(mlm_teacher)
    for scan in (False, True):
        c = general_config(mlm_teacher, embedded_dir)
        c.model.scan_layers = scan
        task = tasks.get(c)
        model = task.model()
        assert model.config.num_layers == 2 and model.config.hidden_size == 128
        fresh = model.init(jax.random.key(0), **task.model_inputs(task.dummy_batch()))
        s = task.initial_params(sharding.unboxed(fresh["params"]))
        enc = s["bert"]["encoder"]
        layers = [enc[f"layer_{j}"] for j in range(2)] if not scan else [
            jax.tree.map(lambda x, j=j: x[j], enc["layers"]) for j in range(2)
        ]  # fmt: skip
        for j, i in enumerate((1, 3)):
            _same(layers[j], t["bert"]["encoder"][f"layer_{i}"])
        for part in ("embeddings", "pooler"):
            _same(s["bert"][part], t["bert"][part])
        _same(s["mlm"], t["mlm"])
        assert "nsp" not in s  # DistilBERT drops NSP


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _reference_kl(s, t, temp):
    ls, lt = _log_softmax(s / temp), _log_softmax(t / temp)
    return (np.exp(lt) * (lt - ls)).sum(-1) * temp**2


def _reference_cos(hs, ht, real):
    cos = (hs * ht).sum(-1) / (np.linalg.norm(hs, axis=-1) * np.linalg.norm(ht, axis=-1))
    return ((1 - cos) * real).sum() / real.sum()


def test_loss_parts_equal_a_numpy_reference(mlm_teacher, sst2_teacher, embedded_dir, shared_data):
    rng = np.random.default_rng(0)
    b, p, v, length, h = 3, 4, 50, 6, 8
    w = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], np.float32)
    real = np.array([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4], np.int32)
    hidden_s, hidden_t = rng.normal(size=(2, b, length, h)).astype(np.float32)
    ref_cos = _reference_cos(hidden_s.astype(np.float64), hidden_t.astype(np.float64), real)

    # General: KL at the masked positions, MLM cross-entropy, cosine over real tokens.
    task = tasks.get(general_config(mlm_teacher, embedded_dir, temperature=3.0))
    s, t = (3 * rng.normal(size=(2, b, p, v))).astype(np.float32)
    ids = rng.integers(0, v, size=(b, p))
    batch = dict(masked_lm_weights=w, masked_lm_ids=ids, input_mask=real, input_ids=real,
                 segment_ids=0 * real, masked_lm_positions=0 * ids, teacher_logits=t,
                 teacher_hidden=hidden_t)  # fmt: skip
    total, parts = task.loss({"mlm_logits": s, "sequence_output": hidden_s}, batch)
    s64, t64 = s.astype(np.float64), t.astype(np.float64)
    ref_ce = (_reference_kl(s64, t64, 3.0) * w).sum() / w.sum()
    xent = -np.take_along_axis(_log_softmax(s64), ids[..., None], -1)[..., 0]
    ref_mlm = (xent * w).sum() / w.sum()
    assert_close(float(parts["ce_loss"]), ref_ce, rtol=1e-5)
    assert_close(float(parts["mlm_loss"]), ref_mlm, rtol=1e-5)
    assert_close(float(parts["cos_loss"]), ref_cos, rtol=1e-5)
    assert_close(float(total), 5 * ref_ce + 2 * ref_mlm + 1 * ref_cos, rtol=1e-5)

    # Task-specific: KL over the labels x T^2 + cross-entropy with the gold labels.
    c = glue_config(sst2_teacher, shared_data)
    c.distill.alpha_cos = 0.25
    task = tasks.get(c)
    s, t = (2 * rng.normal(size=(2, b, 2))).astype(np.float32)
    labels = np.array([0, 1, 1], np.int32)
    batch = dict(label=labels, attention_mask=real, input_ids=real, token_type_ids=0 * real,
                 teacher_logits=t, teacher_hidden=hidden_t)  # fmt: skip
    total, parts = task.loss({"logits": s, "sequence_output": hidden_s}, batch)
    s64, t64 = s.astype(np.float64), t.astype(np.float64)
    ref_ce = _reference_kl(s64, t64, 2.0).mean()
    ref_label = -np.take_along_axis(_log_softmax(s64), labels[:, None], -1).mean()
    assert_close(float(parts["ce_loss"]), ref_ce, rtol=1e-5)
    assert_close(float(parts["label_loss"]), ref_label, rtol=1e-5)
    assert_close(float(total), 0.5 * ref_ce + 0.5 * ref_label + 0.25 * ref_cos, rtol=1e-5)


def test_teacher_is_frozen_and_sharded_like_the_student(mlm_teacher, embedded_dir):
    """On a (2, 2, 2) mesh: the teacher's params (`TrainState.frozen`) take the student's
    layouts, get no gradient, are not in the optimizer state, and are the same after a
    step."""
    from bert_jax import optim

    c = general_config(mlm_teacher, embedded_dir)
    c.mesh_shape, c.num_train_steps = (2, 2, 2), 8
    task = tasks.get(c)
    model = task.model()
    mesh = sharding.make_mesh(c.mesh_shape)
    tx, schedule = optim.make_optimizer(c.optimizer, c.num_train_steps)
    rng = jax.random.key(0)
    with sharding.activate(mesh):
        dummy = task.model_inputs(task.dummy_batch())
        _, state_sh = train.plan_state(model, tx, dummy, mesh, rng, task.frozen())
        state = train.create_state(model, tx, dummy, state_sh, rng)
        state = state.replace(
            params=jax.device_put(task.initial_params(state.params), state_sh.params)
        )
        state = train.with_frozen(state, task.frozen(), state_sh)
        frozen = state.frozen
        q = ("bert", "encoder", "layer_0", "attention", "query", "kernel")
        spec = lambda tree: _get(tree, q).sharding.spec  # noqa: E731
        assert spec(frozen) == spec(state.params) == P("fsdp", "tensor", None)
        assert set(frozen) == {"bert", "mlm", "nsp"} and set(state.params) == {"bert", "mlm"}
        before = jax.tree.map(np.asarray, frozen)

        source = task.train_source(0, 1)
        local = next(iter(source))
        batch = train.global_batch(local, sharding.batch_sharding(mesh))

        # No gradient reaches the teacher through its outputs.
        def teacher_grads(params, frozen, batch):
            out = model.apply({"params": params}, **task.model_inputs(batch))
            loss = lambda f: task.loss(out, {**batch, **task.frozen_outputs(f, batch)})[0]  # noqa: E731
            return jax.grad(loss)(frozen)

        grads = jax.jit(teacher_grads)(state.params, frozen, batch)
        assert all(float(np.abs(g).max()) == 0 for g in jax.tree.leaves(grads))

        step = train.jit_train_step(
            model, task, tx, schedule, 1, state_sh, sharding.batch_sharding(mesh)
        )
        new, metrics = step(state, batch)
    assert {"ce_loss", "mlm_loss", "cos_loss"} <= set(metrics)
    _same(new.frozen, before)
    # The optimizer state mirrors the student's params only: the teacher has none.
    shapes = {p.shape for p in jax.tree.leaves(new.params)}
    param_count = len(jax.tree.leaves(new.params))
    moments = [x for x in jax.tree.leaves(new.opt_state) if x.ndim > 0]
    assert len(moments) == 2 * param_count and {m.shape for m in moments} == shapes
    assert "nsp" not in str(jax.tree_util.tree_structure(new.opt_state))


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _losses(workdir):
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "train/loss" in r]


def test_general_distillation_through_the_trainer(mlm_teacher, embedded_dir, tmp_path):
    # The frozen-teacher test's step (same mesh and optimizer): compiled once per session.
    c = general_config(mlm_teacher, embedded_dir)
    c.mesh_shape = (2, 2, 2)
    c.num_train_steps, c.log_every, c.eval_every = 8, 1, 0
    c.data.eval_files = ""  # no eval compile
    train.run(c, str(tmp_path))
    rows = _losses(tmp_path)
    assert len(rows) == 8 and {"train/ce_loss", "train/mlm_loss", "train/cos_loss"} <= set(rows[0])
    loss = [r["train/loss"] for r in rows]
    assert np.mean(loss[-2:]) < np.mean(loss[:2]), loss
    # Its checkpoints hold the student's state only: the teacher is read from its own.
    import orbax.checkpoint as ocp

    stored = ocp.StandardCheckpointer().metadata(tmp_path / "checkpoints" / "8" / "state")
    assert set(stored.item_metadata.tree) == {"step", "params", "opt_state", "rng"}
    # A rerun restores the student from there and the teacher from its own checkpoint.
    state, _ = train.run(c, str(tmp_path))
    assert int(state.step) == 8 and set(state.frozen) == {"bert", "mlm", "nsp"}
    # The workdir is a 2-layer student on the teacher's vocabulary.
    model, _ = pretrained.load(tmp_path)
    assert isinstance(model, BertForPreTraining) and model.config.num_layers == 2
    assert (tmp_path / "vocab.txt").read_text() == (mlm_teacher / "vocab.txt").read_text()


def test_task_specific_distillation_through_the_trainer(sst2_teacher, shared_data, tmp_path):
    c = glue_config(sst2_teacher, shared_data)
    c.num_train_steps, c.log_every = 8, 1
    c.data.max_train_examples = 16  # one batch, every step: the loss must go down
    c.optimizer.learning_rate, c.optimizer.schedule = 1e-3, "constant"
    _, metrics = train.run(c, str(tmp_path), devices=jax.devices()[:1])
    rows = _losses(tmp_path)
    assert {"train/ce_loss", "train/label_loss"} <= set(rows[0])
    loss = [r["train/loss"] for r in rows]
    assert np.mean(loss[-2:]) < np.mean(loss[:2]), loss
    assert 0 <= metrics["eval/accuracy"] <= 1


def test_bad_config_names_the_key(mlm_teacher, embedded_dir, sst2_teacher, shared_data):
    c = general_config(mlm_teacher, embedded_dir)
    c.distill.student_layers = (0, 4)
    with pytest.raises(ValueError, match=r"distill.student_layers=\[0, 4\]: \[4\] out of range"):
        tasks.get(c)
    c = general_config(mlm_teacher, embedded_dir)
    c.distill.teacher_checkpoint = str(embedded_dir / "missing")
    with pytest.raises(ValueError, match="config key distill.teacher_checkpoint"):
        tasks.get(c)
    c = glue_config(sst2_teacher, shared_data)
    c.distill.alpha_mlm = 1.0
    with pytest.raises(ValueError, match="distill.alpha_mlm=1.0 does not apply"):
        tasks.get(c)
    c = general_config(mlm_teacher, embedded_dir)
    c.model.hidden_size = 64
    with pytest.raises(ValueError, match="model.hidden_size=64"):
        tasks.get(c).model()
