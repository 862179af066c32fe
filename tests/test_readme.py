"""Every command in README.md, read out of it and run in a small form.

Each fenced ```bash command (continuation lines joined, comments dropped) and
each ```python block is one test, named by its journey (the bold title or
heading above it) and its index there, so a README that drifts from the code
fails naming the command. A command is run as written except for these
rewrites, applied as plain text substitutions (never to a flag name or a
module path, so a renamed flag or moved module fails here):

* `/ckpt/NAME` -> a folder built once per session: `bert-base-uncased` and
  `bert-base-cased` are a tiny random HF BERT (2 layers, hidden 32) with the
  real vocabularies; `uncased_L-12_H-768_A-12` is the same weights written as
  an original TF release; `all-MiniLM-L6-v2` and `minilm` are the installed
  real MiniLM (`minilm_dir`). Other names are outputs.
* `/data/NAME` -> the shared data's files cut to their first rows (SST-2, CoNLL-2003;
  SQuAD: two paragraphs of the real dev set to train on, a third as dev).
* `gs://BUCKET` -> a folder; `'tfds:...'` -> a local text corpus (SST-2
  sentences, 10 to a document).
* Sizes: `model=base` -> `model=tiny`; the GLUE sweep's `task=all` ->
  `task=sst2,seeds=1,lrs=5e-5` (one point); the demo gets `--num_train_steps=2
  --dupe_factor=1 --vocab_size=1000`; training commands (`bert_jax.main`,
  `experiments.sweep`) get SMALL_TRAINING appended (2 steps, batch 4).
* Cloud steps (`experiments.launch`) get `--dry_run` and must print the gcloud
  commands; `launch run`'s own command (after `--`) is then run here too.
* Installs (`pip install`) are not run: their extras must exist in setup.cfg.
  Command 2 (setup + tests) is not run: it must be `.ci/run`'s command.

Each command runs in one temporary working directory per journey (so `runs/...`
outputs of one command feed the next), in order: a test first runs the
journey's earlier commands if this process has not (tests may be split over
xdist workers). Every test checks what its command wrote or printed.
"""

import functools
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.cli_env import cli_env
from tests.numerics import assert_close

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

# Appended to every training command: 2 steps of 4 examples; a fine-tuning
# run reads 8 training examples, a pretraining run warms up for 1 step.
SMALL_TRAINING = (
    "--config.num_train_steps=2 --config.train_batch_size=4 --config.eval_batch_size=8 "
    "--config.log_every=1"
)
SMALL_FINETUNING = " --config.data.max_train_examples=8"
SMALL_PRETRAINING = " --config.optimizer.warmup_steps=1"  # the recipe's 10k exceed 2 steps


@dataclass(frozen=True)
class Command:
    journey: str
    index: int
    kind: str  # "bash" or "python"
    text: str

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.journey.lower()).strip("-")
        return f"{slug}-{self.index}"


