"""Every task family that reads TFDS without data.data_dir, end to end under `mock_data`.

`tfds.testing.mock_data` replaces the download and the stored records; the
rest of TFDS (the real builder, its features and splits, `tfds.load`,
`tfds.as_numpy`) runs as it does for users. Where random records from the
builder's features suit the task (GLUE, IMDB) they are used; where random
text would break it (SQuAD answers must sit at answer_start, CoNLL tags pair
with tokens, HellaSwag has four endings) the records are built from the
shared real data and pass through the builder's own features
(`_as_dataset`), so a feature name or dtype the builder lacks fails here.
Each run: a one-layer tiny model without dropout, 2 steps, a few records,
in-process. Runs with the same model and shapes (SST-2 and IMDB, SQuAD v1.1
and v2.0) share compiled programs through the test session's compilation
cache (tests/conftest.py).
"""

import json

import numpy as np
import pytest

from bert_jax.data.pretraining import corpus
from configs import classify, glue, ner, squad, swag
from tests.tasks import tiny_runs

tfds = pytest.importorskip("tensorflow_datasets")
tf = pytest.importorskip("tensorflow")
tree = pytest.importorskip("tree")  # dm-tree, a dependency of tensorflow_datasets


def _tiny(c, shared_data, vocab="bert-base-uncased"):
    """`tiny_runs.tiny`, smaller still: one layer, 2 steps of 4 rows of 32 tokens, TFDS data.

    Dropout is off: its random masks take 40% of the train step's compile
    time, and the data plumbing tested here does not depend on it.
    """
    c = tiny_runs.tiny(c, shared_data, vocab)
    assert not c.data.data_dir  # Empty: the task reads TFDS.
    c.model.num_layers = 1
    c.model.hidden_dropout = c.model.attention_dropout = 0.0
    c.num_train_steps, c.log_every = 2, 2
    c.train_batch_size = c.eval_batch_size = 4
    c.max_seq_length = 32
    return c


def _as_dataset(records_by_split):
    """A `mock_data(as_dataset_fn=...)` serving these records, by TFDS split name.

    Each record goes through the builder's `encode_example` (string class
    labels become ids) and the dataset takes the builder's tensor specs.
    """

    def as_dataset(self, split, **kwargs):
        del kwargs
        features = self.info.features
        specs = features.get_tensor_info()
        rows = [
            tree.map_structure_up_to(specs, _plain, features.encode_example(r), specs)
            for r in records_by_split[str(split)]
        ]
        return tf.data.Dataset.from_generator(
            lambda: iter(rows),
            output_types=tf.nest.map_structure(lambda s: s.dtype, specs),
            output_shapes=tf.nest.map_structure(lambda s: s.shape, specs),
        )

    return as_dataset


def _plain(value, spec):
    """An encoded feature as tf.data takes it: text encodes to str in 0-d object arrays."""
    if np.dtype(spec.np_dtype).kind != "O":
        return np.asarray(value, spec.np_dtype)
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return [_plain(v, spec) for v in value] if isinstance(value, list | np.ndarray) else value


@pytest.fixture(scope="module")
def dev_json(shared_data):
    with open(shared_data / "squad" / "v1.1" / "dev-v1.1.json", encoding="utf-8") as f:
        return json.load(f)


# --------------------------------------------------------------- random records


@pytest.mark.parametrize(
    "config, keys",
    [
        ("task=sst2", {"eval/accuracy"}),
        # Two dev sets (validation_matched / _mismatched): "_mm" for the second.
        ("task=mnli", {"eval/accuracy", "eval/accuracy_mm"}),
    ],
)
def test_glue_from_tfds(config, keys, shared_data, tmp_path):
    c = _tiny(glue.get_config(f"{config},tiny"), shared_data)
    with tfds.testing.mock_data(num_examples=8):
        metrics = tiny_runs.run(c, tmp_path)
    assert set(metrics) == keys


def test_classify_imdb_reviews_from_tfds(shared_data, tmp_path):
    c = _tiny(classify.get_config("imdb,tiny"), shared_data)
    assert c.data.tfds_name == "imdb_reviews"
    with tfds.testing.mock_data(num_examples=8):
        metrics = tiny_runs.run(c, tmp_path)
    assert set(metrics) == {"eval/accuracy", "eval/f1"}


def test_random_conll_and_hellaswag_records_are_rejected_by_name():
    """Random records have as many tags as tokens, or four endings, only by chance."""
    from bert_jax.data import swag
    from bert_jax.tasks import ner as ner_task

    c = ner.get_config("tiny")
    with tfds.testing.mock_data(num_examples=2):
        with pytest.raises(ValueError, match=r"TFDS conll2003 split 'train' record 0: \d+ tokens"):
            ner_task._load(c, "train")
        with pytest.raises(
            ValueError, match=r"TFDS hellaswag split 'train' record 0: \d+ endings, config num_"
        ):
            swag.read_tfds("hellaswag", "train", 4)


# ------------------------------------------------------------------ real records


