"""Tests for bert_jax.data.glue: the real GLUE files, malformed rows, TFDS."""

import pytest

from bert_jax.data import glue

# --------------------------------------------------------------- real files


@pytest.mark.parametrize(
    "task, split, count",
    [
        ("sst2", "train", 67_349),
        ("sst2", "dev", 872),
        ("sst2", "test", 1_821),
        ("cola", "train", 8_551),  # No header.
        ("cola", "dev", 1_043),  # No header, no trailing newline.
        ("cola", "test", 1_063),
        ("stsb", "train", 5_749),
        ("stsb", "dev", 1_500),
        ("stsb", "test", 1_379),
    ],
)
def test_real_files_exact_counts(shared_data, task, split, count):
    stats = glue.ReadStats()
    examples = glue.load_split(task, split, shared_data / "glue", stats=stats)
    assert len(examples) == count
    assert (stats.rows, stats.examples, stats.skipped) == (count, count, 0)
    labels = glue.get_task(task).labels
    if split == "test":
        # GLUE test files: an index column, no label.
        assert all(e.label is None for e in examples)
        assert [e.index for e in examples] == list(range(count))
    elif labels is None:
        assert all(isinstance(e.label, float) and 0 <= e.label <= 5 for e in examples)
    else:
        assert {e.label for e in examples} == set(labels)
    assert all(e.text_a.strip() for e in examples)
    assert all((e.text_b is None) == (task != "stsb") for e in examples)
    assert [e.guid for e in examples[:2]] == [f"{split}-0", f"{split}-1"]


def test_real_rows_read_verbatim(shared_data):
    root = shared_data / "glue"
    sst = glue.load_split("sst2", "dev", root)
    # Sentences keep their space before the tab; the label is the string.
    assert sst[0] == glue.Example(
        "dev-0", "it 's a charming and often affecting journey . ", None, "1", None
    )
    cola_train = glue.load_split("cola", "train", root)
    # Lines 3057-3058 of the file (no header): a quoted phrase, taken as text.
    assert cola_train[3056].text_a == 'Susan whispered "Shut up".'
    assert cola_train[3057].text_a == 'Susan whispered "Shut up" at them.'
    cola_dev = glue.load_split("cola", "dev", root)  # The last line has no newline.
    assert (cola_dev[-1].text_a, cola_dev[-1].label) == ("John talked to Bill about himself.", "1")
    stsb = glue.load_split("stsb", "dev", root)
    # File line 766: an opening quote never closed; CSV quoting would swallow rows.
    row = stsb[764]
    assert row.index == 764 and row.label == 1.4
    assert row.text_a.startswith('"The grass family is one of')
    assert row.text_b.startswith("As noted on the Wiki page")
    assert (stsb[0].text_a, stsb[0].text_b, stsb[0].label) == (
        "A man with a hard hat is dancing.",
        "A man wearing a hard hat is dancing.",
        5.0,
    )


# ------------------------------------------------------------ written files


def _write(path, text: str, bom: bool = False):
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def test_bom_and_crlf(tmp_path):
    # The GLUE script copies MRPC's header from msr_paraphrase_train.txt, BOM
    # included; without stripping it the first column would be "\ufeffQuality".
    text = 'Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n1\t1\t2\tA cat .\tA "cat" .\r\n'
    examples = glue.read_tsv(_write(tmp_path / "dev.tsv", text, bom=True), "MRPC", "dev")
    assert examples == [glue.Example("dev-0", "A cat .", 'A "cat" .', "1", None)]


def test_columns_found_by_header_name(tmp_path):
    # MNLI: text and gold label found by name wherever they are.
    text = "gold_label\tindex\tsentence2\tsentence1\nneutral\t7\tB .\tA .\n"
    (ex,) = glue.read_tsv(_write(tmp_path / "m.tsv", text), "mnli", "dev_mismatched")
    assert ex == glue.Example("dev_mismatched-0", "A .", "B .", "neutral", 7)
    with pytest.raises(ValueError, match=r"m\.tsv:1: header has no 'gold_label'"):
        glue.read_tsv(_write(tmp_path / "m.tsv", "index\tsentence1\tsentence2\n"), "mnli", "train")


MALFORMED = (
    "sentence\tlabel\n"  # line 1
    "fine .\t1\n"  # line 2
    "too\tmany\tcolumns\n"  # line 3
    "bad label .\t2\n"  # line 4
    " \t0\n"  # line 5: empty text
    "also fine .\t0"  # line 6, no newline
)


def test_malformed_row_names_file_and_line(tmp_path):
    lines = MALFORMED.split("\n")
    for number, reason in [
        (3, "expected 2 tab-separated columns, found 3"),
        (4, "label '2' is not one of"),
        (5, "empty text_a"),
    ]:
        # The bad line where it was, good lines before and after it.
        text = "\n".join([lines[0], *["ok .\t1"] * (number - 2), lines[number - 1], "ok .\t0"])
        path = _write(tmp_path / "train.tsv", text)
        with pytest.raises(ValueError, match=rf"train\.tsv:{number}: {reason}"):
            glue.read_tsv(path, "sst2", "train")
    with pytest.raises(ValueError, match=r"train\.tsv:3: expected"):
        glue.read_tsv(_write(tmp_path / "train.tsv", MALFORMED), "sst2", "train")


