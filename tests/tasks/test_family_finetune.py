"""Fine-tuning SST-2 from ALBERT, RoBERTa and DistilBERT checkpoints (issue 12).

Each start point is what researchers fine-tune from: an HF `{Family}ForMaskedLM`
directory (random init at small shapes, saved with `save_pretrained`) holding
its family's tokenizer files: ALBERT's spiece.model and RoBERTa's vocab.json +
merges.txt trained here on real SST-2 sentences (tests/data/family_vocab.py),
DistilBERT's the real bert-base-uncased vocab.txt. The trainer fine-tunes a
few steps on real SST-2 rows and evaluates on the real dev set; the workdir
must hold the family's tokenizer files and, exported back to HF, give HF's
`{Family}ForSequenceClassification` + HF's tokenizer the same probabilities
as `bert_jax.tools.predict` on real dev sentences: the tokenizer, the positions
(RoBERTa's offset) and the head (BERT/ALBERT pooler, RoBERTa's tanh dense on
<s>, DistilBERT's ReLU pre-classifier) are each the family's.
"""

import json
import shutil

import numpy as np
import pytest

from bert_jax.checkpoints import pretrained
from bert_jax.tools.predict import Predictor
from configs import glue as glue_config
from tests.checkpoint_sources import torch, transformers
from tests.data import family_vocab
from tests.numerics import assert_close
from tests.tasks import tiny_runs

SHAPES = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96)
HF = {
    "albert": ("AlbertConfig", "Albert", dict(SHAPES, embedding_size=32)),
    "roberta": (
        "RobertaConfig",
        "Roberta",
        dict(SHAPES, max_position_embeddings=66, type_vocab_size=1, pad_token_id=1),
    ),
    "distilbert": (
        "DistilBertConfig",
        "DistilBert",
        dict(dim=64, n_layers=2, n_heads=4, hidden_dim=96),
    ),
}
TOKENIZER_FILES = {
    "albert": ("spiece.model",),
    "roberta": ("vocab.json", "merges.txt"),
    "distilbert": ("vocab.txt",),
}


def _sst2(shared_data, split):
    lines = (shared_data / "glue" / "SST-2" / f"{split}.tsv").read_text("utf-8").splitlines()
    return [line.split("\t")[0] for line in lines[1:]]


@pytest.fixture(scope="module")
def tokenizer_folders(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("family_vocab")
    folders = family_vocab.build(_sst2(shared_data, "train")[::8], root)
    (root / "distilbert").mkdir()
    shutil.copy(shared_data / "vocab" / "bert-base-uncased" / "vocab.txt", root / "distilbert")
    return folders | {"distilbert": root / "distilbert"}


def _checkpoint(family, tokenizer_folder, out):
    """An HF {Family}ForMaskedLM at random init with the tokenizer files beside it."""
    config_cls, prefix, shape = HF[family]
    tok = getattr(transformers, f"{prefix}Tokenizer").from_pretrained(str(tokenizer_folder))
    torch.manual_seed(0)
    config = getattr(transformers, config_cls)(vocab_size=len(tok), **shape)
    getattr(transformers, f"{prefix}ForMaskedLM")(config).save_pretrained(out)
    for name in TOKENIZER_FILES[family]:
        shutil.copy(tokenizer_folder / name, out)
    return tok


@pytest.mark.parametrize("family", ["albert", "roberta", "distilbert"])
def test_sst2_finetunes_from_each_family_and_matches_hf(
    family, tokenizer_folders, shared_data, tmp_path
):
    hf_tok = _checkpoint(family, tokenizer_folders[family], tmp_path / "ckpt")
    c = glue_config.get_config("task=sst2")
    c.init_checkpoint = str(tmp_path / "ckpt")
    c.data.data_dir = str(shared_data / "glue")
    c.data.max_train_examples = 64
    c.max_seq_length, c.train_batch_size, c.eval_batch_size = 64, 16, 256
    c.num_train_steps, c.log_every = 8, 4
    c.optimizer.learning_rate = 1e-3
    wd = tmp_path / "run"
    metrics = tiny_runs.run(c, wd)
    assert 0.3 < metrics["eval/accuracy"] < 0.8  # a few steps of a random-init model
    for name in TOKENIZER_FILES[family]:
        if family == "distilbert":  # WordPiece is written back token by token
            assert (wd / name).read_text() == (tmp_path / "ckpt" / name).read_text()
        else:
            assert (wd / name).read_bytes() == (tmp_path / "ckpt" / name).read_bytes()

    dev = _sst2(shared_data, "dev")[:24]
    ours = np.asarray(
        [[r["probabilities"][label] for label in ("0", "1")] for r in Predictor(str(wd))(dev)]
    )
    model, params = pretrained.load(wd)
    exported = pretrained.export_hf(model, params, tmp_path / "hf")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(exported).eval()
    enc = hf_tok(dev, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        logits = hf(
            **{k: v for k, v in enc.items() if k != "token_type_ids" or family != "distilbert"}
        ).logits
    assert_close(ours, torch.softmax(logits, -1).numpy(), atol=2e-5)


def test_roberta_checkpoint_fine_tunes_ner_and_squad(tokenizer_folders, shared_data, tmp_path):
    """The token-level tasks from a RoBERTa checkpoint: CoNLL-2003 words with
    the BPE word-start space and SQuAD rows <s> q </s></s> c </s> (both laid
    out as HF's: tests/tokenizers/test_family_tokenizers.py) train, evaluate and
    predict with exact character offsets from the workdir alone."""
    from configs import ner, squad

    _checkpoint("roberta", tokenizer_folders["roberta"], tmp_path / "ckpt")
    for name, c in (
        ("ner", ner.get_config("tiny")),
        ("squad", squad.get_config("version=1.1,tiny")),
    ):
        c.init_checkpoint = str(tmp_path / "ckpt")
        c.model.size = ""  # the architecture comes from the checkpoint
        c.num_train_steps, c.log_every = 2, 1
        c.max_seq_length = 64
        if name == "ner":
            c.data.data_dir = str(shared_data / "conll2003")
            c.data.max_train_examples = 32
        else:
            c.data.data_dir = str(shared_data / "squad" / "v1.1")
            c.data.train_file = c.data.eval_file = "dev-v1.1.json"
            c.data.max_eval_examples = 20
            c.doc_stride = 32
        metrics = tiny_runs.run(c, tmp_path / name)
        assert 0.0 <= metrics["eval/f1"] <= (1.0 if name == "ner" else 100.0), (name, metrics)
    text = "Angela Merkel met Emmanuel Macron in Paris on Tuesday."
    (row,) = Predictor(str(tmp_path / "ner"))([text])
    for ent in row["entities"]:
        assert text[ent["start"] : ent["end"]] == ent["text"]
    context = "The Normans gave their name to Normandy, a region in France."
    question = "Who gave their name to Normandy?"
    (row,) = Predictor(str(tmp_path / "squad"))(
        [json.dumps(dict(question=question, context=context))]
    )
    assert row["answer"] == context[row["start"] : row["end"]] and row["answer"]
