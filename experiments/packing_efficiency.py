"""Packing efficiency (real tokens / row tokens) before and after packing, on real text.

    python experiments/packing_efficiency.py [--shared=../shared/data] \\
        [--record=docs/results/packing.jsonl] [--work=/tmp/bert_jax_packing] \\
        [--corpora=embedded,wikipedia]

Corpora: the embedded corpus (the standard library's docstrings, with its own
8,000-piece vocabulary) and Wikipedia articles: the 48 articles of the SQuAD
v1.1 dev set, their paragraphs in order as documents (real Wikipedia text),
with the bert-base-uncased vocabulary. Examples are made with the original
recipe (`create_pretraining_data`, dupe factor 1) at lengths 128 and 512,
then packed with `bert_jax.data.pretraining.pack_records` (up to 3 examples a row at 128,
6 at 512). Each setting appends one record to `--record`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bert_jax.data.pretraining import corpus, pack_records  # noqa: E402
from bert_jax.data.pretraining import create_pretraining_data as cpd  # noqa: E402
from bert_jax.data.pretraining import embedded as embedded_pretraining
from bert_jax.data.pretraining.instances import RecipeConfig  # noqa: E402
from bert_jax.perf import records  # noqa: E402

SETTINGS = ((128, 20, 3), (512, 80, 6))  # length, predictions, examples per row


def wikipedia_corpus(shared: Path, out: Path) -> Path:
    data = json.loads((shared / "squad" / "v1.1" / "dev-v1.1.json").read_text(encoding="utf-8"))
    docs = [
        [s for p in article["paragraphs"] for s in corpus.split_sentences(p["context"])]
        for article in data["data"]
    ]
    corpus.write_text_corpus(docs, str(out))
    return out


def measure(name: str, stem: str, text: Path, vocab: Path, work: Path, record: str) -> None:
    """Examples and packed rows of `text` as work/<stem>-<seq>[-packed<k>].tfrecord."""
    for seq, pred, k in SETTINGS:
        examples = work / f"{stem}-{seq}.tfrecord"
        cpd.run(
            [str(text)],
            [str(examples)],
            str(vocab),
            RecipeConfig(max_seq_length=seq, max_predictions_per_seq=pred, dupe_factor=1),
            num_workers=1,
        )
        packed = work / f"{stem}-{seq}-packed{k}.tfrecord"
        stats = pack_records.run([str(examples)], [str(packed)], seq, pred, k)
        before, after = stats.efficiency(seq)
        row = {
            "corpus": name,
            "seq": seq,
            "examples_per_row": k,
            "examples": stats.examples,
            "rows": stats.rows,
            "efficiency_before": before,
            "efficiency_after": after,
            "dropped_predictions": stats.dropped_predictions,
            "command": "python experiments/packing_efficiency.py",
        }
        print(json.dumps(row))
        records.append(record, row)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared/data"))
    p.add_argument("--record", default="docs/results/packing.jsonl")
    p.add_argument("--work", default="/tmp/bert_jax_packing")
    p.add_argument("--corpora", default="embedded,wikipedia", help="Which of the two to run.")
    a = p.parse_args()
    corpora = a.corpora.split(",")
    if unknown := set(corpora) - {"embedded", "wikipedia"}:
        p.error(f"--corpora: unknown {sorted(unknown)}; known: embedded, wikipedia")
    work, shared = Path(a.work), Path(a.shared)
    work.mkdir(parents=True, exist_ok=True)
    if "embedded" in corpora:
        emb = embedded_pretraining.prepare(str(work / "embedded"), 128, 20, verbose=False)
        measure("embedded corpus", "embedded", emb["train_txt"], emb["vocab_txt"], work, a.record)
    if "wikipedia" in corpora:
        wiki = wikipedia_corpus(shared, work / "wikipedia.txt")
        vocab = shared / "vocab" / "bert-base-uncased" / "vocab.txt"
        measure("Wikipedia (SQuAD v1.1 dev articles)", "wikipedia", wiki, vocab, work, a.record)


if __name__ == "__main__":
    main()
