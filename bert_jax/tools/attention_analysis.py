"""The classic attention analyses of Clark et al. 2019 on one input, as numbers and figures.

Clark, Khandelwal, Levy and Manning 2019, "What Does BERT Look At? An
Analysis of BERT's Attention" (arXiv 1906.04341):

* "Attending to separator tokens" (their Figure 2): how much attention each
  head puts on [CLS], [SEP] and punctuation ("." and ","), averaged over
  the attending tokens. In BERT-base they found over half of the attention
  of layers 6-10 on [SEP], which they read as a "no-op" for heads whose
  pattern does not apply;
* "Focused vs broad attention" (their Figure 4): the entropy of each head's
  attention distribution, averaged over tokens (nats), against uniform
  attention; some early-layer heads attend very broadly.

Inputs are `bert_jax.tools.attention_view.Attention` (one text or a pair); the
figures are matplotlib `Figure`s made without pyplot, so they work under the
Agg backend (no display) and show inline in Jupyter. matplotlib is imported
only by the plotting functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from bert_jax.tools.attention_view import Attention

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PUNCTUATION = (".", ",")  # Clark et al. 2019 count periods and commas
# Token kinds: name -> tokens of that kind.
KINDS: dict[str, tuple[str, ...]] = {
    "[CLS]": ("[CLS]",),
    "[SEP]": ("[SEP]",),
    ". or ,": PUNCTUATION,
}


def attention_to(att: Attention, tokens: tuple[str, ...]) -> np.ndarray:
    """(layers, heads): attention mass on keys that are one of `tokens`, mean over queries."""
    keys = np.isin(np.asarray(att.tokens), tokens)
    return att.weights[..., keys].sum(-1).mean(-1)


def token_kind_attention(att: Attention) -> dict[str, np.ndarray]:
    """Attention to each of KINDS, as `attention_to`: name -> (layers, heads)."""
    return {name: attention_to(att, tokens) for name, tokens in KINDS.items()}


def head_entropy(att: Attention) -> np.ndarray:
    """(layers, heads): entropy (nats) of each query's distribution, mean over queries.

    0 for a head that puts all its weight on one token; log(tokens) for one
    that attends uniformly.
    """
    w = att.weights.astype(np.float64)
    # 0 * log 0 = 0: zero weights (fully masked keys) contribute nothing.
    plogp = np.where(w > 0, w * np.log(np.where(w > 0, w, 1.0)), 0.0)
    return -plogp.sum(-1).mean(-1)


def _layers_axis(ax, num_layers: int) -> None:
    ax.set_xlabel("layer")
    ax.set_xticks(range(num_layers))
    ax.grid(alpha=0.3)


def plot_token_kind_attention(att: Attention) -> Figure:
    """Clark et al. Figure 2 on one input: a dot per head, the layer mean as a line."""
    from matplotlib.figure import Figure

    kinds = token_kind_attention(att)
    fig = Figure(figsize=(4 * len(kinds), 3.2), layout="constrained")
    axes = fig.subplots(1, len(kinds), sharey=True)
    layers = np.arange(att.num_layers)
    for ax, (name, values) in zip(axes, kinds.items(), strict=True):
        for h in range(att.num_heads):
            ax.scatter(layers, values[:, h], s=10, color="tab:blue", alpha=0.4, lw=0)
        ax.plot(layers, values.mean(1), color="tab:red", marker="o", label="mean over heads")
        ax.set_title(f"attention to {name}")
        _layers_axis(ax, att.num_layers)
    axes[0].set_ylabel("mean attention (dots: heads)")
    axes[0].set_ylim(0, 1)
    axes[0].legend(loc="upper right", fontsize="small")
    return fig


def plot_head_entropy(att: Attention) -> Figure:
    """Clark et al. Figure 4 on one input: per-head entropy by layer, against uniform attention."""
    from matplotlib.figure import Figure

    ent = head_entropy(att)
    fig = Figure(figsize=(5.5, 3.2), layout="constrained")
    ax = fig.subplots()
    layers = np.arange(att.num_layers)
    for h in range(att.num_heads):
        ax.scatter(layers, ent[:, h], s=10, color="tab:blue", alpha=0.4, lw=0)
    ax.plot(layers, ent.mean(1), color="tab:red", marker="o", label="mean over heads")
    uniform = np.log(len(att.tokens))
    ax.axhline(uniform, color="gray", ls="--", label=f"uniform over {len(att.tokens)} tokens")
    ax.set_ylabel("entropy (nats; dots: heads)")
    ax.set_title("attention entropy per head")
    _layers_axis(ax, att.num_layers)
    ax.legend(loc="lower right", fontsize="small")
    return fig
