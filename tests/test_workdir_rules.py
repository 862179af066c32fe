"""Configs and workdirs that never silently do something else, and config files anywhere.

Each case is what a new user tries: overriding a model field from the command
line, giving a step count to an epoch-based config, an unknown model size,
rerunning a finished workdir with a new learning rate or another model,
resuming with changed logging settings, and a config file kept in their own
folder.
"""

import json
import sys
from pathlib import Path

import jax
import pytest
from absl import flags
from etils import epath
from ml_collections import config_flags

from bert_jax import configs, train, workdir_config
from bert_jax.checkpoints import pretrained
from bert_jax.configs import common
from bert_jax.tasks.model_setup import model_config
from tests import train_data

REPO = Path(__file__).resolve().parents[1]
ONE = jax.devices()[:1]


@pytest.fixture(scope="module")
def records(shared_data, tmp_path_factory):
    return train_data.write_records(shared_data, tmp_path_factory.mktemp("records"))


def _parse(argv: list[str]):
    """What `python -m bert_jax.main` makes of these flags (ml_collections' config_flags,
    which reads the overrides from sys.argv)."""
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "config", flag_values=fv, lock_config=True)
    saved, sys.argv = sys.argv, ["main", *argv]
    try:
        fv(sys.argv)
    finally:
        sys.argv = saved
    return fv.config


def test_every_model_field_and_the_step_count_override_from_the_command_line():
    values = {int: 3, float: 0.25, str: "relu", bool: True}
    fields = {k: values[t] for k, t in common.MODEL_FIELDS.items()}
    fields["hidden_size"], fields["num_heads"], fields["intermediate_size"] = 48, 3, 96
    fields["attention_impl"] = "xla"  # one of its allowed values
    argv = [f"--config={REPO / 'configs/glue.py'}:task=sst2,model=tiny"]
    argv += [f"--config.model.{k}={v}" for k, v in fields.items()]
    argv += ["--config.num_train_steps=2"]
    c = _parse(argv)
    for k, v in fields.items():
        assert c.model[k] == v and type(c.model[k]) is type(v), k
    assert c.num_train_steps == 2
    built = model_config(c)
    assert (built.hidden_dropout, built.num_layers, built.hidden_act) == (0.25, 3, "relu")
    # Unset fields stay None and come from the size.
    plain = _parse([f"--config={REPO / 'configs/glue.py'}:task=sst2,model=tiny"])
    assert plain.model.hidden_dropout is None and model_config(plain).hidden_dropout == 0.1
    with pytest.raises(flags.IllegalFlagValueError, match="num_layers"):  # typed, not any value
        _parse([f"--config={REPO / 'configs/glue.py'}:task=sst2", "--config.model.num_layers=x"])


def test_steps_given_are_never_replaced_by_epochs(shared_data, tmp_path, caplog):
    glue = configs.load(f"{REPO / 'configs/glue.py'}:task=sst2,model=tiny")
    assert glue.num_train_steps is None and glue.num_train_epochs == 3.0
    # Derived from the epochs when not given, as run_classifier.py: int(N / batch * epochs).
    with caplog.at_level("INFO"):
        assert workdir_config.resolve_steps(glue, 1000).num_train_steps == 93
    assert "num_train_steps=93 from num_train_epochs=3.0" in caplog.text
    glue.num_train_steps = 2
    glue.data.data_dir = str(shared_data / "glue")
    glue.data.vocab_file = str(shared_data / "vocab/bert-base-uncased/vocab.txt")
    glue.data.max_train_examples, glue.max_seq_length = 64, 32
    with caplog.at_level("INFO"):
        train.run(glue, str(tmp_path), devices=ONE)
    assert json.loads((tmp_path / "results.json").read_text())["step"] == 2
    assert "num_train_steps=2 as set; num_train_epochs=3.0 is not used" in caplog.text
    pretrain = configs.load(train_data.PRETRAIN_CONFIG)
    with pytest.raises(ValueError, match="needs the training set's size"):
        workdir_config.resolve_steps(_without_steps(pretrain), None)


def _without_steps(c):
    c = c.copy_and_resolve_references()
    with c.unlocked():
        c.num_train_steps, c.num_train_epochs = None, 1.0
    return c


