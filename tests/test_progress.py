"""Progress bars: rate and ETA on a terminal, nothing when the output is a pipe or a file.

The terminal is a real pseudo-terminal (`pty`) for the command-line runs, and
an in-memory stream that says it is a terminal for the in-process ones
(trainer, evaluation, data tools), with the first-draw delay set to 0.
"""

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bert_jax import train
from bert_jax.data import progress
from bert_jax.data.array_source import ArraySource
from bert_jax.data.pretraining import create_pretraining_data, pack_records
from bert_jax.data.pretraining import instances as recipe
from bert_jax.tasks.base import EvalSet
from tests import train_data

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
# A tqdm frame's counters: "[elapsed<remaining, rate]" or, without a total, "[elapsed, rate]".
ELAPSED, ETA = r"\d\d:\d\d", r"<\d\d:\d\d"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _terminal(monkeypatch) -> _Terminal:
    """Makes stderr a terminal, where bars draw at once. Called in the test itself:
    pytest puts its own capture back on sys.stderr after the fixtures."""
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.setattr(progress, "DELAY_S", 0.0)
    return term


def _on_terminal(cmd: list[str], timeout: float = 120) -> str:
    """Runs `cmd` with stdout and stderr on a 100-column pseudo-terminal; all it wrote."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=ENV, stdin=subprocess.DEVNULL, stdout=child, stderr=child
    )
    os.close(child)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while select.select([main], [], [], max(deadline - time.monotonic(), 0))[0]:
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: the command closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(main)
    out = b"".join(chunks).decode("utf-8", "replace")
    assert proc.wait(timeout=max(deadline - time.monotonic(), 1)) == 0, out[-3000:]
    return out


def _lines(text: str) -> list[str]:
    """What a terminal would show line by line, one entry per redraw."""
    return [s for s in re.split(r"[\r\n]+", text) if s.strip()]


def test_build_vocab_bar_on_a_terminal_and_quiet_in_a_pipe(tmp_path):
    def cmd(out):
        return [
            sys.executable,
            "-m",
            "bert_jax.data.pretraining.build_vocab",
            "--embedded_corpus",
            f"--output_file={out}",
            "--vocab_size=1000",
        ]

    piped = subprocess.Popen(
        cmd(tmp_path / "piped.txt"),
        cwd=REPO,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    shown = _on_terminal(cmd(tmp_path / "terminal.txt"))
    out, err = piped.communicate(timeout=120)
    assert piped.returncode == 0, err
    # Reading the stdlib's documentation takes seconds: count and rate (a stream has no total).
    frame = rf"reading: [\d.]+k? sentences \[{ELAPSED}, [\d.]+k? sentences/s\]"
    assert re.search(frame, shown), shown[-2000:]
    assert "wrote 1000 tokens" in shown and "Pre-processing" not in shown  # not HF's bars too
    assert "\r" not in err and "reading" not in err and "/s]" not in err, err
    assert out.startswith("read 464 documents") and "wrote 1000 tokens" in out, out


def test_absl_log_lines_and_printed_lines_go_above_the_bar():
    script = textwrap.dedent(
        """
        from absl import app, logging
        from bert_jax.data import progress

        def main(argv):
            progress.DELAY_S = 0
            with progress.bar(total=3, desc="work", unit="step", mininterval=0) as bar:
                for i in range(3):
                    bar.update()
                    logging.info("log line %d", i)
                    progress.write(f"printed line {i}")

        app.run(main)
        """
    )
    lines = _lines(_on_terminal([sys.executable, "-c", script]))
    for i in range(3):
        (log,) = [s for s in lines if f"log line {i}" in s]
        (printed,) = [s for s in lines if f"printed line {i}" in s]
        assert "work" not in log and "work" not in printed, lines
    assert any(re.search(rf"work: 100%\|.*\| 3/3 \[{ELAPSED}{ETA}, ", s) for s in lines), lines


def test_quiet_without_a_terminal_and_write_is_print(capsys):
    with progress.bar(total=4, desc="quiet", unit="step") as bar:
        bar.update(3)
        bar.set_postfix_str("loss 1.0")
    assert list(progress.bar(range(3), desc="quiet")) == [0, 1, 2]
    progress.write("a line")
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == "a line\n"


def test_only_process_0_of_a_multi_host_run_draws(monkeypatch):
    terminal = _terminal(monkeypatch)
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    with progress.bar(total=1, desc="one process") as bar:  # jax.distributed not initialized
        assert not bar.disable
        bar.update()
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
    for index in (0, 1):
        monkeypatch.setattr(jax, "process_index", lambda index=index: index)
        with progress.bar(total=1, desc=f"host {index}") as bar:
            assert bool(bar.disable) == (index == 1)
            bar.update()
    shown = terminal.getvalue()
    assert "one process" in shown and "host 0" in shown and "host 1" not in shown


def test_evaluation_pass_shows_its_batches(monkeypatch):
    terminal = _terminal(monkeypatch)
    rows = np.arange(10, dtype=np.int32)[:, None]
    eval_set = EvalSet(ArraySource.for_eval({"x": rows}, 4))  # 3 batches, the last padded
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))

    def eval_fn(params, batch):
        return {"sum": jnp.sum(batch["x"][:, 0] * batch["valid"])}

    stats = train.evaluate(eval_fn, None, eval_set, NamedSharding(mesh, PartitionSpec("data")))
    assert stats["sum"] == 45
    assert re.search(rf"eval: 100%\|.*\| 3/3 \[{ELAPSED}{ETA}, ", terminal.getvalue())


def test_trainer_shows_steps_rate_eta_and_loss(monkeypatch, capsys, shared_data, tmp_path):
    terminal = _terminal(monkeypatch)
    records = train_data.write_records(shared_data, tmp_path / "records", 64, 16)
    train.run(train_data.tiny_config(records), str(tmp_path / "wd"), devices=jax.devices()[:1])
    frame = rf"train: 100%\|.*\| 3/3 \[{ELAPSED}{ETA}, +[\d.]+(s/step|step/s), loss [\d.]+\]"
    assert re.search(frame, terminal.getvalue()), terminal.getvalue()[-2000:]
    assert "step 3/3 loss" in capsys.readouterr().out  # the printed log rows stay


def test_data_tools_show_progress_and_write_the_same_files(monkeypatch, shared_data, tmp_path):
    terminal = _terminal(monkeypatch)
    # create_pretraining_data: 60 real documents of SST-2 sentences, 3 blocks.
    sst2 = (shared_data / "glue" / "SST-2" / "train.tsv").read_text(encoding="utf-8")
    sentences = [line.split("\t")[0] for line in sst2.splitlines()[1:601]]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join("\n".join(sentences[i : i + 10]) + "\n\n" for i in range(0, 600, 10)))
    vocab = str(shared_data / "vocab" / "bert-base-uncased" / "vocab.txt")
    config = recipe.RecipeConfig(max_seq_length=64, max_predictions_per_seq=10, dupe_factor=2)
    outputs = {}
    for name, stderr in (("terminal", terminal), ("pipe", io.StringIO())):
        monkeypatch.setattr(sys, "stderr", stderr)
        out = tmp_path / f"{name}.tfrecord"
        counts = create_pretraining_data.run(
            [str(corpus)], [str(out)], vocab, config, num_workers=1, docs_per_block=20
        )
        outputs[name] = out.read_bytes()
    assert outputs["terminal"] == outputs["pipe"] and stderr.getvalue() == ""
    examples = f"{counts['examples']:,}"
    frame = rf"documents: 60\.0 docs \[{ELAPSED}, [\d.]+k? docs/s, {examples} examples, input 1/1\]"
    assert re.search(frame, terminal.getvalue()), terminal.getvalue()[-2000:]

    # pack_records: 80 examples in blocks of 32.
    monkeypatch.setattr(sys, "stderr", terminal)
    train_data.write_records(shared_data, tmp_path / "records", 64, 16)
    inputs = sorted(str(p) for p in (tmp_path / "records").glob("*.tfrecord"))
    stats = pack_records.run(inputs, [str(tmp_path / "packed.tfrecord")], 32, 5, 3, block=32)
    frame = rf"packing: 80\.0 examples \[{ELAPSED}, [\d.]+k? examples/s, {stats.rows} rows\]"
    assert re.search(frame, terminal.getvalue()), terminal.getvalue()[-2000:]
