"""Pretraining loader throughput vs what a bert-base train step consumes, on this machine.

    python experiments/bench_loader.py [--batch=8] [--steps=3]

Writes dynamic-masking records (length 128) from the embedded stdlib corpus
with a vocabulary built from it, then measures
(1) sequences/s the `PretrainingLoader` yields, masking included, and
(2) sequences/s of a jitted bert-base (12L/768H) training step (forward,
backward, AdamW) at the same length and batch. Prints both and their ratio.
"""

import argparse
import tempfile
import time
from pathlib import Path

import jax
import optax


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()

    from bert_jax.data.pretraining import build_vocab, corpus, embedded_corpus
    from bert_jax.data.pretraining import create_pretraining_data as cpd
    from bert_jax.data.pretraining import loader as pretraining_loader
    from bert_jax.data.pretraining.instances import RecipeConfig
    from bert_jax.data.pretraining.masking_vocab import MaskingVocab
    from bert_jax.models.bert import config_for_size
    from bert_jax.models.heads import BertForPreTraining
    from bert_jax.tokenizers.wordpiece import BertTokenizer

    d = Path(tempfile.mkdtemp())
    docs = list(embedded_corpus.embedded_documents())
    corpus.write_text_corpus(docs, str(d / "corpus.txt"))
    build_vocab.write_vocab(
        build_vocab.build_vocab((s for doc in docs for s in doc), vocab_size=30522),
        str(d / "vocab.txt"),
    )
    counts = cpd.run(
        [str(d / "corpus.txt")],
        [str(d / "seq.tfrecord")],
        str(d / "vocab.txt"),
        RecipeConfig(max_seq_length=128, max_predictions_per_seq=20),
        dynamic=True,
    )
    print(f"{counts['examples']} dynamic-masking sequences of length 128")

    tok = BertTokenizer(str(d / "vocab.txt"))
    loader = pretraining_loader.PretrainingLoader(
        str(d / "seq.tfrecord"),
        max_seq_length=128,
        max_predictions=20,
        global_batch_size=args.batch,
        masking_vocab=MaskingVocab.from_vocab(tok.vocab),
    )
    it = iter(loader)
    next(it)
    t = time.perf_counter()
    n = sum(len(next(it)["input_ids"]) for _ in range(200))
    loader_rate = n / (time.perf_counter() - t)

    model = BertForPreTraining(config_for_size("base"))
    batch = next(it)
    inputs = dict(
        input_ids=batch["input_ids"],
        token_type_ids=batch["segment_ids"],
        attention_mask=batch["input_mask"],
        masked_positions=batch["masked_lm_positions"],
    )
    import flax.linen as nn

    params = nn.meta.unbox(model.init(jax.random.key(0), **inputs)["params"])
    tx = optax.adamw(1e-4)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, rng):
        def loss_fn(p):
            out = model.apply({"params": p}, **inputs, deterministic=False, rngs={"dropout": rng})
            return optax.softmax_cross_entropy_with_integer_labels(
                out["mlm_logits"], batch["masked_lm_ids"]
            ).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    params, opt, loss = step(params, opt, jax.random.key(1))
    loss.block_until_ready()
    t = time.perf_counter()
    for i in range(args.steps):
        params, opt, loss = step(params, opt, jax.random.key(i))
    loss.block_until_ready()
    step_rate = args.steps * args.batch / (time.perf_counter() - t)
    print(
        f"loader: {loader_rate:,.0f} sequences/s; bert-base train step: {step_rate:.2f} "
        f"sequences/s (batch {args.batch}, length 128); ratio {loader_rate / step_rate:,.0f}x "
        f"on {jax.devices()[0].device_kind}"
    )


if __name__ == "__main__":
    main()