def test_an_unknown_model_size_fails_with_every_variant():
    for spec in ("pretrain.py:model=huge,tiny", "glue.py:task=sst2,model=huge,tiny"):
        with pytest.raises(ValueError, match=r"model='huge': choose one of \['tiny'"):
            configs.load(f"{REPO / 'configs' / spec}")
    # An explicit size is kept by the laptop variant; without one it is tiny.
    assert configs.load(f"{REPO / 'configs/pretrain.py'}:model=mini,tiny").model.size == "mini"
    assert configs.load(f"{REPO / 'configs/pretrain.py'}:tiny").model.size == "tiny"
    assert configs.load(f"{REPO / 'configs/pretrain.py'}:recipe=mlperf").model.size == "large"


def _snapshot(wd: Path) -> dict[str, bytes]:
    return {str(p.relative_to(wd)): p.read_bytes() for p in sorted(wd.rglob("*")) if p.is_file()}


def test_a_finished_workdir_is_never_retrained_or_rewritten(records, tmp_path):
    wd = tmp_path / "run"
    c = train_data.tiny_config(records, num_train_steps=2, log_every=1)
    c.data.eval_files = records["eval_files"]
    _, metrics = train.run(c, str(wd), devices=ONE)
    before = _snapshot(wd)
    # Same config: nothing to do; the stored results come back, no file changes.
    _, again = train.run(c, str(wd), devices=ONE)
    assert again == metrics and _snapshot(wd) == before
    # Another learning rate: an error naming the key and both values.
    c.optimizer.learning_rate = 3e-4
    with pytest.raises(ValueError, match=r"optimizer\.learning_rate: 0\.0001 -> 0\.0003"):
        train.run(c, str(wd), devices=ONE)
    with pytest.raises(ValueError, match=r"cannot be made on resume: optimizer\.learning_rate"):
        train.run(c, str(wd), devices=ONE, allow_config_changes=True)
    # Another model size: refused before config.json or task.json is touched.
    c = train_data.tiny_config(records, num_train_steps=2, log_every=1)
    c.data.eval_files = records["eval_files"]
    c.model.intermediate_size = 128
    with pytest.raises(ValueError, match=r"model\.intermediate_size: 256 -> 128"):
        train.run(c, str(wd), devices=ONE)
    assert _snapshot(wd) == before
    model, _ = pretrained.load(wd)  # the workdir still loads as what it trained
    assert model.config.intermediate_size == 256


def test_resuming_with_safe_changes_needs_the_flag_and_is_recorded(records, tmp_path):
    wd = tmp_path / "run"
    c = train_data.tiny_config(records, num_train_steps=4, checkpoint_every=2, log_every=1)
    train.run(c, str(wd), devices=ONE)
    # As if stopped after step 2: the later checkpoint and the results are gone.
    for p in sorted((wd / "checkpoints" / "4").rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    (wd / "checkpoints" / "4").rmdir()
    (wd / "results.json").unlink()
    c.log_every = 2
    with pytest.raises(ValueError, match=r"log_every: 1 -> 2.*--allow_config_changes"):
        train.run(c, str(wd), devices=ONE)
    train.run(c, str(wd), devices=ONE, allow_config_changes=True)
    assert json.loads((wd / "config.json").read_text())["log_every"] == 2
    (change,) = [json.loads(x) for x in (wd / "config_changes.jsonl").read_text().splitlines()]
    assert change == {"step": 2, "changes": {"log_every": [1, 2]}}
    rows = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 4]  # every step once, old cadence then new


def test_keys_added_since_a_workdir_was_written_resume_at_their_old_behaviour(tmp_path):
    """A config.json written before a key existed resumes when the key holds the
    value that does what that run did; any other value is a change."""
    c = configs.load(f"{REPO / 'configs/glue.py'}:task=sst2,model=tiny")
    stored = json.loads(json.dumps(workdir_config.as_json(c)))
    del stored["skip_nonfinite_updates"], stored["data"]["tokenizer_dir"]
    (tmp_path / "config.json").write_text(json.dumps(stored))
    wd = epath.Path(tmp_path)
    assert workdir_config.check_resume(wd, c, latest_step=10) == {}
    c.skip_nonfinite_updates = True
    with pytest.raises(ValueError, match="skip_nonfinite_updates: '<absent>' -> True"):
        workdir_config.check_resume(wd, c, latest_step=10)
