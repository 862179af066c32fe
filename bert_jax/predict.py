"""Run a fine-tuned model on new text: JSON lines out.

    python -m bert_jax.predict --workdir=runs/sst2 --text="a gorgeous, witty film"
    python -m bert_jax.predict --workdir=runs/mnli --input=pairs.tsv      # text_a<TAB>text_b
    python -m bert_jax.predict --workdir=runs/ner --text="Angela Merkel visited Paris."
    python -m bert_jax.predict --workdir=runs/squad --input=qa.jsonl      # {"question", "context"}

The workdir's `task.json`, `vocab.txt` and newest checkpoint define the model
and tokenizer. Output per input: classification {"label", "probabilities"},
regression {"score"}, NER {"entities": [{"type", "text", "start", "end"}]}
(character offsets into the text), QA {"answer", "probability", "start",
"end"} (character offsets into the context). A SQuAD v2.0 run may answer ""
(start = end = -1) and adds "null_odds": the answer is "" where they exceed
the null threshold tuned on dev (results.json's
eval/null_score_diff_threshold), or, without it, the config's.
"""

import json
import sys
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A fine-tuning run's workdir.")
flags.DEFINE_multi_string("text", [], "Input text (repeatable). Pairs: 'a<TAB>b'; QA: JSON.")
flags.DEFINE_string("input", None, "A file with one input per line (as --text).")
flags.DEFINE_integer("batch_size", 32, "Inputs per forward pass.")
flags.DEFINE_string(
    "glue_submission",
    None,
    "GLUE runs: predict the test split(s) and write "
    "the leaderboard files (e.g. SST-2.tsv; MNLI-m/-mm and AX for MNLI) here.",
)
flags.mark_flag_as_required("workdir")


def _inputs() -> list[str]:
    lines = list(FLAGS.text)
    if FLAGS.input:
        with open(FLAGS.input, encoding="utf-8") as f:
            lines += [line.rstrip("\n") for line in f if line.strip()]
    if not lines:
        raise app.UsageError("give --text or --input")
    return lines


class Predictor:
    """A fine-tuned workdir as a function from inputs to JSON-able results."""

    def __init__(self, workdir: str):
        from bert_jax import pretrained
        from bert_jax.data.tokenizer import BertTokenizer

        wd = Path(workdir)
        self.config = json.loads((wd / "config.json").read_text())
        self.info = json.loads((wd / "task.json").read_text())
        self.model, self.params = pretrained.load(wd)
        self.tok = BertTokenizer(str(wd / "vocab.txt"), self.info.get("do_lower_case", True))
        self.labels = self.info.get("labels")
        self.seq_len = self.config["max_seq_length"]
        self.null_threshold = _null_threshold(wd, self.config)
        self.apply = jax.jit(lambda p, b: self.model.apply({"params": p}, **b))

    def __call__(self, inputs: list[str]) -> list[dict]:
        kind = self.config["task"]
        if kind in ("glue", "classify"):
            return self._classify(inputs)
        if kind == "ner":
            return [self._ner(t) for t in inputs]
        if kind == "squad":
            return self._qa([json.loads(t) for t in inputs])
        raise ValueError(f"prediction is not defined for task {kind!r}")

    def _classify(self, inputs):
        pairs = [t.split("\t", 1) for t in inputs]
        texts_b = [p[1] for p in pairs] if all(len(p) == 2 for p in pairs) else None
        enc = self.tok.encode_batch([p[0] for p in pairs], texts_b, max_length=self.seq_len)
        logits = np.asarray(self.apply(self.params, _model_batch(enc))["logits"])
        if self.labels is None:
            return [{"text": t, "score": float(v[0])} for t, v in zip(inputs, logits, strict=True)]
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        return [
            {
                "text": t,
                "label": self.labels[int(np.argmax(p))],
                "probabilities": {lab: float(x) for lab, x in zip(self.labels, p, strict=True)},
            }
            for t, p in zip(inputs, probs, strict=True)
        ]

    def _ner(self, text):
        from bert_jax.data import conll

        words, spans = conll.split_words(text)
        arrays, meta = conll.make_features([words], self.tok, self.labels, self.seq_len)
        logits = self.apply(self.params, _model_batch(arrays))["logits"]
        tags = conll.predictions_to_tags(np.asarray(np.argmax(logits, -1)), meta)[0]
        return {"text": text, "entities": conll.entities_with_offsets(text, spans, tags)}

    def _qa(self, items):
        from bert_jax.data import squad

        examples = [
            squad.Example(str(i), it["question"], it["context"], [], False)
            for i, it in enumerate(items)
        ]
        c = self.config
        feats = squad.make_features(
            examples,
            self.tok,
            max_seq_length=self.seq_len,
            doc_stride=c["doc_stride"],
            max_query_length=c["max_query_length"],
        )
        out = self.apply(self.params, _model_batch(feats.arrays))
        version_2 = self.null_threshold is not None
        answers, null_odds, nbest = squad.postprocess(
            examples,
            feats,
            np.asarray(out["start_logits"]),
            np.asarray(out["end_logits"]),
            n_best_size=c["n_best_size"],
            max_answer_length=c["max_answer_length"],
            version_2=version_2,
            null_score_diff_threshold=self.null_threshold if version_2 else 0.0,
        )
        results = []
        for ex, it in zip(examples, items, strict=True):
            # The n-best entry of the answer ("" is the null answer's entry).
            best = next(b for b in nbest[ex.qas_id] if b["text"] == answers[ex.qas_id])
            row = {
                "question": it["question"],
                "answer": best["text"],
                "probability": float(best["probability"]),
                "start": best["start"],
                "end": best["end"],
            }
            if version_2:
                row["null_odds"] = null_odds[ex.qas_id]
            results.append(row)
        return results


