"""init_checkpoint through the trainer: every checkpoint format into either layer layout.

The same weights (a random HF `BertForPreTraining`) as an HF directory, an
original TF release, a bert_jax checkpoint, and two training workdirs (one
trained with `scan_layers`, one without) initialise a pretraining run with
and without `scan_layers`. One step at learning rate 0 without dropout: the
first loss must be the same for all ten, and the parameters exactly the
checkpoint's. Then the rules of `pretrained.load_into` one by one.
"""

import json
import logging
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import pytest

from bert_jax import configs, train
from bert_jax.checkpoints import pretrained
from bert_jax.models.bert import BertModel
from bert_jax.models.heads import BertForPreTraining, BertForSequenceClassification
from tests import checkpoint_sources, train_data
from tests.cli_env import cli_env
from tests.numerics import assert_close, assert_equal

REPO = Path(__file__).resolve().parents[1]
# gelu_new: the original TF BERT's gelu (tanh form), so the TF release is the same model.
HF = dict(
    vocab_size=30522,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    max_position_embeddings=64,
    hidden_act="gelu_new",
)


@pytest.fixture(scope="module")
def sources(shared_data, tmp_path_factory):
    """Checkpoint paths by format, all holding the same weights."""
    tmp = tmp_path_factory.mktemp("sources")
    _, hf_dir = checkpoint_sources.hf_pretraining(tmp, **HF)
    checkpoint_sources.write_tf_checkpoint(tmp / "tf", hf_dir)
    pretrained.save(tmp / "bert_jax", *pretrained.load(hf_dir))
    records = train_data.write_records(shared_data, tmp / "records")
    return {"hf": hf_dir, "tf": tmp / "tf", "bert_jax": tmp / "bert_jax"}, records


def _config(records, init, scan: bool):
    c = train_data.tiny_config(records, num_train_steps=1, init_checkpoint=str(init))
    # The architecture comes from the checkpoint: no size, no overrides.
    c.model.size = ""
    c.model.vocab_size = c.model.num_heads = c.model.intermediate_size = None
    c.model.hidden_dropout = c.model.attention_dropout = 0.0
    c.model.scan_layers = scan
    c.optimizer.learning_rate, c.optimizer.warmup_steps = 0.0, 0
    return c


def _first_loss(workdir: Path) -> float:
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    return next(r["train/loss"] for r in rows if r["step"] == 1)


def _per_layer(params) -> dict[str, np.ndarray]:
    """Flat params in the per-layer layout, whatever the run used."""
    enc = params["bert"]["encoder"]
    if "layers" in enc:
        n = jax.tree.leaves(enc["layers"])[0].shape[0]
        params = {**params, "bert": {**params["bert"], "encoder": {
            f"layer_{i}": jax.tree.map(lambda t, i=i: np.asarray(t[i]), enc["layers"])
            for i in range(n)
        }}}  # fmt: skip
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree.leaves_with_path(params)}


def test_every_format_into_either_layout_gives_the_same_first_step(sources, tmp_path, caplog):
    paths, records = sources
    _, reference = pretrained.load(paths["hf"])
    want = _per_layer(reference)
    losses = {}
    one = jax.devices()[:1]
    with caplog.at_level(logging.INFO):
        # HF first: its two runs are the workdirs the last two sources are.
        for scan in (False, True):
            wd = tmp_path / f"hf-scan{scan}"
            state, _ = train.run(_config(records, paths["hf"], scan), str(wd), devices=one)
            paths[f"workdir-scan{scan}"] = wd
            losses[("hf", scan)] = _first_loss(wd)
            got = _per_layer(state.params)
            assert got.keys() == want.keys()
            for k, v in want.items():
                assert_equal(got[k], v, err_msg=k)  # every parameter loaded, lr 0 kept it
        for source in ("tf", "bert_jax", "workdir-scanFalse", "workdir-scanTrue"):
            for scan in (False, True):
                wd = tmp_path / f"{source}-scan{scan}"
                state, _ = train.run(_config(records, paths[source], scan), str(wd), devices=one)
                losses[(source, scan)] = _first_loss(wd)
                got = _per_layer(state.params)
                for k, v in want.items():
                    assert_close(got[k], v, atol=1e-6, err_msg=f"{source} scan={scan} {k}")
    print("first-step losses", losses)
    ref = losses[("hf", False)]
    for key, loss in losses.items():
        assert_close(loss, ref, atol=1e-6, err_msg=str(key))
    # Every parameter loaded, in both layouts (the 2 layers of 16 leaves stack into 16).
    n, stacked = len(want), len(want) - 16
    lines = [x for x in caplog.text.splitlines() if "init_checkpoint" in x and "loaded" in x]
    assert len(lines) == 10 and "fresh" not in caplog.text
    assert sum(f"loaded {n} of {n} parameters" in x for x in lines) == 5, lines
    assert sum(f"loaded {stacked} of {stacked} parameters" in x for x in lines) == 5, lines