def test_ner_conll2003_from_tfds(shared_data, tmp_path):
    """Real CoNLL-2003 sentences as TFDS records (string tags, encoded by the builder)."""
    from bert_jax.data import conll

    sentences, _ = conll.read_conll(str(shared_data / "conll2003" / "valid.txt"))
    records = [
        {"tokens": s.tokens, "pos": s.pos, "chunks": s.chunk, "ner": s.tags} for s in sentences[:12]
    ]
    c = _tiny(ner.get_config("tiny"), shared_data, vocab="bert-base-cased")
    with tfds.testing.mock_data(as_dataset_fn=_as_dataset({"train": records, "dev": records})):
        metrics = tiny_runs.run(c, tmp_path)
    assert {"eval/precision", "eval/recall", "eval/f1", "eval/accuracy"} <= set(metrics)


def _squad_records(dev_json, version, n_paragraphs=2, impossible_every=3):
    """The first real dev paragraphs' questions as TFDS squad records.

    v2.0: every `impossible_every`-th question loses its answers, which
    become its plausible answers (as in the official v2.0 files).
    """
    records = []
    for paragraph in dev_json["data"][0]["paragraphs"][:n_paragraphs]:
        for qa in paragraph["qas"]:
            answers = {
                "text": [a["text"] for a in qa["answers"]],
                "answer_start": [a["answer_start"] for a in qa["answers"]],
            }
            record = {
                "id": qa["id"],
                "title": dev_json["data"][0]["title"],
                "context": paragraph["context"],
                "question": qa["question"],
                "answers": answers,
            }
            if version == "2.0":
                impossible = len(records) % impossible_every == impossible_every - 1
                empty = {"text": [], "answer_start": []}
                record |= {
                    "is_impossible": impossible,
                    "answers": empty if impossible else answers,
                    "plausible_answers": answers if impossible else empty,
                }
            records.append(record)
    return records


@pytest.mark.parametrize("version", ["1.1", "2.0"])
def test_squad_from_tfds(version, dev_json, shared_data, tmp_path):
    records = _squad_records(dev_json, version)
    c = _tiny(squad.get_config(f"version={version},tiny"), shared_data)
    c.max_seq_length, c.doc_stride, c.max_query_length = 64, 32, 16
    splits = {"train": records, "validation": records}
    with tfds.testing.mock_data(as_dataset_fn=_as_dataset(splits)):
        metrics = tiny_runs.run(c, tmp_path)
    keys = {"eval/exact_match", "eval/f1"}
    if version == "2.0":
        keys |= {
            f"eval/{prefix}{k}"
            for prefix in ("", "HasAns_", "NoAns_")
            for k in ("exact", "f1", "total")
        } - {"eval/exact"}
        keys |= {"eval/best_exact", "eval/best_exact_thresh", "eval/best_f1", "eval/best_f1_thresh"}
        keys |= {"eval/null_score_diff_threshold", "eval/tuned_exact_match", "eval/tuned_f1"}
        assert metrics["eval/NoAns_total"] == len(records) // 3
        tuned = json.loads((tmp_path / "predictions_tuned.json").read_text())
        assert set(tuned) == {r["id"] for r in records}
    assert set(metrics) == keys
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    assert set(predictions) == {r["id"] for r in records}


def test_squad_tfds_answer_errors_name_the_dataset_and_split(dev_json, shared_data):
    from bert_jax.tasks.squad import SquadTask

    records = _squad_records(dev_json, "1.1", n_paragraphs=1)
    records[1]["answers"]["answer_start"][0] += 1
    c = _tiny(squad.get_config("version=1.1,tiny"), shared_data)
    error = r"TFDS squad/v1.1 split 'train': 1 answers do not match"
    with (
        tfds.testing.mock_data(as_dataset_fn=_as_dataset({"train": records})),
        pytest.raises(ValueError, match=error),
    ):
        SquadTask(c).train_source(0, 1)  # the task reads no data until asked


def test_multiple_choice_hellaswag_from_tfds(dev_json, shared_data, tmp_path):
    """HellaSwag-shaped records from real paragraphs: the true next sentence and 3 others."""
    paragraphs = [p["context"] for p in dev_json["data"][1]["paragraphs"]]
    sentences = [corpus.split_sentences(p) for p in paragraphs]
    pool = [s for para in sentences for s in para]
    records = []
    for i, para in enumerate(s for s in sentences if len(s) >= 2):
        label = i % 4
        endings = [pool[(7 * i + k) % len(pool)] for k in range(3)]
        endings.insert(label, para[1])
        records.append(
            {
                "context": para[0],
                "endings": endings,
                "activity_label": "",
                "label": label,
                "split_type": "indomain",
                "source_id": f"squad-{i}",
            }
        )
    c = _tiny(swag.get_config("tiny"), shared_data)
    assert c.data.tfds_name == "hellaswag"
    splits = {"train": records, "validation": records[:8]}
    with tfds.testing.mock_data(as_dataset_fn=_as_dataset(splits)):
        metrics = tiny_runs.run(c, tmp_path)
    assert set(metrics) == {"eval/accuracy"}
    bad = [records[0] | {"label": 4}]
    from bert_jax.data.swag import read_tfds

    with (
        tfds.testing.mock_data(as_dataset_fn=_as_dataset({"validation": bad})),
        pytest.raises(ValueError, match=r"hellaswag split 'validation' record 0: label '4' is not"),
    ):
        read_tfds("hellaswag", "validation", 4)
