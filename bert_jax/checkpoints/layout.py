"""Parameter-tree layouts a BERT model can have, and the moves between them.

The model's options that change its tree but not its math: vocabulary rows
padded up to `BertConfig.vocab_pad_multiple` (`pad_vocab`), and layers
stacked under nn.scan (`scan_layers`: `stack_layers`, `unstack_layers`).
Checkpoints are read and written in one layout (vocab_size rows, one
subtree per layer) and moved to the model's here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Parameter paths with a vocabulary-sized first dimension (in a task model's tree).
VOCAB_PARAMS = (("bert", "embeddings", "word_embeddings", "embedding"), ("mlm", "bias"))


def pad_vocab(params: dict, rows: int) -> dict:
    """`params` (a task model's tree, or a bare BertModel's) with `rows` vocabulary rows:
    zero rows appended, or trailing rows dropped (callers drop only padding rows)."""
    bare = "embeddings" in params
    tree = {"bert": params} if bare else params
    for path in VOCAB_PARAMS:
        leaf = _get(tree, path)
        if leaf is not None and leaf.shape[0] != rows:
            tree = _set(tree, path, _with_rows(leaf, rows))
    return tree["bert"] if bare else tree


def _with_rows(leaf, rows: int):
    n = leaf.shape[0]
    if n > rows:
        return leaf[:rows]
    pad = [(0, rows - n)] + [(0, 0)] * (leaf.ndim - 1)
    return np.pad(leaf, pad) if isinstance(leaf, np.ndarray) else jnp.pad(leaf, pad)


def _get(tree: dict, path: tuple[str, ...]):
    for k in path:
        if not isinstance(tree, dict) or k not in tree:
            return None
        tree = tree[k]
    return tree


def _set(tree: dict, path: tuple[str, ...], value) -> dict:
    if len(path) == 1:
        return {**tree, path[0]: value}
    return {**tree, path[0]: _set(tree[path[0]], path[1:], value)}


def stack_layers(encoder_params: dict, num_layers: int) -> dict:
    """`{layer_0: t, layer_1: t, ...}` -> `{layers: stacked t}` (the nn.scan layout)."""
    layers = [encoder_params[f"layer_{i}"] for i in range(num_layers)]
    return {"layers": jax.tree.map(lambda *xs: jnp.stack(xs), *layers)}


def unstack_layers(encoder_params: dict, num_layers: int) -> dict:
    """`{layers: stacked t}` -> `{layer_0: t, ...}` (the loop layout)."""
    stacked = encoder_params["layers"]
    return {f"layer_{i}": jax.tree.map(lambda t, i=i: t[i], stacked) for i in range(num_layers)}
