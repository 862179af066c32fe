"""Bad-input catalogue, the real commands: one message on stderr, a non-zero exit, no output.

A few cases of `tests/test_bad_input_catalogue.py` and
`tests/test_bad_input_checkpoints.py` again, through `python -m ...` (each
costs seconds of imports; the in-process cases cover the rest). The output
each command would write must not exist afterwards, nor anything else new.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from tests.bad_input_cases import snapshot, vocab_file, write

REPO = pathlib.Path(__file__).resolve().parents[1]
LATIN1 = b"a good film\nun caf\xe9 fort\n"
CORPUS = b"First.\n\nSecond caf\xe9.\n"
BLANK = b"\n\n \n"


def _run(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    before = snapshot(tmp_path)
    cmd = [sys.executable, "-m", *map(str, args)]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert snapshot(tmp_path) == before, "the failure left files behind"
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    return out


def _glue(tmp_path, *overrides):
    return (
        "bert_jax.main",
        "--config=configs/glue.py:task=sst2,model=tiny,tiny",
        f"--config.data.vocab_file={vocab_file(tmp_path)}",
        *overrides,
    )


CASES = {
    "cli_main_log_every_zero": (
        lambda t: (*_glue(t, "--config.log_every=0"), f"--workdir={t / 'run'}"),
        r"bert_jax.main: error: config key log_every=0: must be an integer >= 1",
    ),
    "cli_main_config_key_misspelled": (
        lambda t: (*_glue(t, "--config.log_evry=10"), f"--workdir={t / 'run'}"),
        r"bert_jax.main: error: a --config override: unknown or bad key 'log_evry': "
        r'Did you mean "log_every" instead of "log_evry"',
    ),
    "cli_main_workdir_read_only": (
        lambda t: (*_glue(t), f"--workdir={_read_only(t)}"),
        r"bert_jax.main: error: workdir .*run is not writable",
    ),
    "cli_create_pretraining_data_latin1_corpus": (
        lambda t: (
            "bert_jax.data.pretraining.create_pretraining_data",
            f"--input_file={write(t / 'corpus.txt', CORPUS)}",
            f"--output_file={t / 'train.tfrecord'}",
            f"--vocab_file={vocab_file(t)}",
            "--num_workers=1",
        ),
        r"create_pretraining_data: error: .*corpus.txt:3: not UTF-8",
    ),
    "cli_build_vocab_blank_corpus": (
        lambda t: (
            "bert_jax.data.pretraining.build_vocab",
            f"--input_file={write(t / 'corpus.txt', BLANK)}",
            f"--output_file={t / 'vocab.txt'}",
        ),
        r"build_vocab: error: .*corpus.txt: no documents",
    ),
    "cli_predict_input_latin1": (
        lambda t: (
            "bert_jax.tools.predict",
            f"--workdir={t}",
            f"--input={write(t / 'inputs.txt', LATIN1)}",
        ),
        r"bert_jax.tools.predict: error: --input .*inputs.txt:2: not UTF-8",
    ),
    "cli_embed_input_latin1": (
        lambda t: (
            "bert_jax.tools.embed",
            f"--checkpoint={t}",
            f"--input={write(t / 'texts.txt', LATIN1)}",
            f"--output={t / 'out.npy'}",
        ),
        r"bert_jax.tools.embed: error: --input .*texts.txt: line 2 is not UTF-8",
    ),
}


def _read_only(tmp):
    if os.geteuid() == 0:  # root ignores modes; /sys refuses new folders
        return pathlib.Path("/sys/bert_jax_workdir/run")
    ro = tmp / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    return ro / "run"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_ends_the_command_with_a_message(case, tmp_path):
    args, message = CASES[case]
    out = _run(tmp_path, *args(tmp_path))
    assert out.returncode != 0
    assert re.search(message, out.stderr), out.stderr[-3000:]
