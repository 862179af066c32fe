"""Checkpointer and PreemptionGuard on CPU: a tiny train state, real orbax, tmp dirs."""

import logging
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from etils import epath
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bert_jax import checkpoint
from bert_jax.checkpoints import checksums
from tests.numerics import assert_equal


class TrainState(struct.PyTreeNode):
    step: jax.Array
    params: dict
    opt_state: optax.OptState
    rng: jax.Array


def make_state(step=0, hidden=4, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = {
        "encoder": {
            "kernel": jax.random.normal(k1, (hidden, 3)),
            "bias": jax.random.normal(k2, (3,)),
        },
        "scale": jnp.ones((3,), jnp.bfloat16),
    }
    tx = optax.adamw(1e-3)
    opt_state = tx.init(params)
    # One real update so mu/nu/count are not all zeros.
    grads = jax.tree.map(jnp.ones_like, params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return TrainState(
        step=jnp.int32(step), params=params, opt_state=opt_state, rng=jax.random.key(seed + 1)
    )


def sharded_target(state):
    """The abstract state a trainer plans: shapes, dtypes and a NamedSharding per leaf."""
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    sharding = NamedSharding(mesh, P())
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
        jax.eval_shape(lambda: state),
    )


def as_numpy(tree):
    """Leaves as numpy, typed PRNG keys as their key data, so trees compare bitwise."""

    def leaf(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.array(x)  # a copy: a zero-copy view would block donation on CPU

    return jax.tree.map(leaf, tree)


def assert_trees_equal(a, b):
    a, b = as_numpy(a), as_numpy(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype
        assert_equal(x, y)


def test_no_checkpoint(tmp_path):
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        assert ckpt.latest_step() is None
        with pytest.raises(FileNotFoundError):
            ckpt.restore(sharded_target(make_state()))


def test_async_save_restore_latest_into_target_shardings(tmp_path):
    target = sharded_target(make_state())
    with checkpoint.Checkpointer(tmp_path, every=1, keep=5) as ckpt:
        for step in (1, 2, 3):
            assert ckpt.save(step, make_state(step, seed=step), {"epoch": 0, "position": 10 * step})
        ckpt.wait()
        assert list(ckpt.all_steps()) == [1, 2, 3]
    assert (tmp_path / "checkpoints" / "3").is_dir()

    # A new process resumes from the newest checkpoint.
    with checkpoint.Checkpointer(tmp_path, every=1, keep=5) as ckpt:
        assert ckpt.latest_step() == 3
        state, data_state = ckpt.restore(target)
        assert data_state == {"epoch": 0, "position": 30}
        assert_trees_equal(state, make_state(3, seed=3))
        assert isinstance(state, TrainState)
        assert jax.dtypes.issubdtype(state.rng.dtype, jax.dtypes.prng_key)
        for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(target), strict=True):
            assert isinstance(got, jax.Array)
            assert got.sharding == want.sharding
        # An older step on request.
        state, data_state = ckpt.restore(target, step=1)
        assert data_state["position"] == 10
        assert_trees_equal(state, make_state(1, seed=1))


@pytest.mark.skipif(jax.device_count() < 2, reason="needs host devices (XLA_FLAGS)")
def test_restore_resharded_over_all_devices(tmp_path):
    n = jax.device_count()
    state = make_state(1, hidden=2 * n)
    with checkpoint.Checkpointer(tmp_path, every=1) as ckpt:
        ckpt.save(1, state, {})
        ckpt.wait()
        mesh = Mesh(np.array(jax.devices()), ("data",))
        rows = NamedSharding(mesh, P("data"))
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(
                x.shape, x.dtype, sharding=rows if x.ndim == 2 else NamedSharding(mesh, P())
            ),
            jax.eval_shape(lambda: state),
        )
        restored, _ = ckpt.restore(target)
    assert restored.params["encoder"]["kernel"].sharding == rows
    assert len(restored.params["encoder"]["kernel"].addressable_shards) == n
    assert_trees_equal(restored, state)


def test_data_state_list_of_per_host_dicts(tmp_path):
    data_state = [{"epoch": 1, "position": 5}, {"epoch": 1, "position": 7}]
    with checkpoint.Checkpointer(tmp_path, every=1) as ckpt:
        ckpt.save(1, make_state(1), data_state)
        ckpt.wait()
        assert ckpt.restore(sharded_target(make_state()))[1] == data_state


def test_state_donated_after_save_is_still_checkpointed(tmp_path):
    state = make_state(1)
    expected = as_numpy(state)
    with checkpoint.Checkpointer(tmp_path, every=1) as ckpt:
        ckpt.save(1, state, {})
        # The next train step donates the buffers while the write is in flight. (Whether
        # XLA reuses them varies on CPU, where orbax may still hold a view; either way the
        # checkpoint must hold the values of step 1.)
        bump = jax.jit(lambda s: jax.tree.map(lambda x: x + 1, s.params), donate_argnums=0)
        bump(state)
        ckpt.wait()
        restored, _ = ckpt.restore(sharded_target(make_state()))
    assert_trees_equal(restored, expected)


def test_save_interval_force_and_repeat(tmp_path):
    with checkpoint.Checkpointer(tmp_path, every=10) as ckpt:
        assert not ckpt.should_save(5)
        assert not ckpt.save(5, make_state(5), {})
        assert ckpt.should_save(10)
        assert ckpt.save(10, make_state(10), {})
        assert ckpt.save(13, make_state(13), {}, force=True)  # end of training / SIGTERM
        # Resumed at the final step: saving it again is a no-op, not an error.
        assert not ckpt.save(13, make_state(13), {}, force=True)
        ckpt.wait()
        assert list(ckpt.all_steps()) == [10, 13]


def test_keep_last_k(tmp_path):
    with checkpoint.Checkpointer(tmp_path, every=1, keep=2) as ckpt:
        for step in range(1, 6):
            ckpt.save(step, make_state(step), {"position": step})
        ckpt.wait()
        assert list(ckpt.all_steps()) == [4, 5]
    on_disk = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert on_disk == [4, 5]


@pytest.mark.parametrize(
    "mode,values,best", [("max", [0.1, 0.9, 0.2, 0.3], 2), ("min", [0.5, 0.1, 0.4, 0.3], 2)]
)
def test_best_metric_kept_beside_last_k(tmp_path, mode, values, best):
    name = "eval/mlm_accuracy"
    kwargs = dict(every=1, keep=2, best_metric=name, best_mode=mode)
    with checkpoint.Checkpointer(tmp_path, **kwargs) as ckpt:
        for step, value in enumerate(values, start=1):
            ckpt.save(step, make_state(step), {}, metrics={name: value, "train/loss": 1.0})
        # Steps without eval metrics rotate out like any other.
        ckpt.save(5, make_state(5), {}, metrics={"train/loss": 1.0})
        ckpt.save(6, make_state(6), {})
        ckpt.wait()
        assert list(ckpt.all_steps()) == [best, 5, 6]
        assert ckpt.best_step() == best
    # After a restart the stored metrics still protect the best step.
    with checkpoint.Checkpointer(tmp_path, **kwargs) as ckpt:
        ckpt.save(7, make_state(7), {}, metrics={name: values[best - 1] * 0.5 + 0.25})
        ckpt.save(8, make_state(8), {})
        ckpt.wait()
        assert list(ckpt.all_steps())[0] == best
        assert list(ckpt.all_steps())[-2:] == [7, 8]
        restored, _ = ckpt.restore(sharded_target(make_state()), step=best)
        assert_trees_equal(restored, make_state(best))


def test_incomplete_checkpoint_is_ignored(tmp_path):
    with checkpoint.Checkpointer(tmp_path, every=1) as ckpt:
        ckpt.save(3, make_state(3), {"position": 3})
    # A save killed half way: orbax's temporary name, partial contents.
    partial = tmp_path / "checkpoints" / "7.orbax-checkpoint-tmp-1700000000000000"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "junk").write_text("half written")
    with checkpoint.Checkpointer(tmp_path, every=1) as ckpt:
        assert ckpt.latest_step() == 3
        state, data_state = ckpt.restore(sharded_target(make_state()))
        assert data_state == {"position": 3}
        assert_trees_equal(state, make_state(3))
        # Saving goes on from there; the stale temporary directory is cleaned up.
        assert ckpt.save(7, make_state(7), {})
        ckpt.wait()
        assert list(ckpt.all_steps()) == [3, 7]
    assert not partial.exists()


