"""`python -m bert_jax.main` as a new user meets it: a config under `~`, what it prints.

One tiny pretraining run (3 steps, no held-out set) from a config file in a
home folder named as `--config=~/exp/...`; its output has bert_jax's own lines
and a closing line saying where results and checkpoints are, not the
checkpoint library's INFO lines (`bert_jax.cli.quiet_logging`), which
--verbosity=1 brings back. docs/training.md quotes these outputs.
"""

from __future__ import annotations

import getpass
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from etils import epath

from bert_jax import main as bert_jax_main
from tests import train_data
from tests.cli_env import cli_env

REPO = Path(__file__).resolve().parents[1]
# The files bert_jax logs from; absl's line prefix names the file ("I1208 ... train.py:475]").
OWN_FILES = {p.name for p in (REPO / "bert_jax").rglob("*.py")}
LOG_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ (\S+?):\d+\]")


def library_lines(stderr: str) -> list[str]:
    """The absl log lines on stderr that come from files outside bert_jax."""
    return [
        line
        for line in stderr.splitlines()
        if (m := LOG_LINE.match(line)) and m.group(1) not in OWN_FILES
    ]


# The config of tests/test_workdir_rules.py's config-file run, so that both runs
# compile one program (the test session's compilation cache).
MY_CONFIG = """from bert_jax.configs import common


def get_config(arg=None):
    a = common.parse_arg(arg, steps=2)
    c = common.base_config()
    c.task = 'pretraining'
    c.model.size, c.model.vocab_size = 'tiny', 30522
    c.nsp, c.masked_lm_prob, c.whole_word_mask = True, 0.15, False
    c.max_seq_length, c.max_predictions_per_seq = 32, 5
    c.train_batch_size = c.eval_batch_size = 16
    c.num_train_steps, c.log_every, c.eval_every = a.steps, 1, 0
    c.optimizer.warmup_steps = 1
    c.data.train_files = {train_files!r}
    c.data.update(dict(eval_files='', embedded_dir='', vocab_file='',
                       do_lower_case=True, num_shards=0, shuffle_buffer=100))
    return c
"""


@pytest.fixture(scope="module")
def run(shared_data, tmp_path_factory):
    """A 3-step tiny pretraining run from `~/exp/my_pretrain.py` with HOME in a
    temporary folder: (workdir, its CompletedProcess)."""
    tmp = tmp_path_factory.mktemp("main_cli")
    records = train_data.write_records(shared_data, tmp / "records", n_train=48, n_eval=0)
    home = tmp / "home"
    (home / "exp").mkdir(parents=True)
    config = MY_CONFIG.format(train_files=records["train_files"])
    (home / "exp" / "my_pretrain.py").write_text(config)
    cmd = [
        sys.executable,
        "-m",
        "bert_jax.main",
        "--config=~/exp/my_pretrain.py:steps=3",  # as typed: a shell leaves `~` after `=`
        f"--workdir={tmp / 'run'}",
    ]
    env = cli_env(1) | {"HOME": str(home)}
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return tmp / "run", out


def test_config_under_home_runs_quietly_and_says_where_results_are(run):
    wd, out = run
    assert out.returncode == 0, out.stderr[-3000:]
    assert (wd / "results.json").is_file()
    last = out.stdout.splitlines()[-1]
    assert last == (
        f"bert_jax.main: done at step 3: results in {wd / 'results.json'}, "
        f"checkpoints in {wd / 'checkpoints'}"
    )
    assert library_lines(out.stderr) == [], out.stderr[-3000:]
    assert "Metadata file does not exist" not in out.stderr
    assert "Traceback" not in out.stderr


def test_verbosity_1_brings_library_lines_back(tmp_path):
    """jax's INFO lines (backend start, compiles), quiet in the run above, are back at
    --verbosity=1; a bad config value still ends the command with its one line."""
    cmd = [
        sys.executable,
        "-m",
        "bert_jax.main",
        "--config=configs/pretrain.py:tiny",
        "--config.log_every=0",
        f"--workdir={tmp_path / 'run'}",
        "--verbosity=1",
    ]
    out = subprocess.run(cmd, cwd=REPO, env=cli_env(1), capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert any("xla_bridge.py" in line for line in library_lines(out.stderr)), out.stderr[-3000:]
    error = "bert_jax.main: error: config key log_every=0: must be an integer >= 1"
    assert error in out.stderr.splitlines()


def test_closing_line_of_a_finished_workdir(tmp_path):
    results = tmp_path / "results.json"
    results.write_text('{"step": 60}')
    done = bert_jax_main.closing_line(epath.Path(results), None)
    again = bert_jax_main.closing_line(epath.Path(results), '{"step": 60}')
    where = f"results in {results}, checkpoints in {tmp_path / 'checkpoints'}"
    assert done == f"bert_jax.main: done at step 60: {where}"
    assert again == f"bert_jax.main: already finished at step 60: {where}"


@pytest.mark.parametrize(
    "config, message",
    [
        (
            "configs/pretrian.py:tiny",  # a typo
            r"bert_jax.main: error: --config: config file .*/configs/pretrian.py does not exist",
        ),
        (
            "configs/glue.py:task=sts",  # get_config raises
            r"bert_jax.main: error: flag --config=configs/glue.py:task=sts: "
            r"ValueError: unknown GLUE task 'sts'",
        ),
    ],
)
def test_config_file_errors_are_one_line(tmp_path, config, message):
    home = tmp_path / "home"
    home.mkdir()
    cmd = [sys.executable, "-m", "bert_jax.main", f"--config={config}", f"--workdir={tmp_path}/w"]
    env = cli_env(1) | {"HOME": str(home)}
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert len(out.stderr.splitlines()) == 1, out.stderr[-3000:]
    assert re.fullmatch(message + ".*\n", out.stderr), out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_expand_home_in_config_and_workdir(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "my.py").write_text("def get_config(arg=None): ...\n")
    user_home = os.path.expanduser("~" + getpass.getuser())  # ~user: the password database
    mine = Path(user_home) / "bert_jax_test_config.py"
    argv = ["main", "--config=~/my.py:lr=1e-4", "--config.x=~/kept", "--workdir", "~/runs/a"]
    assert bert_jax_main._expand_home(argv) == [
        "main",
        f"--config={tmp_path}/my.py:lr=1e-4",
        "--config.x=~/kept",  # an override's value is the config's business
        "--workdir",
        f"{tmp_path}/runs/a",
    ]
    argv = ["main", "--config", f"~{getpass.getuser()}/bert_jax_test_config.py"]
    with pytest.raises(SystemExit, match=f"config file {mine} does not exist"):
        bert_jax_main._expand_home(argv)
