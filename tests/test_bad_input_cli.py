"""Bad-input catalogue, the real commands: every case that has a command, run as a user would.

Each case of `tests/test_bad_input_catalogue.py` and
`tests/test_bad_input_checkpoints.py` whose input a command reads is built
again (its `make`) and given to that command (`python -m ...`);
`tests.bad_input_cases.run_command` asserts exit status 1, one
`<prog>: error: ...` line matching the case's message, no traceback, the
case's folder, the working directory and TMPDIR unchanged (content hashes)
and an XLA cache that stays empty (nothing compiled). `EVERY_RUN` names the
cases every test session runs (one per command and reader);
BERT_JAX_ALL_COMMAND_CASES=1 runs all of them. docs/bad_input.md lists every
case with its command.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from tests import test_bad_input_catalogue as data_cases
from tests import test_bad_input_checkpoints as ckpt_cases
from tests.bad_input_cases import (
    REPO,
    VOCAB,
    command_env,
    run_command,
    snapshot,
    vocab_file,
    write,
)
from tests.test_bad_input_checkpoints import _use, sources  # noqa: F401 (fixtures)

MAIN = "bert_jax.main"
CPD = "bert_jax.data.pretraining.create_pretraining_data"
VOCAB_TOOL = "bert_jax.data.pretraining.build_vocab"
EMBED = "bert_jax.tools.embed"
PREDICT = "bert_jax.tools.predict"


def _main(spec: str, *overrides: str):
    """`bert_jax.main` on a tiny config, with the case's folder as `d` in overrides."""

    def args(d, bad):
        values = [o.format(d=d, bad=bad, vocab=vocab_file(d)) for o in overrides]
        return [MAIN, f"--config={REPO / 'configs' / spec}", *values, f"--workdir={d / 'run'}"]

    return args


def _cpd(input_file: str = "{bad}", vocab: str = "{vocab}"):
    def args(d, bad):
        fields = dict(d=d, bad=bad, vocab=vocab_file(d))
        if input_file != "{bad}":
            write(d / "corpus.txt", "One sentence .\nTwo sentences .\n\nA new document .\n")
        return [
            CPD,
            f"--input_file={input_file.format(**fields)}",
            f"--output_file={d / 'out' / 'train.tfrecord'}",
            f"--vocab_file={vocab.format(**fields)}",
            "--num_workers=1",
        ]

    return args


_GLUE = ("glue.py:task=sst2,model=tiny,tiny", "--config.data.vocab_file={vocab}")
_DATA_DIR = "--config.data.data_dir={d}"
_FT = ("--config.data.vocab_file={vocab}", _DATA_DIR)
_TFRECORD = (
    "pretrain.py:model=tiny,tiny",
    "--config.data.train_files={d}/good.tfrecord",
    "--config.data.eval_files={bad}",
    f"--config.max_seq_length={data_cases.L}",
    f"--config.max_predictions_per_seq={data_cases.P}",
)

# case -> (the case's `make`, command args(d, bad), prog, message regex, compiles)
DATA = {
    **{n: _main(*_GLUE, _DATA_DIR) for n in data_cases.CASES if n.startswith("glue_")},
    "glue_stsb_score_outside_range": _main(
        "glue.py:task=stsb,model=tiny,tiny", "--config.data.vocab_file={vocab}", _DATA_DIR
    ),
    "table_wrong_column_count": _main(
        "classify.py:model=tiny,tiny",
        "--config.data.vocab_file={vocab}",
        "--config.data.train_file={bad}",
        "--config.data.eval_file={bad}",
    ),
    **{n: _main("squad.py:model=tiny,tiny", *_FT) for n in data_cases.CASES if "squad" in n},
    **{n: _main("ner.py:model=tiny,tiny", *_FT) for n in data_cases.CASES if "conll" in n},
    "corpus_latin1_bytes": _cpd(),
    "corpus_empty_documents_only": _cpd(),
    **{n: _cpd("{d}/corpus.txt", "{bad}") for n in data_cases.CASES if n.startswith("vocab_")},
}
TFRECORD = {n: _main(*_TFRECORD) for n in data_cases.TFRECORD_CASES}