@pytest.mark.parametrize("async_save", [True, False])
def test_bytes_changed_in_place_are_caught_by_checksums(tmp_path, caplog, async_save):
    with checkpoint.Checkpointer(tmp_path, every=1, async_save=async_save) as ckpt:
        for step in (1, 2):
            ckpt.save(step, make_state(step), {"position": step})
    step_dir = tmp_path / "checkpoints" / "2"
    assert checksums.problem(step_dir) is None  # the manifest matches the committed files
    # The largest array data file (orbax's OCDBT `ocdbt.process_*/d/`): a change there
    # is read back silently; one in the metadata files fails to parse anyway.
    data = max(
        (p for p in (step_dir / "state").rglob("ocdbt.process_*/d/*") if p.is_file()),
        key=lambda p: p.stat().st_size,
    )
    size = data.stat().st_size
    with open(data, "r+b") as f:  # one byte, size unchanged
        f.seek(size // 2)
        byte = f.read(1)
        f.seek(size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    ckpt = checkpoint.Checkpointer(tmp_path)
    with caplog.at_level(logging.WARNING):
        step, state, data_state = ckpt.restore_latest(sharded_target(make_state()))
    assert (step, data_state) == (1, {"position": 1})
    assert_trees_equal(state, make_state(1))
    name = data.relative_to(step_dir)
    assert f"checkpoint {step_dir} is unusable: {name} does not match its checksum" in caplog.text
    assert (tmp_path / "bad_checkpoints" / "2").is_dir() and not step_dir.exists()


def test_checkpoint_without_checksums_restores_with_a_note(tmp_path, caplog):
    """A checkpoint written before checksums existed: restored, not verified, said so."""
    with checkpoint.Checkpointer(tmp_path, every=1) as ckpt:
        ckpt.save(1, make_state(1), {})
    step_dir = tmp_path / "checkpoints" / "1"
    (step_dir / checksums.MANIFEST).unlink()
    with caplog.at_level(logging.INFO):
        step, state, _ = checkpoint.Checkpointer(tmp_path).restore_latest(
            sharded_target(make_state())
        )
    assert step == 1
    assert_trees_equal(state, make_state(1))
    assert f"checkpoint {step_dir} has no checksums (an older save): not verified" in caplog.text


def test_shape_mismatch_names_path_and_shapes(tmp_path):
    with checkpoint.Checkpointer(tmp_path, every=1) as ckpt:
        ckpt.save(1, make_state(1, hidden=4), {})
        ckpt.wait()
        with pytest.raises(ValueError) as err:
            ckpt.restore(sharded_target(make_state(hidden=8)))
    message = str(err.value)
    assert "params/encoder/kernel: checkpoint (4, 3) vs target (8, 3)" in message
    assert "opt_state/0/mu/encoder/kernel" in message
    assert "params/encoder/bias" not in message


def test_missing_param_is_named(tmp_path):
    with checkpoint.Checkpointer(tmp_path, every=1) as ckpt:
        ckpt.save(1, make_state(1), {})
        ckpt.wait()
        state = make_state()
        bigger = state.replace(params={**state.params, "pooler": jnp.zeros((3, 3))})
        with pytest.raises(
            ValueError, match=r"params/pooler: checkpoint missing vs target \(3, 3\)"
        ):
            ckpt.restore(sharded_target(bigger))


def test_preemption_guard_sets_flag_and_restores_handler():
    before = signal.getsignal(signal.SIGTERM)
    with checkpoint.PreemptionGuard() as guard:
        assert not guard.should_stop()
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.should_stop()  # still alive: the handler only set the flag
        assert guard.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_preemption_guard_optional_sigint():
    before = signal.getsignal(signal.SIGINT)
    with checkpoint.PreemptionGuard(signals=(signal.SIGTERM, signal.SIGINT)) as guard:
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt
        assert guard.should_stop()
    assert signal.getsignal(signal.SIGINT) is before


def test_relative_workdir_is_made_absolute(tmp_path, monkeypatch):
    """`--workdir=runs/x` is what people type; orbax itself wants absolute paths."""
    monkeypatch.chdir(tmp_path)
    ckpt = checkpoint.Checkpointer("runs/x", every=1, async_save=False)
    state = {"w": np.arange(3.0, dtype=np.float32)}
    assert ckpt.save(1, state, {"epoch": 0, "position": 1}, force=True)
    ckpt.wait()
    assert ckpt.directory == epath.Path(tmp_path / "runs" / "x" / "checkpoints")
    assert ckpt.latest_step() == 1
    ckpt.close()
