"""Every notebook runs top to bottom in a Jupyter kernel (nbclient), reproduces the
outputs stored in it, and those outputs are right (checked against an
independent reference, notebook by notebook).

Notebooks are committed executed, so readers see real results. After editing
one, store its outputs again with:

    python -m tests.test_notebooks notebooks/<name>.ipynb
"""

import re
import sys
from pathlib import Path

import nbclient
import nbformat
import numpy as np
import pytest

from tests.numerics import assert_close

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# Printed numbers are rounded (3 decimals); a last-digit change between CPUs is allowed.
NUMBER = re.compile(r"-?\d+\.\d+(?:[eE][-+]?\d+)?")
ATOL = 2e-3


def execute(path: Path) -> nbformat.NotebookNode:
    """The notebook, run in a fresh kernel from its own folder."""
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    return nb


def cell_texts(nb: nbformat.NotebookNode) -> list[str]:
    """The text each code cell printed or returned, in order."""
    out = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        parts = []
        for o in cell.get("outputs", []):
            if o.output_type == "stream":
                parts.append(o.text)
            elif o.output_type in ("execute_result", "display_data"):
                parts.append(o.get("data", {}).get("text/plain", ""))
            elif o.output_type == "error":
                parts.append(f"{o.ename}: {o.evalue}")
        out.append("".join(parts))
    return out


def assert_same_text(fresh: str, stored: str, where: str) -> None:
    """Equal text, with every decimal number equal within ATOL."""
    assert NUMBER.sub("#", fresh) == NUMBER.sub("#", stored), f"{where}:\n{fresh}\n!=\n{stored}"
    a = [float(x) for x in NUMBER.findall(fresh)]
    b = [float(x) for x in NUMBER.findall(stored)]
    assert_close(a, b, atol=ATOL, err_msg=where)


# ------------------------------------------------------- per-notebook checks


def check_inspect_pretrained(texts: list[str], minilm_dir: Path) -> None:
    """inspect_pretrained.ipynb's numbers against HF transformers on the same input."""
    import torch
    import transformers

    from bert_jax.tokenizers.wordpiece import BertTokenizer

    tok = BertTokenizer(str(minilm_dir / "vocab.txt"), do_lower_case=True)
    enc = tok.encode("The trophy didn't fit in the suitcase.", "It was too big.")
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    hf = transformers.BertModel.from_pretrained(str(minilm_dir), attn_implementation="eager")
    with torch.no_grad():
        o = hf.eval()(
            **{k: torch.tensor([v]) for k, v in enc.items()},
            output_attentions=True,
            output_hidden_states=True,
        )
    n = len(tokens)
    assert texts[1] == (
        f"{len(o.hidden_states)} hidden states, {len(o.attentions)} attention maps\n"
        f"attention shape (batch, heads, query, key): (1, 12, {n}, {n})\n"
    )
    last = o.attentions[-1][0].numpy().mean(0)
    q = tokens.index("it")
    rows = [line.split() for line in texts[2].splitlines()]
    assert [r[0] for r in rows] == [tokens[j] for j in np.argsort(-last[q])[:5]]
    assert_close([float(r[1]) for r in rows], np.sort(last[q])[::-1][:5], atol=ATOL)
    hs = [h[0].numpy() for h in o.hidden_states]
    cos = [
        float(((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))).mean())
        for a, b in zip(hs, hs[1:], strict=False)
    ]
    printed = [float(line.rsplit(" ", 1)[1]) for line in texts[3].splitlines()]
    assert_close(printed, cos, atol=ATOL)


CHECKS = {"inspect_pretrained.ipynb": check_inspect_pretrained}


