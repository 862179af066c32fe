"""What the training loop adds to the step: input pipeline, dispatch, metrics, and
asynchronous checkpoints (a save started every step, so one is always in flight).

    python experiments/trainer_overhead.py [--model=small] [--steps=24] \\
        [--record=docs/results/trainer.jsonl]

Runs `train.run` on the embedded corpus's pretraining records (built once),
pretraining `configs/pretrain.py` at length 128, batch 32, twice: with a
checkpoint at the end only, and with `checkpoint_every=1` (orbax writes in a
background thread while the next steps run; the loop waits only for the
previous save when it starts the next). Steps per second come from the
trainer's own metrics.jsonl (perf/steps_per_second, the rows after the first,
which holds the compile), next to the step alone on one batch of the same
records (`bert_jax.perf.bench`'s timing of `train.jit_train_step`). Each run
appends one record.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from bert_jax import configs, train  # noqa: E402
from bert_jax.data.pretraining import embedded as embedded_pretraining  # noqa: E402
from bert_jax.perf import bench, bench_inputs, records


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="small")
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--record", default="docs/results/trainer.jsonl")
    a = p.parse_args()
    paths = embedded_pretraining.prepare("~/.cache/bert_jax", 128, 20, verbose=False)
    alone = None
    for every, name in ((10**6, "final checkpoint only"), (1, "a save every step")):
        c = configs.load(f"{configs.repository_config('pretrain.py')}:model={a.model}")
        c.data.train_files, c.data.eval_files = str(paths["train_tfrecord"]), ""
        c.model.vocab_size = embedded_pretraining.vocab_size(paths)
        c.train_batch_size = c.eval_batch_size = 32
        c.num_train_steps, c.log_every, c.eval_every = a.steps, 4, 0
        c.checkpoint_every, c.keep_checkpoints = every, 2
        c.optimizer.warmup_steps = 2
        if alone is None:
            batch = bench_inputs.records_batch(str(paths["train_tfrecord"]), 32, 128, 20)
            step = bench.jax_step(c, "train", batch)[0]
            step(), step()  # compile is done; warm up
            alone = statistics.median(step() for _ in range(6))
        with tempfile.TemporaryDirectory() as wd:
            train.run(c, wd, devices=jax.devices()[:1])
            rows = [json.loads(x) for x in (Path(wd) / "metrics.jsonl").read_text().splitlines()]
        rates = [r["perf/steps_per_second"] for r in rows if "perf/steps_per_second" in r][1:]
        row = {
            "label": name,
            "model": a.model,
            "checkpoint_every": every,
            "steps_per_second": statistics.median(rates),
            "step_alone_s": alone,
            "device": jax.devices()[0].device_kind,
            "command": "python experiments/trainer_overhead.py " + " ".join(sys.argv[1:]),
        }
        print(json.dumps(row))
        records.append(a.record, row)


if __name__ == "__main__":
    main()