def _embed_checkpoint(d, bad):
    """`embed --checkpoint`: the case's checkpoint, with the tokenizer embed reads
    first (the TF and bert_jax sources have none: the vocabulary is added)."""
    ckpt = next(p for p in (d / f for f in ("hf", "tf", "bert_jax")) if p.exists())
    if not (ckpt / "vocab.txt").exists():
        write(ckpt / "vocab.txt", "\n".join(VOCAB) + "\n")
    texts = write(d / "texts.txt", "a good film\n")
    out = d / "out.npy"
    return [EMBED, f"--checkpoint={ckpt}", f"--input={texts}", f"--output={out}", "--max_length=16"]


def _config(**overrides):
    return _main(*_GLUE, *(f"--config.{k}={v}" for k, v in overrides.items()))


CONFIG = {
    "config_log_every_zero": _config(log_every=0),
    "config_negative_train_batch_size": _config(train_batch_size=-8),
    "config_num_train_steps_zero": _config(num_train_steps=0),
    "config_mesh_shape_with_zero": _config(mesh_shape="(0,1,1)"),
    "config_on_bad_input_unknown_value": _config(**{"data.on_bad_input": "warn"}),
    "config_init_checkpoint_missing": _config(init_checkpoint="/nonexistent/ckpt"),
    "config_eval_batch_size_zero": _config(eval_batch_size=0),
    "config_learning_rate_negative": _config(**{"optimizer.learning_rate": -1e-3}),
    "config_warmup_proportion_above_one": _config(**{"optimizer.warmup_proportion": 1.5}),
    "config_hidden_dropout_one": _config(**{"model.hidden_dropout": 1.0}),
    "config_grad_accum_steps_zero": _config(**{"optimizer.grad_accum_steps": 0}),
    "config_num_layers_zero": _config(**{"model.num_layers": 0}),
    "config_hidden_size_not_divisible_by_heads": _config(
        **{"model.hidden_size": 100, "model.num_heads": 3}
    ),
    "config_max_seq_length_one": _config(max_seq_length=1),
    "config_keep_checkpoints_zero": _config(keep_checkpoints=0),
    "config_dcn_mesh_shape_with_zero": _config(dcn_mesh_shape="(1,0,1)"),
    **{
        n: _config(**{"model.dtype": alias})
        for alias in ckpt_cases.DTYPE_ALIASES
        for n in [f"config_dtype_{alias.replace('.', '_')}"]
    },
    "config_param_dtype_unknown": _config(**{"model.param_dtype": "float8"}),
    "config_data_dir_missing": _config(**{"data.data_dir": "/nonexistent/glue"}),
    "config_data_dir_with_a_bad_tsv": _config(**{"data.data_dir": "{d}"}),
    "config_bad_dev_tsv_with_an_existing_workdir": _config(**{"data.data_dir": "{d}"}),
}


def _predict(d, bad):
    return [PREDICT, f"--workdir={d / 'run'}", f"--input={bad}"]


def _predict_workdir(d, bad):
    texts = write(d / "inputs.txt", "a good film\n")
    return [PREDICT, f"--workdir={bad}", f"--input={texts}"]


def _embed(d, bad):
    ckpt = d / "hf" if (d / "hf").exists() else d
    return [EMBED, f"--checkpoint={ckpt}", f"--input={bad}", f"--output={d / 'out.npy'}"]


COMMAND = {
    "predict_input_latin1_bytes": _predict,
    "predict_workdir_that_is_not_a_workdir": _predict_workdir,
    "predict_workdir_truncated_task_json": _predict_workdir,
    "embed_input_latin1_bytes": _embed,
    "embed_input_without_text": _embed,
    "embed_checkpoint_without_vocab": _embed,
}

PROGS = {MAIN: MAIN, CPD: CPD, VOCAB_TOOL: VOCAB_TOOL, EMBED: EMBED, PREDICT: PREDICT}

