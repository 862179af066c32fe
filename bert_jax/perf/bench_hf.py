"""The reference `bert_jax.perf.bench --compare=hf-torch` times: HF transformers in PyTorch.

The same architecture (a `transformers.BertConfig` from the bert_jax one),
the same batch (masked positions become MLM labels, -100 elsewhere, as HF
takes them), the same optimizer settings (AdamW, BERT's betas and eps,
weight decay, global-norm clipping) and the same thread count. Train mode:
forward, backward, clip, AdamW step; infer mode: forward under
`torch.inference_mode()`. bfloat16 runs under `torch.autocast`, as bert_jax
computes in bf16 with fp32 parameters. HF's default attention (PyTorch SDPA)
and eager mode: what users of HF get.

`Worker` runs that step in a process of its own, started fresh (spawn),
by default with glibc's default malloc, as HF users run it
(`--hf_malloc=bert_jax` gives it bert_jax's tunables instead,
`bert_jax.cpu_env`). In bert_jax's process HF got the huge-page malloc
that process starts with, which slows HF's step (on the family-26 CPU, 5.28 s
against 4.59 s in a run with the default malloc), so the targets needed two
runs; with the worker one run gives each framework its own malloc. The
benchmark still alternates rounds between the two in one run; the worker
times each step itself and sends back the seconds.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from bert_jax import cpu_env


def _hf_config(config, num_labels: int):
    import transformers

    from bert_jax.checkpoints import pretrained

    return transformers.BertConfig(**pretrained.hf_config(config, "BertForPreTraining", num_labels))


def _inputs(task: str, batch: Mapping[str, np.ndarray]) -> dict:
    import torch

    t = lambda a: torch.from_numpy(np.asarray(a, np.int64))  # noqa: E731
    if task == "pretraining":
        labels = np.full(batch["input_ids"].shape, -100, np.int64)
        np.put_along_axis(labels, batch["masked_lm_positions"], batch["masked_lm_ids"], -1)
        return {
            "input_ids": t(batch["input_ids"]),
            "token_type_ids": t(batch["segment_ids"]),
            "attention_mask": t(batch["input_mask"]),
            "labels": t(labels),
            "next_sentence_label": t(batch["next_sentence_labels"]),
        }
    return {
        "input_ids": t(batch["input_ids"]),
        "token_type_ids": t(batch["token_type_ids"]),
        "attention_mask": t(batch["attention_mask"]),
        "labels": t(batch["label"]),
    }


def make_step(
    task: str, mode: str, config, optimizer, batch: Mapping[str, np.ndarray], dtype: str, threads
) -> Callable[[], float]:
    """A function that runs one HF step and returns its seconds."""
    import torch
    import transformers

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    hf_config = _hf_config(config, num_labels=2)
    cls = (
        transformers.BertForPreTraining
        if task == "pretraining"
        else transformers.BertForSequenceClassification
    )
    model = cls(hf_config)
    inputs = _inputs(task, batch)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    if mode == "infer":
        model.eval()
        inputs.pop("labels"), inputs.pop("next_sentence_label", None)

        def infer() -> float:
            t = time.perf_counter()
            with torch.inference_mode(), autocast:
                model(**inputs)
            return time.perf_counter() - t

        return infer
    model.train()
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=optimizer.learning_rate,
        betas=(optimizer.b1, optimizer.b2),
        eps=optimizer.eps,
        weight_decay=optimizer.weight_decay,
    )

    def train() -> float:
        t = time.perf_counter()
        with autocast:
            loss = model(**inputs).loss
        loss.backward()
        if optimizer.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), optimizer.grad_clip_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    return train


def versions() -> dict[str, str]:
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


def _serve(conn, args: tuple) -> None:
    """The worker's loop: build the step, then run one per "step" message."""
    try:
        step = make_step(*args)
        conn.send(("ready", versions() | {"glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")}))
    except Exception:  # reported to the parent, which raises it
        conn.send(("error", traceback.format_exc()))
        return
    while conn.recv() == "step":
        conn.send(step())


@contextlib.contextmanager
def _malloc(malloc: str) -> Iterator[None]:
    """os.environ as the child should start: glibc's "default" malloc, or "bert_jax"'s."""
    before = os.environ.get("GLIBC_TUNABLES")
    if malloc not in ("default", "bert_jax"):
        raise ValueError(f"malloc must be 'default' or 'bert_jax', not {malloc!r}")
    child = before
    if malloc == "default":
        child = cpu_env.without_malloc_tunables(os.environ).get("GLIBC_TUNABLES")
    _set_tunables(child)
    try:
        yield
    finally:
        _set_tunables(before)


def _set_tunables(value: str | None) -> None:
    if value is None:
        os.environ.pop("GLIBC_TUNABLES", None)
    else:
        os.environ["GLIBC_TUNABLES"] = value


class Worker:
    """make_step's step in a spawned process: call it to run one step (its seconds)."""

    def __init__(self, *args, malloc: str = "default") -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        with _malloc(malloc):
            self._process = ctx.Process(target=_serve, args=(child, args), daemon=True)
            self._process.start()
        child.close()
        status, payload = self._conn.recv()
        if status == "error":
            self.close()
            raise RuntimeError(f"the HF worker could not build its step:\n{payload}")
        self.info = payload  # versions and the worker's GLIBC_TUNABLES

    def __call__(self) -> float:
        self._conn.send("step")
        return self._conn.recv()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send("stop")
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()