def test_minilm_into_a_scanned_glue_model_from_the_command_line(minilm_dir, shared_data, tmp_path):
    """The issue's command: a bare encoder into a scanned classifier, over the CLI.

    All 23 stacked encoder leaves load; only the new classifier's 2 are fresh,
    and the log names them."""
    cmd = [
        sys.executable, "-m", "bert_jax.main", "--config=configs/glue.py:task=sst2",
        f"--workdir={tmp_path / 'run'}", f"--config.init_checkpoint={minilm_dir}",
        f"--config.data.data_dir={shared_data / 'glue'}", "--config.model.scan_layers=True",
        "--config.num_train_steps=1", "--config.data.max_train_examples=64",
        "--config.max_seq_length=32", "--config.eval_batch_size=256",
    ]  # fmt: skip
    out = subprocess.run(cmd, cwd=REPO, env=cli_env(1), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    (line,) = [x for x in out.stderr.splitlines() if "init_checkpoint" in x and "loaded" in x]
    assert "loaded 23 of 25 parameters" in line, line
    assert "classifier/dense/bias (the checkpoint has no classifier head)" in line, line
    assert "classifier/dense/kernel (the checkpoint has no classifier head)" in line, line
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["step"] == 1


# --------------------------------------------------------------------------
# load_into's rules, directly.
# --------------------------------------------------------------------------


def _target(model, ids_shape=(1, 8)):
    """The model's params as shapes (no arrays built)."""
    ids = np.zeros(ids_shape, np.int32)
    return nn.meta.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), ids))["params"])


def test_encoder_that_does_not_fit_is_an_error_naming_every_tensor(sources):
    paths, _ = sources
    model, _ = pretrained.load(paths["hf"])
    wider = model.config.__class__(**{**model.config.to_dict(), "hidden_size": 32})
    with pytest.raises(pretrained.CheckpointError) as e:
        pretrained.load_into(_target(BertForPreTraining(wider)), paths["hf"])
    msg = str(e.value)
    assert "word_embeddings/embedding: checkpoint (30522, 64) vs model (30522, 32)" in msg, msg
    deeper = model.config.__class__(**{**model.config.to_dict(), "num_layers": 3})
    with pytest.raises(pretrained.CheckpointError, match=r"layer_2/attention/key/bias: not in"):
        pretrained.load_into(_target(BertForPreTraining(deeper)), paths["hf"])
    stacked = deeper.__class__(**{**deeper.to_dict(), "scan_layers": True})
    with pytest.raises(pretrained.CheckpointError, match=r"layers/.*\(2, .*\) vs model \(3, "):
        pretrained.load_into(_target(BertForPreTraining(stacked)), paths["hf"])
    shallower = model.config.__class__(**{**model.config.to_dict(), "num_layers": 1})
    with pytest.raises(pretrained.CheckpointError, match=r"layer_1/.*in the checkpoint, not in"):
        pretrained.load_into(_target(BertForPreTraining(shallower)), paths["hf"])