def check_pretraining_curves(texts: list[str], minilm_dir: Path) -> None:
    """pretraining_curves.ipynb's numbers against its run, re-read independently: the
    records counted with tf.data, metrics.jsonl and results.json read with json, and
    the learning rates against the warmup + linear decay formula."""
    import json
    import tempfile

    import tensorflow as tf

    del minilm_dir
    root = Path(tempfile.gettempdir()) / "bert_jax_notebooks" / "pretraining_curves"
    wd = root / "runs" / "tiny"
    records = [str(root / "data" / f"{split}.tfrecord") for split in ("train", "eval")]
    n = [sum(1 for _ in tf.data.TFRecordDataset(path)) for path in records]
    assert texts[0].endswith(f" documents: {n[0]} training examples, {n[1]} held out\n")
    rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
    final = json.loads((wd / "results.json").read_text())["metrics"]
    config = json.loads((wd / "config.json").read_text())

    # The results table: the run's final accuracies, in percent (2 decimals).
    assert texts[1].startswith("1 finished run, 0 skipped\n")
    table = {c[1]: c for c in (line.split(" | ") for line in texts[1].splitlines()[3:])}
    keys = {"MLM accuracy": "eval/mlm_accuracy", "NSP accuracy": "eval/nsp_accuracy"}
    assert sorted(table) == sorted(keys)
    for metric, key in keys.items():
        assert table[metric][2:4] == ["lr=0.001", "1"], table[metric]  # setting, seeds
        assert_close(float(table[metric][4]), 100 * final[key], atol=0.005 + ATOL)

    # Training rows: steps and losses as logged; learning rates from the schedule.
    train = [r for r in rows if "train/loss" in r]
    printed = np.array([line.split() for line in texts[2].splitlines()[1:]], np.float64)
    assert printed[:, 0].astype(int).tolist() == [r["step"] for r in train]
    assert_close(printed[:, 1], [r["train/loss"] for r in train], atol=ATOL)
    peak, warmup = config["optimizer"]["learning_rate"], config["optimizer"]["warmup_steps"]
    total = config["num_train_steps"]
    t = printed[:, 0] - 1  # a row logs the rate its last step trained with (step - 1)
    rate = np.where(t < warmup, peak * t / warmup, peak * (1 - (t - warmup) / (total - warmup)))
    assert_close(printed[:, 2], rate, rtol=1e-3)
    assert printed[-1, 1] < printed[0, 1] - 0.5  # it learns: about 11.1 -> 9.9

    # Held-out rows every eval_every steps; the last one is results.json's.
    evals = [r for r in rows if "eval/mlm_accuracy" in r]
    printed = np.array([line.split() for line in texts[3].splitlines()[1:]], np.float64)
    assert printed[:, 0].astype(int).tolist() == list(range(5, total + 1, 5))
    assert [r["step"] for r in evals] == list(range(5, total + 1, 5))
    assert_close(printed[:, 1], [r["eval/mlm_accuracy"] for r in evals], atol=ATOL)
    assert_close(printed[:, 2], [r["eval/nsp_accuracy"] for r in evals], atol=ATOL)
    last = [final["eval/mlm_accuracy"], final["eval/nsp_accuracy"]]
    assert_close(printed[-1, 1:], last, atol=ATOL)
    assert texts[4] == "<IPython.core.display.Image object>"
    assert (root / "curves.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


CHECKS["pretraining_curves.ipynb"] = check_pretraining_curves


def check_attention(texts: list[str], minilm_dir: Path) -> None:
    """attention.ipynb's numbers, and the weights in the HTML files it saved, against
    HF transformers (its tokenizer, eager attention) on the same sentence pair."""
    import json

    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    enc = tok("The cat sat on the mat.", "It fell asleep, purring.")
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    hf = transformers.BertModel.from_pretrained(str(minilm_dir), attn_implementation="eager")
    with torch.no_grad():
        o = hf.eval()(**{k: torch.tensor([v]) for k, v in enc.items()}, output_attentions=True)
    w = np.stack([a[0].numpy() for a in o.attentions]).astype(np.float64)  # (L, H, q, k)
    n = len(tokens)
    assert texts[0] == (
        f"{n} tokens: {' '.join(tokens)}\n"
        f"attention (layers, heads, query, key): {w.shape}\n"
        f"sentence B starts at token {enc['token_type_ids'].index(1)}\n"
    )
    row = w[5, 11, tokens.index("it")]
    top = [line.split() for line in texts[1].splitlines()]
    assert [r[0] for r in top] == [tokens[j] for j in np.argsort(-row)[:5]]
    assert_close([float(r[1]) for r in top], np.sort(row)[::-1][:5], atol=ATOL)
    assert top[0][0] == "cat"  # the pronoun's referent, across the pair

    # Per layer, mean over heads and queries: attention to [CLS], [SEP], "." or ",";
    # entropy in nats (Clark et al. 2019).
    t = np.asarray(tokens)
    kinds = [w[..., np.isin(t, k)].sum(-1).mean((1, 2)) for k in (["[CLS]"], ["[SEP]"], [".", ","])]
    entropy = -(w * np.log(np.where(w > 0, w, 1.0))).sum(-1).mean((1, 2))
    lines = texts[2].splitlines()
    table = np.array([line.split() for line in lines[1:-1]], np.float64)
    assert_close(table[:, 0], np.arange(w.shape[0]))
    assert_close(table[:, 1:], np.stack([*kinds, entropy], 1), atol=ATOL)
    assert_close(float(lines[-1].rsplit(" ", 1)[1]), np.log(n), atol=ATOL)

    assert texts[3] == f"<head view: {n} tokens, 6 layers x 12 heads>"
    assert texts[4] == f"<model view: {n} tokens, 6 layers x 12 heads>"
    saved = [line.rsplit(": ", 1) for line in texts[5].splitlines()]
    assert [name for name, _ in saved] == [
        "runs/attention_head_view.html",
        "runs/attention_model_view.html",
    ]
    for name, size in saved:
        path = NOTEBOOKS[0].parent / name
        html = path.read_text(encoding="utf-8")
        assert_close(float(size.split()[0]), path.stat().st_size / 1e6, atol=ATOL)
        assert html.startswith("<!DOCTYPE html>") and not re.search(r"https?://|\bsrc=", html)
        data = json.loads(re.search(r'"application/json" id="[^"]+">(.*?)</script>', html)[1])
        assert data["tokens"] == tokens
        # Rounded to thousandths; HF and bert_jax differ by ~1e-6.
        assert_close(np.asarray(data["attn"]) / data["scale"], w, atol=5e-4 + 1e-5)
    assert texts[6] == "<Figure size 1200x320 with 3 Axes>"
    assert texts[7] == "<Figure size 550x320 with 1 Axes>"


def check_quickstart(texts: list[str], minilm_dir: Path) -> None:
    """quickstart.ipynb against its run and against HF transformers: the model summary
    from the checkpoint's config.json and HF's parameter count; losses and accuracy
    from the workdir's files; the majority class from dev.tsv read with csv; the
    predictions from HF BertForSequenceClassification on the exported fine-tuned weights."""
    import csv
    import json
    import shutil
    import tempfile

    import torch
    import transformers

    from bert_jax.checkpoints import pretrained

    cfg = json.loads((minilm_dir / "config.json").read_text())
    hf = transformers.BertModel.from_pretrained(str(minilm_dir))
    n_params = sum(p.numel() for p in hf.parameters())
    assert texts[0] == (
        f"BertModel: {cfg['num_hidden_layers']} layers, hidden {cfg['hidden_size']}, "
        f"{cfg['num_attention_heads']} heads, vocabulary {cfg['vocab_size']}, "
        f"{n_params:,} parameters\n"
    )

    wd = Path(tempfile.gettempdir()) / "bert_jax_notebooks" / "quickstart_sst2"
    config = json.loads((wd / "config.json").read_text())
    assert config["init_checkpoint"] == str(minilm_dir) and config["glue_task"] == "sst2"
    opt = config["optimizer"]
    assert texts[1] == (
        f"SST-2: {config['data']['max_train_examples']} sentences, "
        f"{config['num_train_steps']} steps of {config['train_batch_size']}, learning rate "
        f"{opt['learning_rate']:g} (warmup {opt['warmup_proportion']:.0%}), "
        f"length {config['max_seq_length']}\n"
    )

    rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "train/loss" in r]
    lines = texts[2].splitlines()
    steps = [int(line.split()[1].rstrip(":")) for line in lines[:-1]]
    losses = [float(line.rsplit(" ", 1)[1]) for line in lines[:-1]]
    assert steps == [r["step"] for r in train] == [10, 20, 30]
    assert_close(losses, [r["train/loss"] for r in train], atol=ATOL)
    # A fresh 2-way head starts near ln 2, then the loss falls.
    assert abs(losses[0] - np.log(2)) < 0.1 and losses[-1] < losses[0] - 0.05
    with open(Path(config["data"]["data_dir"]) / "SST-2" / "dev.tsv", newline="") as f:
        labels = [r["label"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    majority = max(labels.count("0"), labels.count("1")) / len(labels)
    m = re.fullmatch(r"dev accuracy (\S+) on (\d+) sentences \(majority class: (\S+)\)", lines[-1])
    accuracy = json.loads((wd / "results.json").read_text())["metrics"]["eval/accuracy"]
    assert int(m[2]) == len(labels) == 872
    assert_close([float(m[1]), float(m[3])], [accuracy, majority], atol=ATOL)
    assert accuracy > majority + 0.1  # 30 steps on 480 sentences: measured 0.761 vs 0.509

    pattern = re.compile(r"label (\S+)  \(P\(0\) (\S+), P\(1\) (\S+)\)  (.+)")
    preds = [pattern.fullmatch(line).groups() for line in texts[3].splitlines()]
    probs = np.array([[float(a), float(b)] for _, a, b, _ in preds])
    assert_close(probs.sum(1), np.ones(len(preds)), atol=ATOL)
    assert [p[0] for p in preds] == [str(int(np.argmax(p))) for p in probs]
    assert [p[0] for p in preds[:2]] == ["1", "0"]  # the plainly positive and negative ones
    model, params = pretrained.load(wd)
    with tempfile.TemporaryDirectory() as tmp:
        out = pretrained.export_hf(model, params, Path(tmp) / "hf", vocab_file=wd / "vocab.txt")
        clf = transformers.BertForSequenceClassification.from_pretrained(out).eval()
        tok = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
        enc = tok([p[3] for p in preds], padding=True, return_tensors="pt")
        with torch.no_grad():
            hf_probs = torch.softmax(clf(**enc).logits, -1).numpy()
    assert_close(probs, hf_probs, atol=ATOL)
    shutil.rmtree(wd)  # checked: its checkpoint (weights + Adam state) is ~270 MB


CHECKS["attention.ipynb"] = check_attention
CHECKS["quickstart.ipynb"] = check_quickstart


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_reproduces_its_stored_outputs(path, minilm_dir):
    stored = cell_texts(nbformat.read(path, as_version=4))
    assert all(stored), (
        f"{path.name} is committed without outputs: run python -m tests.test_notebooks"
    )
    fresh = cell_texts(execute(path))
    assert len(fresh) == len(stored)
    for i, (a, b) in enumerate(zip(fresh, stored, strict=True)):
        assert_same_text(a, b, f"{path.name} cell {i}")
    CHECKS[path.name](fresh, minilm_dir)


if __name__ == "__main__":
    # Store what the test will see: the suite's environment (tests/conftest.py sets
    # it on import: CPU, 8 host devices, its compile cache), and ipykernel leaving
    # file descriptor 2 alone as under pytest, so C-level start-up lines (e.g.
    # TensorFlow's) are not stored as cell output.
    import os

    import tests.conftest  # noqa: F401

    os.environ.setdefault("PYTEST_CURRENT_TEST", "tests/test_notebooks.py (storing)")
    for name in sys.argv[1:] or [str(p) for p in NOTEBOOKS]:
        nb = execute(Path(name))
        nbformat.write(nb, name)
        print(f"stored the outputs of {name}")
