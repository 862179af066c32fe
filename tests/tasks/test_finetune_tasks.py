"""Fine-tuning tasks end to end through the trainer, small: GLUE, classify, NER.

Tiny random models on real data (a few steps): these check the plumbing
(readers -> features -> head -> loss -> official metrics -> results.json).
The accuracy checks with a real pretrained checkpoint are in
test_finetune_real.py.
"""

import csv
import json

import jax
import pytest

from bert_jax import train
from configs import classify, glue, ner


def _run(config, tmp_path):
    _, metrics = train.run(config, str(tmp_path), devices=jax.devices()[:1])
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["metrics"] == metrics
    return metrics


def _tiny(c, shared_data, vocab="bert-base-uncased"):
    c.data.vocab_file = str(shared_data / "vocab" / vocab / "vocab.txt")
    c.num_train_steps, c.log_every = 4, 2
    c.data.max_train_examples = 64
    c.eval_batch_size = 128
    return c


@pytest.mark.parametrize(
    "task, keys",
    [
        ("sst2", {"eval/accuracy"}),
        ("stsb", {"eval/pearson", "eval/spearman"}),
        ("cola", {"eval/mcc"}),
    ],
)
def test_glue_tasks_train_and_report_official_metrics(task, keys, shared_data, tmp_path):
    c = _tiny(glue.get_config(f"task={task},tiny"), shared_data)
    c.data.data_dir = str(shared_data / "glue")
    metrics = _run(c, tmp_path)
    assert set(metrics) == keys
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [2, 4]


def test_classify_local_csv_from_real_imdb_reviews(shared_data, tmp_path):
    reviews = shared_data / "imdb" / "aclImdb" / "test"
    rows = [
        (p.read_text(encoding="utf-8"), label)
        for label in ("pos", "neg")
        for p in sorted((reviews / label).glob("*.txt"))[:60]
    ]
    for name, part in (("train.csv", rows[::2]), ("dev.csv", rows[1::2])):
        with open(tmp_path / name, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["review", "sentiment"])
            w.writerows(part)
    c = _tiny(classify.get_config("tiny"), shared_data)
    c.data.train_file, c.data.eval_file = str(tmp_path / "train.csv"), str(tmp_path / "dev.csv")
    c.data.text_column, c.data.label_column = "review", "sentiment"
    metrics = _run(c, tmp_path / "run")
    assert set(metrics) == {"eval/accuracy", "eval/f1"}


def test_ner_conll_entity_f1(shared_data, tmp_path):
    c = _tiny(ner.get_config("tiny"), shared_data, vocab="bert-base-cased")
    c.data.data_dir = str(shared_data / "conll2003")
    metrics = _run(c, tmp_path)
    assert {"eval/f1", "eval/precision", "eval/recall", "eval/f1_PER"} <= set(metrics)


def test_checkpoint_architecture_conflicts_are_named(minilm_dir, shared_data, tmp_path):
    c = glue.get_config("task=sst2,model=base")
    c.init_checkpoint = str(minilm_dir)
    c.data.data_dir = str(shared_data / "glue")
    with pytest.raises(ValueError, match=r"model.size='base' conflicts with init_checkpoint"):
        train.run(c, str(tmp_path))
    c = glue.get_config("task=sst2")
    c.init_checkpoint, c.model.num_layers = str(minilm_dir), 12
    c.data.data_dir = str(shared_data / "glue")
    with pytest.raises(ValueError, match=r"model.num_layers=12 conflicts"):
        train.run(c, str(tmp_path))


def test_unknown_glue_task_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown GLUE task 'sst3'.*'sst2'"):
        glue.get_config("task=sst3")


def test_squad_predictions_match_the_official_evaluation(shared_data, tmp_path):
    """Train briefly on real dev questions, write predictions.json, score it with the CLI."""
    import subprocess
    import sys

    from configs import squad

    c = _tiny(squad.get_config("version=1.1,tiny"), shared_data)
    squad_dir = shared_data / "squad" / "v1.1"
    c.data.data_dir = str(squad_dir)
    c.data.train_file = c.data.eval_file = "dev-v1.1.json"  # the only SQuAD file here
    c.data.max_eval_examples = 150
    metrics = _run(c, tmp_path)
    assert set(metrics) == {"eval/exact_match", "eval/f1"}
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    assert len(predictions) == 150
    # The CLI scores every dev question; unanswered ones count as wrong.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bert_jax.tasks.squad_eval",
            str(squad_dir / "dev-v1.1.json"),
            str(tmp_path / "predictions.json"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    full = json.loads(out.stdout)
    assert full["f1"] == pytest.approx(metrics["eval/f1"] * 150 / 10570, rel=1e-9)