def test_heads_load_or_stay_fresh_with_the_reason(sources, tmp_path):
    paths, _ = sources
    model, params = pretrained.load(paths["hf"])
    # A 3-label classifier saved, loaded into a 2-label one: encoder loads,
    # the classifier keeps its initialisation because its shape differs.
    three = BertForSequenceClassification(model.config, num_labels=3)
    p3 = nn.meta.unbox(three.init(jax.random.key(1), np.zeros((1, 8), np.int32)))["params"]
    p3 = {**jax.tree.map(np.asarray, p3), "bert": params["bert"]}
    pretrained.save(tmp_path / "three", three, p3)
    two = BertForSequenceClassification(model.config, num_labels=2)
    init = nn.meta.unbox(two.init(jax.random.key(2), np.zeros((1, 8), np.int32)))
    got, report = pretrained.load_into(init["params"], tmp_path / "three")
    assert set(report.fresh) == {"classifier/dense/kernel", "classifier/dense/bias"}
    for leaf in ("kernel", "bias"):  # the reason names the first differing tensor
        why = report.fresh[f"classifier/dense/{leaf}"]
        assert why == "classifier/dense/bias is (3,) in the checkpoint, (2,) here", why
    fresh_kernel = init["params"]["classifier"]["dense"]["kernel"]
    assert_equal(got["classifier"]["dense"]["kernel"], fresh_kernel)
    pooler = params["bert"]["pooler"]["dense"]["kernel"]
    assert_equal(got["bert"]["pooler"]["dense"]["kernel"], pooler)
    # The same classifier shape loads whole; the pretraining heads are reported unused.
    got, report = pretrained.load_into(init["params"], paths["hf"])
    assert report.unused == ("mlm", "nsp") and "checkpoint has no classifier" in report.summary()
    # Given as shapes, a head that cannot load has no value: an error, not a silent zero.
    with pytest.raises(pretrained.CheckpointError, match="classifier/dense/kernel: the checkpoint"):
        pretrained.load_into(_target(two), paths["hf"])
    # A bare encoder target takes the encoder of a task checkpoint.
    enc, report = pretrained.load_into(_target(BertModel(model.config)), paths["hf"])
    assert report.fresh == {} and report.unused == ("mlm", "nsp")
    assert_equal(enc["embeddings"]["word_embeddings"]["embedding"],
                 params["bert"]["embeddings"]["word_embeddings"]["embedding"])  # fmt: skip


def test_init_checkpoint_pointing_at_nothing_fails_first(records_dir, shared_data, tmp_path):
    c = train_data.tiny_config(records_dir, init_checkpoint=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match=r"config key init_checkpoint: checkpoint path .*nope"):
        train.run(c, str(tmp_path / "wd"))
    assert not (tmp_path / "wd").exists()
    # Fine-tuning, where the vocabulary also comes from the checkpoint: the same
    # error, not "set data.vocab_file".
    glue = configs.load(f"{REPO / 'configs/glue.py'}:task=sst2")
    glue.init_checkpoint = str(tmp_path / "nope")
    glue.data.data_dir = str(shared_data / "glue")
    with pytest.raises(ValueError, match=r"config key init_checkpoint: checkpoint path .*nope"):
        train.run(glue, str(tmp_path / "wd"))
    assert not (tmp_path / "wd").exists()


@pytest.fixture(scope="module")
def records_dir(sources):
    return sources[1]


def test_a_padded_vocabulary_loads_trains_and_exports_like_the_checkpoint(sources, tmp_path):
    """vocab_pad_multiple=128: 30,522 rows become 30,592 in the model, and nothing else."""
    paths, records = sources
    losses = {}
    for multiple in (1, 128):
        c = _config(records, paths["hf"], scan=False)
        c.model.vocab_pad_multiple = multiple
        wd = tmp_path / f"pad{multiple}"
        state, _ = train.run(c, str(wd), devices=jax.devices()[:1])
        losses[multiple] = _first_loss(wd)
        table = state.params["bert"]["embeddings"]["word_embeddings"]["embedding"]
        assert table.shape == (30522 if multiple == 1 else 30592, 64)
    assert_close(losses[128], losses[1], atol=1e-6)
    # The padded workdir loads into an unpadded model (padding rows dropped) and
    # exports as the original HF checkpoint.
    model, params = pretrained.load(tmp_path / "pad128", vocab_pad_multiple=1)
    _, original = pretrained.load(paths["hf"])
    jax.tree.map(assert_equal, params, original)  # lr 0: the checkpoint's weights
    padded_model, padded = pretrained.load(paths["hf"], vocab_pad_multiple=128)
    out = pretrained.export_hf(padded_model, padded, tmp_path / "exported")
    _, back = pretrained.load(out)
    jax.tree.map(assert_equal, back, original)
    # Without the target's vocabulary size, other rows are a shape mismatch, named.
    target = _target(BertForPreTraining(padded_model.config))
    with pytest.raises(pretrained.CheckpointError, match=r"\(30522, 64\) vs model \(30592, 64\)"):
        pretrained.load_into(target, paths["hf"])
    loaded, _ = pretrained.load_into(target, paths["hf"], vocab_size=30522)
    assert loaded["mlm"]["bias"].shape == (30592,)