def test_skip_mode_counts_malformed_rows(tmp_path, caplog):
    path = _write(tmp_path / "train.tsv", MALFORMED)
    stats = glue.ReadStats()
    with caplog.at_level("WARNING"):
        examples = glue.read_tsv(path, "sst2", "train", on_bad_input="skip", stats=stats)
    assert [(e.guid, e.text_a, e.label) for e in examples] == [
        ("train-0", "fine .", "1"),
        ("train-4", "also fine .", "0"),  # guids count skipped rows too.
    ]
    assert (stats.rows, stats.examples, stats.skipped) == (5, 2, 3)
    assert [p.split(": ")[0].rsplit(":", 1)[1] for p in stats.problems] == ["3", "4", "5"]
    assert "skipped 3 malformed rows of 5" in caplog.text


@pytest.mark.parametrize(
    "task, row, reason",
    [
        ("stsb", "0\ta\tb\tsix", "score 'six' is not a number"),
        ("stsb", "0\ta\tb\t5.5", r"score '5.5' is outside \[0, 5\]"),
        ("stsb", "x\ta\tb\t1.0", "index 'x' is not an integer"),
        ("rte", "0\ta\tb\tcontradiction", "label 'contradiction' is not one of"),
    ],
)
def test_bad_scores_labels_indices(tmp_path, task, row, reason):
    header = {
        "stsb": "index\tsentence1\tsentence2\tscore",
        "rte": "index\tsentence1\tsentence2\tlabel",
    }
    path = _write(tmp_path / "dev.tsv", f"{header[task]}\n{row}\n")
    with pytest.raises(ValueError, match=rf"dev\.tsv:2: {reason}"):
        glue.read_tsv(path, task, "dev")


def test_not_utf8_row_is_malformed(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_bytes(b"sentence\tlabel\nok\t1\n\xff\xfe\t0\n")
    with pytest.raises(ValueError, match=r"dev\.tsv:3: not UTF-8"):
        glue.read_tsv(str(path), "sst2", "dev")
    assert len(glue.read_tsv(str(path), "sst2", "dev", on_bad_input="skip")) == 1


def test_empty_file_and_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="empty file"):
        glue.read_tsv(_write(tmp_path / "dev.tsv", ""), "cola", "dev")
    with pytest.raises(
        ValueError, match="known: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli, ax"
    ):
        glue.load_split("squad", "dev", str(tmp_path))
    with pytest.raises(ValueError, match="known: train, dev_matched, dev_mismatched"):
        glue.load_split("mnli", "dev", str(tmp_path))
    with pytest.raises(ValueError, match="on_bad_input must be 'fail' or 'skip', got 'warn'"):
        glue.read_tsv(
            _write(tmp_path / "dev.tsv", "sentence\tlabel\n"), "sst2", "dev", on_bad_input="warn"
        )
    assert glue.get_task("SST-2") is glue.get_task("sst_2") is glue.TASKS["sst2"]


def test_table_is_complete():
    assert set(glue.TASKS) == {
        "cola",
        "sst2",
        "mrpc",
        "qqp",
        "stsb",
        "mnli",
        "qnli",
        "rte",
        "wnli",
        "ax",
    }
    for task in glue.TASKS.values():
        assert set(task.tfds_splits) == set(task.files)
        assert set(task.submissions) == {s for s in task.files if s.startswith("test")}
        assert task.tfds_name == f"glue/{task.name}"
        if task.tfds_labels is not None:
            assert set(task.tfds_labels) == set(task.labels)
    assert glue.TASKS["mnli"].labels == ("contradiction", "entailment", "neutral")


# --------------------------------------------------------------------- TFDS


@pytest.mark.parametrize(
    "task, split", [("sst2", "train"), ("stsb", "dev"), ("mnli", "dev_mismatched"), ("qqp", "test")]
)
def test_tfds_random_mock(task, split):
    tfds = pytest.importorskip("tensorflow_datasets")
    glue_task = glue.get_task(task)
    # Random examples built from the real builder's features: our feature
    # names must exist there.
    with tfds.testing.mock_data(num_examples=6):
        examples = glue.load_split(task, split)
    assert len(examples) == 6
    assert [e.index for e in examples] == sorted(e.index for e in examples)
    for e in examples:
        assert isinstance(e.text_a, str) and (e.text_b is None) == (task in ("sst2", "cola"))
        if split.startswith("test"):
            assert e.label is None
        elif glue_task.is_regression:
            assert isinstance(e.label, float)
        else:
            assert e.label in glue_task.labels