def readme_commands(text: str) -> list[Command]:
    """The README's commands: one per bash command line, one per python block."""
    out, journey, counts = [], "", {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            journey = line[3:].strip()
        elif m := re.match(r"\*\*(.+?)\*\*", line):
            journey = m.group(1).rstrip(".,")
        elif m := re.match(r"```(bash|python)$", line):
            kind, block = m.group(1), []
            i += 1
            while lines[i] != "```":
                block.append(lines[i])
                i += 1
            if kind == "python":
                texts = ["\n".join(block)]
            else:
                texts = []
                for raw in re.sub(r"\\\n\s*", "", "\n".join(block)).splitlines():
                    cmd = re.sub(r"\s+#\s.*$", "", raw).strip()
                    if cmd and not cmd.startswith("#"):
                        texts.append(cmd)
            for t in texts:
                n = counts.get(journey, 0)
                counts[journey] = n + 1
                out.append(Command(journey, n, kind, t))
        i += 1
    return out


COMMANDS = readme_commands(README.read_text())


def test_the_readme_has_the_journeys_this_file_runs():
    """Parsing sanity: a README reshuffle that hides commands from the tests fails here."""
    journeys = {c.journey for c in COMMANDS}
    assert len(COMMANDS) >= 20, [c.id for c in COMMANDS]
    assert {"The two commands", "Install"} <= journeys, journeys
    assert any(c.kind == "python" for c in COMMANDS)
    for c in COMMANDS:
        assert "\\\n" not in c.text and c.text.strip(), c


# ---------------------------------------------------------------------------
# The small world the commands run in: checkpoints, data, a corpus, a bucket.


def _tiny_hf(d: Path, vocab: Path, lower: bool):
    import torch
    import transformers

    torch.manual_seed(0)
    size = len(vocab.read_text(encoding="utf-8").splitlines())
    config = transformers.BertConfig(
        vocab_size=size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512,
    )  # fmt: skip
    transformers.BertForPreTraining(config).save_pretrained(d)
    shutil.copy(vocab, d / "vocab.txt")
    (d / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": lower}))


def _head_lines(src: Path, dst: Path, n: int):
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, encoding="utf-8") as f:
        dst.write_text(
            "".join(line for _, line in zip(range(n), f, strict=False)), encoding="utf-8"
        )


def _conll_head(src: Path, dst: Path, sentences: int):
    out, n = [], 0
    for line in src.read_text(encoding="utf-8").splitlines(keepends=True):
        out.append(line)
        if not line.strip():
            n += 1
            if n > sentences:  # the -DOCSTART- block counts as one
                break
    dst.write_text("".join(out), encoding="utf-8")


@pytest.fixture(scope="session")
def world(tmp_path_factory, shared_data, minilm_dir):
    """{"/ckpt": ..., "/data": ..., "gs://BUCKET": ..., "tfds": corpus} folders."""
    from tests.checkpoint_sources import write_tf_checkpoint

    root = tmp_path_factory.mktemp("readme_world")
    ckpt, data = root / "ckpt", root / "data"
    vocabs = shared_data / "vocab"
    _tiny_hf(ckpt / "bert-base-uncased", vocabs / "bert-base-uncased" / "vocab.txt", True)
    _tiny_hf(ckpt / "bert-base-cased", vocabs / "bert-base-cased" / "vocab.txt", False)
    tf_dir = ckpt / "uncased_L-12_H-768_A-12"
    write_tf_checkpoint(tf_dir, ckpt / "bert-base-uncased")
    shutil.copy(ckpt / "bert-base-uncased" / "vocab.txt", tf_dir / "vocab.txt")
    for name in ("all-MiniLM-L6-v2", "minilm"):
        (ckpt / name).symlink_to(minilm_dir)
    # GLUE: SST-2 only (the sweep's one point), first rows of each split.
    for split, n in (("train", 33), ("dev", 17), ("test", 17)):
        _head_lines(
            shared_data / "glue/SST-2" / f"{split}.tsv", data / "glue/SST-2" / f"{split}.tsv", n
        )
    (data / "conll2003").mkdir(parents=True)
    for split in ("train", "valid", "test"):
        _conll_head(
            shared_data / "conll2003" / f"{split}.txt", data / "conll2003" / f"{split}.txt", 8
        )
    dev = json.loads((shared_data / "squad/v1.1/dev-v1.1.json").read_text(encoding="utf-8"))
    article = dev["data"][0]

    def squad(paragraphs):
        return {"version": dev["version"], "data": [{**article, "paragraphs": paragraphs}]}

    (data / "squad").mkdir()
    (data / "squad/train-v1.1.json").write_text(json.dumps(squad(article["paragraphs"][:2])))
    (data / "squad/dev-v1.1.json").write_text(json.dumps(squad(article["paragraphs"][2:3])))
    sentences = [
        line.split("\t")[0].strip()
        for line in (shared_data / "glue/SST-2/train.tsv").read_text().splitlines()[1:401]
    ]
    corpus = root / "corpus.txt"
    corpus.write_text("".join("\n".join(sentences[i : i + 10]) + "\n\n" for i in range(0, 400, 10)))
    (root / "bucket").mkdir()
    return {"/ckpt": ckpt, "/data": data, "gs://BUCKET": root / "bucket", "tfds": corpus}


def small_form(cmd: str, world) -> str:
    """The README command with the module docstring's rewrites applied."""
    if "bert_jax.experiments.launch " in cmd:  # printed only, gs:// kept (multi-host needs it)
        head, sep, tail = cmd.partition(" -- ")
        return f"{head} --dry_run{sep}{tail}"
    s = cmd.replace("gs://BUCKET", str(world["gs://BUCKET"]))
    s = re.sub(r"(?<![\w.])/ckpt/", f"{world['/ckpt']}/", s)
    s = re.sub(r"(?<![\w.])/data/", f"{world['/data']}/", s)
    s = re.sub(r"'tfds:[^']*'", str(world["tfds"]), s)
    s = s.replace("model=base", "model=tiny")
    s = s.replace("glue_paper.py:task=all", "glue_paper.py:task=sst2,seeds=1,lrs=5e-5")
    if "bert_jax.perf.aot " in s:
        s += " --config.train_batch_size=16"  # model=tiny keeps base's batch of 256
    if "bert_jax.tools.demo" in s:
        s += " --num_train_steps=2 --dupe_factor=1 --vocab_size=1000"
    if re.search(r"bert_jax\.(main|experiments\.sweep) ", s):
        s += " " + SMALL_TRAINING
        s += SMALL_PRETRAINING if "configs/pretrain.py" in s else SMALL_FINETUNING
    return s


def run(cmd: str, cwd: Path, kind: str = "bash") -> subprocess.CompletedProcess:
    argv = ["bash", "-c", cmd] if kind == "bash" else [sys.executable, "-c", cmd]
    env = cli_env(1)
    env["PYTHONPATH"] = str(REPO)  # configs/ and experiments/ as the README's cwd has them
    # The commands' relative paths (configs/..., experiments/...) are the
    # repository's; their outputs (runs/...) go to the journey's folder.
    for name in ("configs", "experiments"):
        if not (cwd / name).exists():
            (cwd / name).symlink_to(REPO / name)
    out = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, (
        f"{cmd}\nexit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-4000:]}"
    )
    return out


@functools.cache
def _journey_dir(journey: str, root: str) -> Path:
    d = Path(root) / re.sub(r"[^a-z0-9]+", "-", journey.lower()).strip("-")
    d.mkdir(parents=True)
    return d


# Files a user brings to a command (its inputs), written before it runs.
USER_FILES = {"tools.embed": {"texts.txt": "a gorgeous, witty film\nthe plot is dull\n"}}

_done: dict[str, subprocess.CompletedProcess] = {}


def to_run(c: Command) -> str | None:
    """The part of a command this file runs: not installs, only command 1's demo."""
    if c.text.startswith("pip "):
        return None
    if c.text.startswith("python3 -m venv"):
        last = c.text.rpartition("&& ")[2]
        return last if "tools.demo" in last else None
    return c.text


def run_journey_until(c: Command, world) -> tuple[subprocess.CompletedProcess, Path]:
    """Run `c` (and first the journey's earlier commands, once per process)."""
    cwd = _journey_dir(c.journey, str(world["gs://BUCKET"].parent / "journeys"))
    for other in COMMANDS:
        text = to_run(other)
        if other.journey != c.journey or other.index > c.index or text is None:
            continue
        if other.id not in _done:
            for module, files in USER_FILES.items():
                if module in text:
                    for name, content in files.items():
                        (cwd / name).write_text(content)
            _done[other.id] = run(small_form(text, world), cwd, other.kind)
    return _done[c.id], cwd


# ---------------------------------------------------------------------------
# One test per README command.


def _records(pattern: str, folder: Path) -> int:
    import tensorflow as tf

    files = sorted(str(p) for p in folder.glob(pattern))
    return sum(1 for _ in tf.data.TFRecordDataset(files)) if files else 0


def check(c: Command, out: subprocess.CompletedProcess, cwd: Path, world) -> None:
    """What each command must have written or printed."""
    t, bucket = c.text, world["gs://BUCKET"]
    if "tools.demo" in t:
        assert "held-out MLM accuracy" in out.stdout, out.stdout
        assert (cwd / "runs/demo/bert_tiny").is_dir()
    elif "create_pretraining_data" in t:
        files = sorted((bucket / "wiki128").glob("train-*.tfrecord"))
        assert len(files) == 256, len(files)
        assert _records("train-*.tfrecord", bucket / "wiki128") > 0
    elif "bert_jax.perf.aot" in t:
        report = json.loads(out.stdout.strip().splitlines()[-1])
        assert report["fits"] is True, report
    elif "experiments.launch" in t:
        printed = out.stdout.strip().splitlines()
        assert printed and all(line.startswith(("gcloud ", "git ")) for line in printed), printed
        if " -- " in t:  # launch run: its command reaches the workers, then runs here
            assert any("bert_jax.main" in line for line in printed), printed
            inner = small_form(t.partition(" -- ")[2], world)
            run(inner, cwd)
            assert (bucket / "runs/base-p1/checkpoints/2").is_dir()
    elif "experiments.sweep" in t:
        results = list((cwd / "runs/glue").glob("*/results.json"))
        assert len(results) == 1, results
        assert "eval/accuracy" in json.loads(results[0].read_text())["metrics"]
    elif "experiments.results" in t:
        assert "sst2" in (cwd / "runs/glue/results/results.md").read_text().lower()
        rows = (cwd / "runs/glue/submit/SST-2.tsv").read_text().splitlines()
        assert len(rows) == 1 + 16, rows[:3]  # header + the cut test split
    elif "bert_jax.main" in t and "configs/glue.py" in t:
        results = json.loads((cwd / "runs/sst2-quick/results.json").read_text())
        assert results["step"] == 2 and "eval/accuracy" in results["metrics"], results
    elif "bert_jax.main" in t and "squad" in t:
        predictions = json.loads((cwd / "runs/squad11/predictions.json").read_text())
        dev = json.loads((world["/data"] / "squad/dev-v1.1.json").read_text())
        questions = {q["id"] for p in dev["data"][0]["paragraphs"] for q in p["qas"]}
        assert set(predictions) == questions
    elif "metrics.squad" in t:
        scores = json.loads(out.stdout)
        assert set(scores) >= {"exact_match", "f1"}, scores
    elif "bert_jax.main" in t and "ner" in t:
        assert "eval/f1" in json.loads((cwd / "runs/ner/results.json").read_text())["metrics"]
    elif "tools.predict" in t:
        row = json.loads(out.stdout.strip().splitlines()[-1])
        assert "entities" in row, row
    elif "tools.embed" in t:
        emb = np.load(cwd / "emb.npy")
        assert emb.shape == (2, 384) and emb.dtype == np.float32
        assert_close(np.linalg.norm(emb, axis=1), [1.0, 1.0], atol=1e-5)
    elif "export_hf" in t:
        assert (world["/ckpt"] / "bert_jax-base").is_dir()
        assert (world["/ckpt"] / "hf-base" / "config.json").is_file()
        assert (world["/ckpt"] / "hf-base" / "vocab.txt").is_file()
    elif "attention_view" in t:
        assert "<script" in (cwd / "head.html").read_text()
    else:
        raise AssertionError(f"no check for this README command; add one: {t}")


def _setup_cfg_extras() -> set[str]:
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return set(cfg["options.extras_require"])


@pytest.mark.parametrize("c", COMMANDS, ids=[c.id for c in COMMANDS])
def test_readme_command(c, request):
    text = to_run(c)
    if text is None and "pytest" in c.text:  # command 2: what CI runs
        ci = (REPO / ".ci/run").read_text().splitlines()
        assert c.text in ci, ".ci/run must run the README's command 2 as written"
    elif text is None:  # an install: the extras it names exist, nothing else in it
        for extra in re.findall(r"\.\[(\w+)\]", c.text):
            assert extra in _setup_cfg_extras(), extra
        assert re.fullmatch(
            r'(python3 -m venv .*&& )?pip install (-U |-e |-q )*("[^"]+"|\.)', c.text
        ), c.text
    else:
        world = request.getfixturevalue("world")
        out, cwd = run_journey_until(c, world)
        check(Command(c.journey, c.index, c.kind, text), out, cwd, world)