ALL = {
    **{n: (data_cases.CASES[n], a) for n, a in DATA.items()},
    **{n: (data_cases.TFRECORD_CASES[n], a) for n, a in TFRECORD.items()},
    **{n: (ckpt_cases.CHECKPOINT_CASES[n], _embed_checkpoint) for n in ckpt_cases.CHECKPOINT_CASES},
    # Not a checkpoint folder at all: what `--config.init_checkpoint` gets checked for.
    "checkpoint_path_is_a_file": (
        ckpt_cases.CHECKPOINT_CASES["checkpoint_path_is_a_file"],
        _config(init_checkpoint="{bad}"),
    ),
    "checkpoint_folder_of_no_known_format": (
        ckpt_cases.CHECKPOINT_CASES["checkpoint_folder_of_no_known_format"],
        _config(init_checkpoint="{bad}"),
    ),
    **{n: (ckpt_cases.CONFIG_CASES[n], a) for n, a in CONFIG.items()},
    **{n: (ckpt_cases.COMMAND_CASES[n], a) for n, a in COMMAND.items()},
}


# Known gaps, each failing one assertion of `run_command` (strict: fixed, they fail).
KNOWN = {
    "hf_tensor_of_wrong_shape": (
        "compiles before refusing: pretrained.load converts the HF tensors with jnp ops "
        "(broadcast_in_dim, convert_element_type) before it compares their shapes with the "
        "model's; comparing the safetensors header's shapes first would fix it"
    ),
    "bert_jax_params_data_truncated": (
        "tracebacks after the error line: orbax's failed restore leaves callbacks for its "
        "closed asyncio loop, printed at exit as 'RuntimeError: Event loop is closed'; "
        "pretrained.load closing the restore's checkpointer before raising would fix it"
    ),
}

# One case per command and reader (or per check) runs in every test session: each
# command costs ~2 CPU-s of imports, and the rows of one reader reach the command
# through the same path (`bad_input.command_errors`). BERT_JAX_ALL_COMMAND_CASES=1
# runs every case of ALL (docs/bad_input.md).
EVERY_RUN = (
    "glue_latin1_bytes",
    "table_wrong_column_count",
    "squad_truncated_json",
    "conll_tag_outside_scheme",
    "corpus_latin1_bytes",
    "vocab_missing_special_tokens",
    "tfrecord_truncated",
    "hf_truncated_safetensors",
    "tf_truncated_data_file",
    "bert_jax_truncated_json",
    "checkpoint_path_is_a_file",
    "config_log_every_zero",
    "config_grad_accum_steps_zero",
    "config_hidden_size_not_divisible_by_heads",
    "config_dtype_bf16",
    "config_data_dir_missing",
    "config_bad_dev_tsv_with_an_existing_workdir",
    "predict_input_latin1_bytes",
    "predict_workdir_truncated_task_json",
    "embed_input_latin1_bytes",
    "embed_checkpoint_without_vocab",
)
assert set(EVERY_RUN) <= set(ALL)
SELECTED = list(ALL) if os.environ.get("BERT_JAX_ALL_COMMAND_CASES") == "1" else EVERY_RUN


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    "case",
    [
        pytest.param(n, marks=pytest.mark.xfail(reason=KNOWN[n], strict=True)) if n in KNOWN else n
        for n in SELECTED
    ],
)
def test_each_case_ends_its_command_with_one_line(case, tmp_path, request):
    spec, args = ALL[case]
    if case in ckpt_cases.CHECKPOINT_CASES:
        request.getfixturevalue("_use")  # the checkpoints the cases copy and break
    d = tmp_path / "case"
    d.mkdir()
    _, bad = spec.make(d)
    if case in TFRECORD:
        data_cases._records(d / "good.tfrecord")
    argv = args(d, bad)
    message = spec.message.replace("{path}", re.escape(str(bad)))
    run_command(tmp_path / "cli", d, argv, argv[0], message)


# Cases that exist through their command only.
LATIN1 = b"a good film\nun caf\xe9 fort\n"
BLANK = b"\n\n \n"