def glue_submission(predictor: "Predictor", out_dir: str, batch_size: int = 64) -> list[str]:
    """Predict a GLUE run's test split(s) and write the submission files.

    MNLI writes MNLI-m.tsv and MNLI-mm.tsv and, with the same model, AX.tsv
    (the diagnostic set, scored by GLUE with MCC) when `diagnostic/` exists.
    """
    from bert_jax.data import glue
    from bert_jax.metrics import glue as glue_metrics

    c = predictor.config
    if c["task"] != "glue":
        raise ValueError(f"--glue_submission needs a GLUE run, this one is {c['task']!r}")
    data_dir = c["data"]["data_dir"] or None
    jobs = [(c["glue_task"], s) for s in glue.get_task(c["glue_task"]).submissions]
    if c["glue_task"] == "mnli" and data_dir and Path(data_dir, "diagnostic").is_dir():
        jobs.append(("ax", "test"))
    written = []
    for task, split in jobs:
        examples = glue.load_split(task, split, data_dir)
        lines = [e.text_a + ("\t" + e.text_b if e.text_b else "") for e in examples]
        rows = [
            r
            for i in range(0, len(lines), batch_size)
            for r in predictor(lines[i : i + batch_size])
        ]
        preds = [r["score"] if "score" in r else r["label"] for r in rows]
        indices = [e.index if e.index is not None else i for i, e in enumerate(examples)]
        written.append(
            str(glue_metrics.write_submission(task, preds, out_dir, indices, split=split))
        )
    return written


def _null_threshold(wd: Path, config: dict) -> float | None:
    """A SQuAD v2.0 run's null threshold: tuned on dev if results.json has it; None for others."""
    if config["task"] != "squad" or config.get("version") != "2.0":
        return None
    results = wd / "results.json"
    if results.exists():
        metrics = json.loads(results.read_text()).get("metrics", {})
        if "eval/null_score_diff_threshold" in metrics:
            return float(metrics["eval/null_score_diff_threshold"])
    return float(config["null_score_diff_threshold"])


def _model_batch(arrays) -> dict:
    return {k: np.asarray(arrays[k]) for k in ("input_ids", "token_type_ids", "attention_mask")}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    predictor = Predictor(FLAGS.workdir)
    if FLAGS.glue_submission:
        for path in glue_submission(predictor, FLAGS.glue_submission, FLAGS.batch_size):
            print(f"wrote {path}")
        return
    lines = _inputs()
    for i in range(0, len(lines), FLAGS.batch_size):
        for row in predictor(lines[i : i + FLAGS.batch_size]):
            sys.stdout.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    app.run(main)
