"""What checkpoint checksums cost: save and restore with and without them.

    python experiments/checksum_cost.py [--repeats=3]

Two train states on one CPU device, no training: the tiny test model's
(`configs/pretrain.py:tiny`, its real TrainState) and a BERT-base-sized one
(110M float32 parameters, 440 MB, plus AdamW's two moments: 1.32 GB), random
values. Each is saved by `bert_jax.checkpoint.Checkpointer` (asynchronous, as
the trainer saves; timed from `save` to the end of `wait`, so the background
write is counted) and restored by `restore_latest`, once with the checksums
written and verified and once with both turned off (the functions of
`bert_jax.checkpoints.checksums` replaced by no-ops); the median of `repeats`
rounds; and `checksums.write` and `checksums.problem` alone on the saved step.
The files are in the page cache when they are hashed or restored (just
written), as on a resume soon after a save.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from bert_jax import checkpoint, configs, optim, sharding, tasks, train  # noqa: E402
from bert_jax.checkpoints import checksums  # noqa: E402


def tiny_state():
    c = configs.load(str(Path(__file__).resolve().parents[1] / "configs/pretrain.py") + ":tiny")
    task = tasks.get(c)
    mesh = sharding.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    tx, _ = optim.make_optimizer(c.optimizer, c.num_train_steps)
    dummy = task.model_inputs(task.dummy_batch())
    abstract, shardings = train.plan_state(task.model(), tx, dummy, mesh, train.seed_key(c))
    state = train.create_state(task.model(), tx, dummy, shardings, train.seed_key(c))
    return trained_moments(state), abstract


def trained_moments(state):
    """Adam's moments random, as after training: zeros would compress to nothing on disk
    (orbax compresses its OCDBT data files) and the files would be a third of the state."""
    key = jax.random.key(1)
    return state.replace(
        opt_state=jax.tree.map(
            lambda x: x + 1e-3 * jax.random.normal(key, x.shape, x.dtype) if x.ndim else x,
            state.opt_state,
        )
    )


def base_sized_state():
    """BERT-base's parameter shapes (embeddings, 12 layers, pooler), random, with AdamW."""
    rng = np.random.default_rng(0)
    shapes = {"word_embeddings": (30522, 768), "position": (512, 768), "pooler": (768, 768)}
    for i in range(12):
        shapes |= {
            f"layer_{i}/qkv": (768, 3 * 768),
            f"layer_{i}/out": (768, 768),
            f"layer_{i}/mlp_in": (768, 3072),
            f"layer_{i}/mlp_out": (3072, 768),
        }
    params = {k: rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()}
    device = NamedSharding(jax.sharding.Mesh(np.array(jax.devices()[:1]), ("d",)), PartitionSpec())
    params = jax.device_put(params, device)
    tx = optax.adamw(1e-4)
    state = train.TrainState(
        jax.numpy.int32(1), params, jax.jit(tx.init)(params), jax.random.key(0)
    )
    state = trained_moments(state)
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), state
    )
    return state, abstract


def nbytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree) if hasattr(x, "dtype"))


def hashing(state, repeats: int) -> tuple[float, float]:
    """Median seconds of `checksums.write` and `checksums.problem` alone on a saved step."""
    writes, checks = [], []
    with tempfile.TemporaryDirectory() as wd:
        with checkpoint.Checkpointer(wd, every=1) as ckpt:
            ckpt.save(1, state, {})
        step_dir = Path(wd) / "checkpoints" / "1"
        for _ in range(repeats):
            t = time.perf_counter()
            checksums.write(step_dir)
            writes.append(time.perf_counter() - t)
            t = time.perf_counter()
            assert checksums.problem(step_dir) is None
            checks.append(time.perf_counter() - t)
        files = json.loads((step_dir / checksums.MANIFEST).read_text())["files"]
        print(f"  {len(files)} files, {sum(f['size'] for f in files.values()) / 1e6:.1f} MB hashed")
    return statistics.median(writes), statistics.median(checks)


def measure(state, abstract, verify: bool, repeats: int) -> tuple[float, float]:
    saves, restores = [], []
    real = checksums.write, checksums.problem
    if not verify:
        checksums.write, checksums.problem = (lambda d: None), (lambda d: None)
    try:
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as wd:
                with checkpoint.Checkpointer(wd, every=1) as ckpt:
                    t = time.perf_counter()
                    ckpt.save(1, state, {})
                    ckpt.wait()
                    saves.append(time.perf_counter() - t)
                ckpt = checkpoint.Checkpointer(wd)
                t = time.perf_counter()
                ckpt.restore_latest(abstract)
                restores.append(time.perf_counter() - t)
                ckpt.close()
    finally:
        checksums.write, checksums.problem = real
    return statistics.median(saves), statistics.median(restores)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for name, (state, abstract) in (("tiny", tiny_state()), ("base-sized", base_sized_state())):
        size = nbytes(state)
        off = measure(state, abstract, False, args.repeats)
        on = measure(state, abstract, True, args.repeats)
        alone = hashing(state, args.repeats)
        print(
            f"{name}: {size / 1e6:.1f} MB; save {off[0]:.2f} s -> {on[0]:.2f} s with checksums; "
            f"restore {off[1]:.2f} s -> {on[1]:.2f} s; the checksums alone: written in "
            f"{alone[0]:.2f} s, verified in {alone[1]:.2f} s"
        )


if __name__ == "__main__":
    main()