def test_tfds_labels_map_to_our_strings():
    tfds = pytest.importorskip("tensorflow_datasets")
    import tensorflow as tf

    # TFDS MNLI classes are [entailment, neutral, contradiction]; ours put
    # contradiction first. Examples arrive out of idx order, as TFDS stores them.
    def as_dataset(self, split, **kwargs):
        del self, kwargs
        labels = {"validation_matched": [2, 0, 1], "test_matched": [-1, -1, -1]}[split]
        return tf.data.Dataset.from_tensor_slices(
            {
                "premise": ["p2", "p0", "p1"],
                "hypothesis": ["h2", "h0", "h1"],
                "label": tf.constant(labels, tf.int64),
                "idx": tf.constant([2, 0, 1], tf.int32),
            }
        )

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        dev = glue.load_split("mnli", "dev_matched")
        test = glue.load_split("mnli", "test_matched")
    assert dev == [
        glue.Example("dev_matched-0", "p0", "h0", "entailment", 0),
        glue.Example("dev_matched-1", "p1", "h1", "neutral", 1),
        glue.Example("dev_matched-2", "p2", "h2", "contradiction", 2),
    ]
    assert [(e.text_a, e.label, e.index) for e in test] == [
        ("p0", None, 0),
        ("p1", None, 1),
        ("p2", None, 2),
    ]


def test_tfds_scores_are_the_file_values():
    tfds = pytest.importorskip("tensorflow_datasets")
    import tensorflow as tf

    def as_dataset(self, split, **kwargs):
        del self, split, kwargs
        return tf.data.Dataset.from_tensor_slices(
            {
                "sentence1": ["a", "b"],
                "sentence2": ["c", "d"],
                "label": tf.constant([3.8, 0.6], tf.float32),
                "idx": tf.constant([0, 1], tf.int32),
            }
        )

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        assert [e.label for e in glue.load_split("stsb", "dev")] == [3.8, 0.6]
        assert [e.label for e in glue.load_split("stsb", "test")] == [None, None]


# Every task's file layout as the GLUE download script writes it (headers
# from the released data; rows written here, with a label of each kind).
_NLI_PARSES = "\t".join(["(a)", "(b)", "(A)", "(B)"])
LAYOUTS = {
    ("mrpc", "train"): "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t7\t8\tA .\tB .\n",
    ("mrpc", "test"): "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t7\t8\tA .\tB .\n",
    ("qqp", "dev"): "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n5\t1\t2\tA ?\tB ?\t0\n",
    ("qqp", "test"): "id\tquestion1\tquestion2\n5\tA ?\tB ?\n",
    ("mnli", "train"): (
        "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
        "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n"
        f"0\t1\t1e\tgov\t{_NLI_PARSES}\tA .\tB .\tneutral\tneutral\n"
    ),
    ("mnli", "dev_matched"): (
        "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
        "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\t"
        "label4\tlabel5\tgold_label\n"
        f"0\t1\t1e\tgov\t{_NLI_PARSES}\tA .\tB .\t"
        "contradiction\tneutral\tcontradiction\tcontradiction\tcontradiction\tcontradiction\n"
    ),
    ("mnli", "test_mismatched"): (
        "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
        "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\n"
        f"0\t1\t1e\tletters\t{_NLI_PARSES}\tA .\tB .\n"
    ),
    ("qnli", "dev"): "index\tquestion\tsentence\tlabel\n0\tA ?\tB .\tnot_entailment\n",
    ("qnli", "test"): "index\tquestion\tsentence\n0\tA ?\tB .\n",
    ("rte", "train"): "index\tsentence1\tsentence2\tlabel\n0\tA .\tB .\tentailment\n",
    ("wnli", "dev"): "index\tsentence1\tsentence2\tlabel\n0\tA .\tB .\t1\n",
    ("ax", "test"): "index\tsentence1\tsentence2\n0\tA .\tB .\n",
}
LAYOUT_LABELS = {"mrpc": "1", "qqp": "0", "mnli": None, "qnli": "not_entailment"}


@pytest.mark.parametrize("task, split", list(LAYOUTS), ids=["-".join(k) for k in LAYOUTS])
def test_download_script_layouts(tmp_path, task, split):
    path = _write(tmp_path / f"{split}.tsv", LAYOUTS[(task, split)])
    (ex,) = glue.read_tsv(path, task, split)
    assert (ex.text_a, ex.text_b) == ({"qqp": "A ?", "qnli": "A ?"}.get(task, "A ."),
                                      {"qqp": "B ?"}.get(task, "B ."))  # fmt: skip
    if split.startswith("test"):
        assert ex.label is None
    else:
        want = {
            ("mnli", "train"): "neutral",
            ("mnli", "dev_matched"): "contradiction",  # gold_label, the last column
            ("rte", "train"): "entailment",
            ("wnli", "dev"): "1",
        }.get((task, split), LAYOUT_LABELS.get(task))
        assert ex.label == want
    assert ex.index == (None if task == "mrpc" and split == "train" else {"qqp": 5}.get(task, 0))
