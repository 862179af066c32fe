"""`python -m bert_jax.tools.predict` as a new user meets it (docs/tools.md).

On a 3-step tiny pretraining workdir (fill-mask), trained in this process:
the command prints its answers and nothing of its libraries; an unfinished
workdir is named with its step; an input the task cannot read, an empty
--text and a blank --input file are one-line errors naming the input.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bert_jax import cli, train
from bert_jax.tools import embed, predict
from tests import train_data
from tests.cli_env import cli_env
from tests.test_main_cli import library_lines

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def workdir(shared_data, tmp_path_factory):
    """A finished 3-step tiny pretraining run that keeps its vocab.txt."""
    tmp = tmp_path_factory.mktemp("predict_cli")
    records = train_data.write_records(shared_data, tmp / "records", n_train=48, n_eval=0)
    vocab = str(shared_data / "vocab" / "bert-base-uncased" / "vocab.txt")
    # tests/test_train.py's 8-device config: one program for both (the session's cache).
    train.run(train_data.tiny_config(records, **{"data.vocab_file": vocab}), str(tmp / "run"))
    return tmp / "run"


@pytest.fixture(scope="module")
def unfinished(workdir, tmp_path_factory):
    """The workdir as a run of 6 steps stopped after its step-3 checkpoint leaves it:
    no results.json."""
    wd = tmp_path_factory.mktemp("unfinished") / "run"
    shutil.copytree(workdir, wd)
    (wd / "results.json").unlink()
    config = json.loads((wd / "config.json").read_text())
    (wd / "config.json").write_text(json.dumps(config | {"num_train_steps": 6}))
    return wd


def _predict(*args):
    cmd = [sys.executable, "-m", "bert_jax.tools.predict", *map(str, args)]
    return subprocess.run(
        cmd, cwd=REPO, env=cli_env(1), capture_output=True, text=True, timeout=120
    )


def test_a_finished_workdir_prints_its_answers_only(workdir):
    out = _predict(f"--workdir={workdir}", "--text=The [MASK] is raised.")
    assert out.returncode == 0, out.stderr[-3000:]
    (line,) = out.stdout.splitlines()
    row = json.loads(line)
    assert row["text"] == "The [MASK] is raised." and len(row["masks"][0]["predictions"]) == 5
    assert library_lines(out.stderr) == [], out.stderr[-3000:]
    assert "Metadata file does not exist" not in out.stderr
    assert "unfinished" not in out.stderr


def test_unfinished_workdir_named_and_no_mask_one_line(unfinished):
    """The warning names the step; an input without [MASK] on a fill-mask workdir
    ends the command with one line naming it, exit status 1."""
    out = _predict(f"--workdir={unfinished}", "--text=The film is raised.")
    assert out.returncode == 1
    assert out.stdout == ""
    warning, error = out.stderr.splitlines()
    assert warning.startswith("W") and warning.endswith(
        f"] {unfinished} is unfinished: checkpoint at step 3 of 6"
    )
    assert error == ("bert_jax.tools.predict: error: --text 1: no [MASK] in 'The film is raised.'")


def test_empty_inputs_refused_blank_lines_counted(tmp_path, caplog):
    with pytest.raises(ValueError, match=r"^--text 2: empty text"):
        predict.gather_inputs(["a film", "  "], None)
    with pytest.raises(ValueError, match=r"^give --text or --input$"):
        predict.gather_inputs([], None)
    blank = tmp_path / "blank.txt"
    blank.write_text("\n \n")
    with pytest.raises(ValueError, match=rf"^--input {blank}: no text"):
        predict.gather_inputs(["a film"], str(blank))
    some = tmp_path / "some.txt"
    some.write_text("one\n\ntwo\n")
    with caplog.at_level(logging.WARNING):
        lines, where = predict.gather_inputs(["a film"], str(some))
    assert lines == ["a film", "one", "two"]
    assert where == ["--text 1", f"--input {some}:1", f"--input {some}:3"]
    assert [r.getMessage() for r in caplog.records] == [f"--input {some}: skipped 1 blank line(s)"]
    # A task's error names the input by its index in the batch.
    located = predict._located(ValueError("input 1: no [MASK] in 'x'"), where[1:])
    assert str(located) == f"--input {some}:3: no [MASK] in 'x'"


def test_embed_names_an_unfinished_workdir(workdir, unfinished, caplog):
    assert cli.unfinished(workdir) is None
    with caplog.at_level(logging.WARNING):
        embed.Embedder(unfinished, batch_size=1)
    messages = [r.getMessage() for r in caplog.records]
    assert f"{unfinished} is unfinished: checkpoint at step 3 of 6" in messages
    assert re.search("step 3 of 6", cli.unfinished(unfinished))


def test_quiet_filter_keeps_own_lines_and_warnings(workdir):
    """`bert_jax.cli`'s filter on records as absl makes them: bert_jax's INFO and a
    library's warning pass; a library's INFO and orbax's two warnings about a healthy
    checkpoint do not, the Metadata one only where the step's own metadata exists."""
    own = str(REPO / "bert_jax" / "train.py")
    orbax = "/venv/site-packages/orbax/checkpoint/_src/metadata/checkpoint.py"

    def passes(path, level, msg, *args):
        record = logging.LogRecord("absl", level, path, 1, msg, args, None)
        return cli.OwnLinesFilter().filter(record)

    item = workdir / "checkpoints" / "3" / "state" / "_CHECKPOINT_METADATA"
    assert (item.parent.parent / item.name).is_file()  # the step's own metadata
    metadata = "Metadata file does not exist: %s"
    assert passes(own, logging.INFO, "resumed from step %d", 3)
    assert passes(orbax, logging.WARNING, "a library's warning")
    assert not passes(orbax, logging.INFO, "Saving checkpoint at step %d", 3)
    assert not passes(orbax, logging.WARNING, metadata, item)
    assert passes(orbax, logging.WARNING, metadata, workdir / "nowhere" / "_CHECKPOINT_METADATA")
    assert not passes(orbax, logging.WARNING, cli.UNTRACKED_SAVE)