def _read_only(d):
    if os.geteuid() == 0:  # root ignores modes; /sys refuses new folders
        return "/sys/bert_jax_workdir/run"
    ro = d / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    return ro / "run"


CLI_ONLY = {
    "cli_main_config_key_misspelled": (
        lambda d: [*_glue_args(d), "--config.log_evry=10", f"--workdir={d / 'run'}"],
        MAIN,
        r"bert_jax.main: error: a --config override: unknown or bad key 'log_evry': "
        r'Did you mean "log_every" instead of "log_evry"',
    ),
    "cli_main_workdir_read_only": (
        lambda d: [*_glue_args(d), f"--workdir={_read_only(d)}"],
        MAIN,
        r"bert_jax.main: error: workdir .*run is not writable",
    ),
    "cli_build_vocab_blank_corpus": (
        lambda d: [
            VOCAB_TOOL,
            f"--input_file={write(d / 'corpus.txt', BLANK)}",
            f"--output_file={d / 'vocab.txt'}",
        ],
        VOCAB_TOOL,
        r"build_vocab: error: .*corpus.txt: no documents",
    ),
}


def _glue_args(d):
    return [
        MAIN,
        f"--config={REPO / 'configs' / 'glue.py'}:task=sst2,model=tiny,tiny",
        f"--config.data.vocab_file={vocab_file(d)}",
    ]


@pytest.mark.parametrize("case", list(CLI_ONLY))
def test_bad_input_ends_the_command_with_a_message(case, tmp_path):
    args, prog, message = CLI_ONLY[case]
    d = tmp_path / "case"
    d.mkdir()
    run_command(tmp_path / "cli", d, args(d), prog, message)


def test_the_compile_check_sees_a_compile(tmp_path):
    """The empty-cache check can fail: one program compiled in such a process fills it."""
    cache, tmp = tmp_path / "xla_cache", tmp_path / "tmp"
    cache.mkdir()
    tmp.mkdir()
    code = "import jax.numpy as jnp; print(float((jnp.arange(3.0) * 2).sum()))"
    env = command_env(tmp, cache)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    assert [p for p in cache.rglob("*") if p.is_file()]


def test_create_pretraining_data_stopped_by_sigterm_leaves_no_temporary_shard(tmp_path):
    """SIGTERM once the run has opened its temporary output: it removes it (and the
    output folder it made), exits 1 with one line. The corpus is a FIFO the test
    writes a few documents to and keeps open, so the run waits there with its
    temporary shard open: no timing."""
    d = tmp_path / "case"
    d.mkdir()
    fifo = d / "corpus.txt"
    os.mkfifo(fifo)
    vocab = vocab_file(d)
    cwd, tmp, cache = (tmp_path / n for n in ("cwd", "tmp", "cache"))
    for f in (cwd, tmp, cache):
        f.mkdir()
    before = [snapshot(f) for f in (d, cwd, tmp)]
    out_dir = d / "out"
    argv = [
        sys.executable,
        "-m",
        CPD,
        f"--input_file={fifo}",
        f"--output_file={out_dir / 'train.tfrecord'}",
        f"--vocab_file={vocab}",
        "--num_workers=1",
        "--docs_per_block=1",
    ]
    proc = subprocess.Popen(
        argv, cwd=cwd, env=command_env(tmp, cache), stderr=subprocess.PIPE, text=True
    )
    try:
        with open(fifo, "w") as corpus:  # opens once the command opens its end
            corpus.write("The film is good .\nIt was bad .\n\n" * 8)
            corpus.flush()
            # The event: the temporary shard exists (the run then waits on the FIFO).
            while not (out_dir.exists() and any(".tmp-" in p.name for p in out_dir.iterdir())):
                assert proc.poll() is None, proc.stderr.read()
                os.sched_yield()
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert "Traceback" not in stderr, stderr[-3000:]
    assert proc.returncode == 1, stderr[-3000:]
    assert stderr.rstrip().splitlines()[-1] == (
        f"{CPD}: error: interrupted by SIGTERM: no output written"
    ), stderr[-3000:]
    assert [snapshot(f) for f in (d, cwd, tmp)] == before
