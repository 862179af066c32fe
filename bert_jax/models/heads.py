"""Task heads on the BERT encoder, and the encoder+head models the tasks use.

Each model returns the encoder's dict (see `BertModel`) plus its head's
outputs, so probes and notebooks can read any intermediate without edits.
Parameter names under each model: `bert` (the encoder) and one name per head.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from bert_jax.models.bert import BertConfig, BertModel
from bert_jax.models.layers import ACTIVATIONS, dense, layer_norm, param
from bert_jax.sharding import CLASSES, EMBED, EMBED_OUT, VOCAB


def gather_positions(sequence, positions):
    """sequence (B, L, H), positions (B, P) int -> (B, P, H)."""
    return jnp.take_along_axis(sequence, positions[..., None].astype(jnp.int32), axis=1)


class MlmHead(nn.Module):
    """Masked-LM head: dense + activation + LayerNorm, then the tied decoder.

    The decoder reuses the word-embedding table (passed in as `attend`,
    (..., E) -> (..., padded vocab) logits) and has its own output bias, as
    `cls/predictions` in the original `run_pretraining.py`. The same math is
    HF's RoBERTa `lm_head`, DistilBERT's vocab_transform/vocab_layer_norm/
    vocab_projector and ALBERT's
    `predictions`, whose dense maps hidden_size down to embedding_size (the
    width of the tied table; Lan et al. 2020, section 3.1).
    """

    config: BertConfig

    @nn.compact
    def __call__(self, x, attend):
        cfg = self.config
        width = cfg.embedding_width
        x = dense(cfg, width, (EMBED, EMBED_OUT), (EMBED_OUT,), name="transform")(x)
        x = layer_norm(cfg, name="layer_norm")(ACTIVATIONS[cfg.hidden_act](x))
        bias = self.param(
            "bias",
            param(nn.initializers.zeros, (VOCAB,)),
            (cfg.padded_vocab_size,),
            cfg.storage_dtype,
        )
        # Logits in fp32 for a stable softmax cross-entropy under bf16 compute;
        # the padding rows' columns (vocab_pad_multiple) are dropped.
        logits = attend(x).astype(jnp.float32) + bias.astype(jnp.float32)
        return logits[..., : cfg.vocab_size]


# Classifier.hidden_act values: the activation of a hidden dense before the
# output one, for encoders without a pooler.
HIDDEN_ACTS = {"": None, "tanh": jnp.tanh, "relu": nn.relu}


class Classifier(nn.Module):
    """dropout + dense to `num_outputs`; used on pooled or per-token features.

    The dropout rate is `BertConfig.classifier_dropout` (None: hidden_dropout).

    With `hidden_act`, first a dense (hidden -> hidden, `hidden`) and that
    activation: RoBERTa's classification head (Liu et al. 2019; HF
    `RobertaClassificationHead`: dropout, dense, tanh, dropout, out_proj) or
    DistilBERT's (Sanh et al. 2019; HF `pre_classifier`, ReLU, dropout,
    classifier: no dropout before the hidden dense).
    """

    config: BertConfig
    num_outputs: int
    dropout: bool = True
    hidden_act: str = ""  # a key of HIDDEN_ACTS

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        cfg = self.config
        if self.hidden_act not in HIDDEN_ACTS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not one of {sorted(HIDDEN_ACTS)}")
        rate = cfg.hidden_dropout if cfg.classifier_dropout is None else cfg.classifier_dropout
        if self.hidden_act:
            if self.dropout and self.hidden_act == "tanh":
                x = nn.Dropout(rate)(x, deterministic=deterministic)
            hidden = dense(cfg, cfg.hidden_size, (EMBED, EMBED_OUT), (EMBED_OUT,), name="hidden")
            x = HIDDEN_ACTS[self.hidden_act](hidden(x))
        if self.dropout:
            x = nn.Dropout(rate)(x, deterministic=deterministic)
        out = dense(cfg, self.num_outputs, (EMBED, CLASSES), (CLASSES,), name="dense")
        return out(x).astype(jnp.float32)


def _encoder_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    allowed = {
        "deterministic",
        "output_attentions",
        "output_hidden_states",
        "position_ids",
        "example_ids",
        "cls_positions",
    }
    extra = set(kwargs) - allowed
    if extra:
        raise TypeError(f"unexpected arguments {sorted(extra)}")
    return kwargs


class BertForPreTraining(nn.Module):
    """Encoder + MLM head (+ NSP head unless `nsp=False`, RoBERTa-style).

    With `masked_positions` (B, P) the MLM logits are computed only there:
    (B, P, vocab); without, at every position: (B, L, vocab). With packed
    rows (`example_ids`, `cls_positions` (B, K); see `BertModel`) the NSP
    logits are per example: (B, K, 2).
    """

    config: BertConfig
    nsp: bool = True  # ALBERT's sentence-order head (SOP, Lan et al. 2020) is this head too

    def setup(self):
        if self.nsp and not self.config.use_pooler:
            raise ValueError("the NSP/SOP head reads the pooled output: set use_pooler=True")
        self.bert = BertModel(self.config)
        self.mlm = MlmHead(self.config)
        if self.nsp:
            self.nsp_head = Classifier(self.config, 2, dropout=False, name="nsp")

    def __call__(
        self, input_ids, token_type_ids=None, attention_mask=None, masked_positions=None, **kw
    ):
        out = self.bert(input_ids, token_type_ids, attention_mask, **_encoder_kwargs(kw))
        seq = out["sequence_output"]
        if masked_positions is not None:
            seq = gather_positions(seq, masked_positions)
        out["mlm_logits"] = self.mlm(seq, self.bert.attend)
        if self.nsp:
            out["nsp_logits"] = self.nsp_head(out["pooled_output"])
        return out


def _encode_and_classify(
    module, features: str, input_ids, token_type_ids, attention_mask, kw, hidden_act: str = ""
):
    """Encoder, then dropout + dense on `features` ("pooled_output", "sequence_output",
    or "cls": the first token of the sequence output)."""
    out = BertModel(module.config, name="bert")(
        input_ids, token_type_ids, attention_mask, **_encoder_kwargs(kw)
    )
    det = kw.get("deterministic", True)
    x = out["sequence_output"][:, 0] if features == "cls" else out[features]
    out["logits"] = Classifier(
        module.config, module.num_labels, hidden_act=hidden_act, name="classifier"
    )(x, det)
    return out


class BertForSequenceClassification(nn.Module):
    """Pooled [CLS] -> dropout -> dense. `num_labels=1` is regression (STS-B).

    With `hidden_act` ("tanh": RoBERTa, "relu": DistilBERT) the head reads the
    first token's sequence output through its own hidden dense instead of the
    pooler (see `Classifier`).
    """

    config: BertConfig
    num_labels: int = 2
    hidden_act: str = ""  # a key of HIDDEN_ACTS

    @nn.compact
    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, **kw):
        if not self.hidden_act and not self.config.use_pooler:
            raise ValueError(
                "use_pooler=False: give the classifier its own hidden layer "
                "(hidden_act='tanh' as RoBERTa, 'relu' as DistilBERT)"
            )
        features = "cls" if self.hidden_act else "pooled_output"
        return _encode_and_classify(
            self, features, input_ids, token_type_ids, attention_mask, kw, self.hidden_act
        )


class BertForTokenClassification(nn.Module):
    """Per-token dropout -> dense (NER tagging)."""

    config: BertConfig
    num_labels: int = 9

    @nn.compact
    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, **kw):
        return _encode_and_classify(
            self, "sequence_output", input_ids, token_type_ids, attention_mask, kw
        )


class BertForQuestionAnswering(nn.Module):
    """Span QA: a dense to 2 per token gives start and end logits (B, L)."""

    config: BertConfig

    @nn.compact
    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, **kw):
        out = BertModel(self.config, name="bert")(
            input_ids, token_type_ids, attention_mask, **_encoder_kwargs(kw)
        )
        # No dropout before the span head, as in the original run_squad.py.
        logits = Classifier(self.config, 2, dropout=False, name="qa_outputs")(
            out["sequence_output"]
        )
        out["start_logits"], out["end_logits"] = logits[..., 0], logits[..., 1]
        return out


class BertForMultipleChoice(nn.Module):
    """Inputs (B, C, L): each choice is encoded, pooled and scored -> logits (B, C).

    With `hidden_act` the score reads the first token through a hidden dense
    instead of the pooler (DistilBERT's "relu"; see `Classifier`).
    """

    config: BertConfig
    hidden_act: str = ""  # a key of HIDDEN_ACTS

    @nn.compact
    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, **kw):
        b, c, length = input_ids.shape

        def flat(t):
            return None if t is None else t.reshape(b * c, length)

        out = BertModel(self.config, name="bert")(
            flat(input_ids), flat(token_type_ids), flat(attention_mask), **_encoder_kwargs(kw)
        )
        det = kw.get("deterministic", True)
        x = out["sequence_output"][:, 0] if self.hidden_act else out["pooled_output"]
        scores = Classifier(self.config, 1, hidden_act=self.hidden_act, name="classifier")(x, det)
        out["logits"] = scores.reshape(b, c)
        return out
