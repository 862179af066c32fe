"""Contextual embeddings of texts for downstream systems: one vector per text, or per token.

    python -m bert_jax.tools.embed --checkpoint=DIR --input=texts.txt --output=emb.npy
    python -m bert_jax.tools.embed --checkpoint=DIR --input=texts.txt --output=emb.npy \\
        --pooling=mean --normalize                 # sentence-transformers' all-MiniLM-L6-v2
    python -m bert_jax.tools.embed --checkpoint=DIR --input=texts.txt --output=emb.npy \\
        --pooling=cls --layers=-4,-3,-2,-1 --tokens=tokens.jsonl   # + per-token vectors

    from bert_jax.tools import embed

    embedder = embed.Embedder("/ckpt/all-MiniLM-L6-v2", pooling="mean", normalize=True)
    vectors = embedder(["a gorgeous, witty film", "dull"])       # (2, 384) float32
    for t in embedder.tokens(["Angela Merkel visited Paris."]):  # TokenEmbeddings
        print(t.tokens, t.offsets, t.vectors.shape)              # pieces, spans, (n, 384)

`--input` has one text per line and row i of `--output` (a float32 .npy,
(lines, dim)) is line i, blank lines included (they embed as
"[CLS] [SEP]"). The checkpoint is any directory `pretrained.load` reads (HF,
original TF, bert_jax, a training workdir) with a vocab.txt; lowercasing
follows its tokenizer_config.json (HF) or task.json (workdir), else uncased.
A workdir without results.json (a run stopped or still training) is embedded
with its newest checkpoint after one warning line: "WORKDIR is unfinished:
checkpoint at step S of N".

Pooling, over real tokens only (padding is masked out; [CLS] and [SEP] count,
as in sentence-transformers):

* `mean`: the mean of the token vectors, sum(h * mask) / sum(mask), exactly
  sentence-transformers' `Pooling(pooling_mode_mean_tokens=True)`.
  all-MiniLM-L6-v2 then L2-normalises (its `Normalize` module, x / max(|x|,
  1e-12)): pass `--normalize` for its embeddings (cosine = dot product).
* `cls`: the [CLS] token's hidden state (not the tanh pooler's output).
* `max`: the per-feature maximum over the tokens.

`--layers` picks hidden states by index as HF's `hidden_states`: 0 is the
embedding layer's output, 1..L the encoder layers, -1 the last layer
(negative indices count from the end). Several layers are concatenated
feature-wise by default (`--layer_mode=concat`: dim = layers x hidden), as the
BERT paper's feature-based NER ("Concat Last Four Hidden", 96.1 dev F1 on
CoNLL-2003, section 5.3, Table 7); `--layer_mode=mean` averages them
instead (dim = hidden; the paper's "Weighted Sum Last Four Hidden" with
equal weights, 95.9). The combination is taken per token, then pooled.

Batching: texts are sorted by length, cut into batches of `--batch_size`
(rounded up to a multiple of the mesh's data-parallel size), each padded to
its longest text rounded up to a power of two (at least 8, at most
`--max_length`), and the vectors are put back in input order. A batch shape
is therefore one of a few widths, each compiled once. Texts longer than
`--max_length` wordpieces ([CLS] and [SEP] included) are cut at the end, as
sentence-transformers does at its `max_seq_length` (256 for
all-MiniLM-L6-v2: pass `--max_length=256` to match it on long texts).

Sharding: the forward pass is one `jax.jit` on a mesh over the local devices
(`--mesh_shape`, default all of them on `data`): the batch is split over
the data axes (`sharding.batch_sharding`) and the parameters laid out by the
rules table (`sharding.params_sharding`), as in the trainer. One process;
on several hosts run one per host over its share of the input.

`--tokens=FILE.jsonl` also writes token-level vectors, one JSON line per
text: {"text", "tokens" (wordpieces, without [CLS]/[SEP]), "offsets"
([start, end) character spans in the text: text[start:end] is the word or
the part of it the piece covers), "vectors" (one list per token, the chosen
layers combined as above, never normalised), "truncated"}.

Outputs are written atomically: both files appear, complete, or neither
does (a failed run leaves nothing, not a partial file).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from etils import epath
from jax.sharding import Mesh

from bert_jax import cli, cpu_env, sharding
from bert_jax.checkpoints import pretrained
from bert_jax.data import bad_input, files, progress
from bert_jax.models.bert import BertModel
from bert_jax.tokenizers import from_folder as tokenizers_from_folder

POOLINGS = ("mean", "cls", "max")
LAYER_MODES = ("concat", "mean")
MIN_WIDTH = 8  # the narrowest bucket


@dataclasses.dataclass(frozen=True)
class TokenEmbeddings:
    """One text's wordpieces and their vectors.

    Attributes:
      text: the input text.
      tokens: its wordpieces, without [CLS] and [SEP], after truncation.
      offsets: per token, its (start, end) character span in `text`.
      vectors: (len(tokens), dim) float32, the chosen layers combined.
      truncated: whether wordpieces past `max_length` were dropped.
    """

    text: str
    tokens: tuple[str, ...]
    offsets: tuple[tuple[int, int], ...]
    vectors: np.ndarray
    truncated: bool

    def to_json(self) -> dict:
        return {
            "text": self.text,
            "tokens": list(self.tokens),
            "offsets": [list(o) for o in self.offsets],
            "vectors": self.vectors.tolist(),
            "truncated": self.truncated,
        }


def parse_layers(value: str | Sequence[int]) -> tuple[int, ...]:
    """Layer indices from "-4,-3,-2,-1" (or from a sequence of ints)."""
    if isinstance(value, str):
        try:
            layers = tuple(int(v) for v in value.split(","))
        except ValueError:
            raise ValueError(
                f"--layers={value!r}: give comma-separated layer indices, e.g. -1 or -4,-3,-2,-1"
            ) from None
    else:
        layers = tuple(int(v) for v in value)
    if not layers:
        raise ValueError("--layers: give at least one layer index")
    return layers


def bucket_width(length: int, max_length: int) -> int:
    """The padded width of a batch whose longest row has `length` tokens: a power
    of two, at least MIN_WIDTH, at most max_length."""
    width = MIN_WIDTH
    while width < length:
        width *= 2
    return min(width, max_length)


def _stored_lower_case(d: epath.Path) -> bool:
    for name in ("tokenizer_config.json", "task.json"):
        if (d / name).is_file():
            value = json.loads((d / name).read_text()).get("do_lower_case")
            if value is not None:
                return bool(value)
    return True


def _forward(params, batch, *, model, layers, layer_mode, pooling, normalize, with_tokens):
    """Pooled vectors (B, D) and, with_tokens, the combined token states (B, W, D)."""
    out = model.apply(
        {"params": params},
        batch["input_ids"],
        batch["token_type_ids"],
        batch["attention_mask"],
        deterministic=True,
        output_hidden_states=True,
    )
    states = [out["hidden_states"][i].astype(jnp.float32) for i in layers]
    # (B, W, len(layers) * H) concatenated, or (B, W, H) averaged.
    concat = layer_mode == "concat"
    h = jnp.concatenate(states, axis=-1) if concat else sum(states) / len(states)
    mask = batch["attention_mask"][..., None] > 0  # (B, W, 1): real tokens
    if pooling == "mean":
        # sentence-transformers: sum(h * mask) / clamp(sum(mask), min=1e-9).
        count = jnp.maximum(mask.sum(axis=1).astype(jnp.float32), 1e-9)
        pooled = jnp.where(mask, h, 0.0).sum(axis=1) / count
    elif pooling == "max":
        pooled = jnp.where(mask, h, jnp.finfo(jnp.float32).min).max(axis=1)
    else:
        pooled = h[:, 0]
    if normalize:
        # torch.nn.functional.normalize (sentence-transformers' Normalize): eps 1e-12.
        norm = jnp.linalg.norm(pooled, axis=-1, keepdims=True)
        pooled = pooled / jnp.maximum(norm, 1e-12)
    return {"vectors": pooled, "tokens": h} if with_tokens else {"vectors": pooled}


class Embedder:
    """A checkpoint as a function from texts to vectors (see the module docstring).

    Args:
      checkpoint: any directory `pretrained.load` reads, holding vocab.txt.
      pooling: "mean", "cls" or "max", over real tokens.
      layers: hidden-state indices (0 embeddings, -1 the last layer), or "-4,-3,-2,-1".
      layer_mode: "concat" (feature-wise) or "mean" over `layers`.
      normalize: L2-normalise the pooled vectors (all-MiniLM-L6-v2's Normalize).
      max_length: wordpieces per text, [CLS] and [SEP] included; longer texts are cut.
      batch_size: texts per forward pass (rounded up to a multiple of the
        mesh's data-parallel size).
      do_lower_case: None reads it from the checkpoint directory.
      mesh: a (data, fsdp, tensor) mesh; None puts every device on `data`.

    Raises:
      FileNotFoundError: no checkpoint or vocab.txt.
      ValueError: a bad argument; the message names its flag.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        *,
        pooling: str = "mean",
        layers: str | Sequence[int] = (-1,),
        layer_mode: str = "concat",
        normalize: bool = False,
        max_length: int = 128,
        batch_size: int = 64,
        do_lower_case: bool | None = None,
        mesh: Mesh | None = None,
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"--pooling={pooling!r}: not one of {', '.join(POOLINGS)}")
        if layer_mode not in LAYER_MODES:
            raise ValueError(f"--layer_mode={layer_mode!r}: not one of {', '.join(LAYER_MODES)}")
        if batch_size < 1:
            raise ValueError(f"--batch_size={batch_size}: must be at least 1")
        d = epath.Path(checkpoint)
        if not d.is_dir():
            raise FileNotFoundError(f"--checkpoint {checkpoint}: no such directory")
        try:
            tokenizers_from_folder.family(d)  # before reading the weights
        except ValueError as e:
            raise FileNotFoundError(f"--checkpoint: {e} (the tokenizer)") from e
        config = pretrained.load_config(d)  # validate before reading the weights
        if not 2 < max_length <= config.max_position_embeddings:
            raise ValueError(
                f"--max_length={max_length}: must be in 3..{config.max_position_embeddings} "
                "(the model's position embeddings)"
            )
        n = config.num_layers
        self.layers = parse_layers(layers)
        bad = [i for i in self.layers if not -(n + 1) <= i <= n]
        if bad:
            raise ValueError(
                f"--layers: {', '.join(map(str, bad))} out of range for a {n}-layer model "
                f"(hidden states 0..{n}: 0 the embeddings, {n} or -1 the last layer; "
                f"-{n + 1}..-1 from the end)"
            )
        model, params = pretrained.load(d)
        if unfinished := cli.unfinished(checkpoint):  # a training workdir, stopped early
            logging.warning("%s", unfinished)
        config = model.config
        if "embeddings" not in params:  # a task model: keep its encoder
            params = params["bert"]
        self.model = BertModel(config)
        if do_lower_case is None:
            do_lower_case = _stored_lower_case(d)
        self.tokenizer = tokenizers_from_folder.from_folder(d, do_lower_case)
        self.pooling, self.layer_mode, self.normalize = pooling, layer_mode, normalize
        self.max_length = max_length
        width = len(self.layers) if layer_mode == "concat" else 1
        self.dim = width * config.hidden_size

        # Mesh and shardings, as the trainer plans them (train.plan_state).
        self.mesh = mesh if mesh is not None else sharding.make_mesh((-1, 1, 1))
        dp = sharding.data_parallel_size(self.mesh)
        self.batch_size = -(-batch_size // dp) * dp
        dummy = np.zeros((1, MIN_WIDTH), np.int32)
        with sharding.activate(self.mesh):
            boxed = jax.eval_shape(
                lambda: self.model.init({"params": jax.random.key(0)}, dummy)["params"]
            )
            param_sh = sharding.params_sharding(boxed, self.mesh)
        self.params = jax.device_put(params, param_sh)
        self._batch_sh = sharding.batch_sharding(self.mesh)
        self._jitted = {
            with_tokens: jax.jit(
                functools.partial(
                    _forward,
                    model=self.model,
                    layers=self.layers,
                    layer_mode=layer_mode,
                    pooling=pooling,
                    normalize=normalize,
                    with_tokens=with_tokens,
                ),
                in_shardings=(param_sh, self._batch_sh),
                out_shardings=self._batch_sh,
            )
            for with_tokens in (False, True)
        }

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 vectors, row i for texts[i]."""
        return self.embed(texts)[0]

    def tokens(self, texts: Sequence[str]) -> list[TokenEmbeddings]:
        """Per text, its wordpieces with character offsets and token vectors."""
        return self.embed(texts, with_tokens=True)[1]

    def embed(
        self, texts: Sequence[str], with_tokens: bool = False
    ) -> tuple[np.ndarray, list[TokenEmbeddings] | None]:
        """Pooled vectors (len(texts), dim) and, with_tokens, the token-level
        results, from one pass over the texts."""
        texts = list(texts)
        tok = self.tokenizer
        budget = self.max_length - 2
        encoded = []  # per text: (ids with [CLS]/[SEP], pieces, offsets, truncated)
        for text in texts:
            if with_tokens:
                pieces, offsets = tok.tokenize_with_offsets(text)
            else:
                pieces, offsets = tok.tokenize(text), ()
            ids = [tok.cls_id, *tok.convert_tokens_to_ids(pieces[:budget]), tok.sep_id]
            encoded.append((ids, pieces[:budget], offsets[:budget], len(pieces) > budget))
        cut = sum(e[3] for e in encoded)
        if cut:
            logging.warning("%d of %d texts cut to max_length=%d", cut, len(texts), budget + 2)
        vectors = np.zeros((len(texts), self.dim), np.float32)
        token_out: list[TokenEmbeddings | None] = [None] * len(texts)
        # Longest first: the widest batch compiles (and fails for memory) first.
        order = sorted(range(len(texts)), key=lambda i: -len(encoded[i][0]))
        fn = self._jitted[with_tokens]
        with (
            sharding.activate(self.mesh),
            progress.bar(total=len(texts), desc="embed", unit="text") as bar,
        ):
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                batch = self._batch([encoded[i][0] for i in rows])
                out = jax.device_get(fn(self.params, jax.device_put(batch, self._batch_sh)))
                vectors[rows] = out["vectors"][: len(rows)]
                if with_tokens:
                    for j, i in enumerate(rows):
                        _, pieces, offsets, truncated = encoded[i]
                        token_out[i] = TokenEmbeddings(
                            text=texts[i],
                            tokens=tuple(pieces),
                            offsets=tuple(tuple(o) for o in offsets),
                            vectors=np.array(out["tokens"][j, 1 : 1 + len(pieces)]),
                            truncated=truncated,
                        )
                bar.update(len(rows))
        return vectors, token_out if with_tokens else None

    def _batch(self, rows: list[list[int]]) -> dict[str, np.ndarray]:
        """Rows padded to their bucket width, and to batch_size rows with copies of
        the first (never all-padding rows: every row attends to something)."""
        width = bucket_width(max(len(r) for r in rows), self.max_length)
        rows = rows + [rows[0]] * (self.batch_size - len(rows))
        ids = np.full((len(rows), width), self.tokenizer.pad_id, np.int32)
        mask = np.zeros((len(rows), width), np.int32)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        return {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": mask}


def read_texts(path: str | os.PathLike) -> list[str]:
    """One text per line (blank lines too); errors name the file and line."""
    texts = []
    try:
        for number, line in files.numbered_lines(path):
            if isinstance(line, UnicodeDecodeError):
                raise ValueError(f"--input {path}: line {number} is not UTF-8 ({line})")
            texts.append(line)
    except FileNotFoundError:
        raise FileNotFoundError(f"--input {path}: no such file") from None
    if not any(t.strip() for t in texts):
        raise ValueError(f"--input {path}: no text (the file is empty or blank)")
    return texts


def write_outputs(
    output: str, vectors: np.ndarray, tokens_path: str | None, token_rows: list | None
) -> None:
    """The .npy (and the token JSON lines), both renamed into place only once complete."""
    targets = [output] + ([tokens_path] if tokens_path else [])
    with files.atomic_paths(targets) as temps:
        with epath.Path(temps[0]).open("wb") as f:
            np.save(f, vectors)
        if tokens_path:
            with epath.Path(temps[1]).open("w") as f:
                for t in token_rows:
                    f.write(json.dumps(t.to_json()) + "\n")


# ----------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------

FLAGS = flags.FLAGS
PROG = "bert_jax.tools.embed"


def _define_flags() -> None:
    """The command's flags, defined only when it runs (the module is also imported)."""
    flags.DEFINE_string("checkpoint", None, "A checkpoint directory or workdir with vocab.txt.")
    flags.DEFINE_string("input", None, "A text file, one text per line.")
    flags.DEFINE_string("output", None, "The .npy to write: (lines, dim) float32.")
    flags.DEFINE_enum("pooling", "mean", POOLINGS, "Pooling over real tokens.")
    flags.DEFINE_string("layers", "-1", "Hidden states: 0 embeddings .. -1 last, e.g. -4,-3,-2,-1.")
    flags.DEFINE_enum("layer_mode", "concat", LAYER_MODES, "How several --layers combine.")
    flags.DEFINE_bool("normalize", False, "L2-normalise the pooled vectors.")
    flags.DEFINE_integer("batch_size", 64, "Texts per forward pass.")
    flags.DEFINE_integer("max_length", 128, "Wordpieces per text, [CLS]/[SEP] included.")
    flags.DEFINE_string("tokens", None, "Also write token vectors with offsets here (JSON lines).")
    flags.DEFINE_list("mesh_shape", ["-1", "1", "1"], "(data, fsdp, tensor) over local devices.")
    for name in ("checkpoint", "input", "output"):
        flags.mark_flag_as_required(name)


def run(
    checkpoint: str,
    input_path: str,
    output: str,
    tokens_path: str | None = None,
    mesh_shape: Sequence[int] = (-1, 1, 1),
    **embedder_kwargs,
) -> np.ndarray:
    """The command as a function: read, embed, write; returns the vectors."""
    for flag, path in (("--output", output), ("--tokens", tokens_path)):
        if path and "://" not in path:
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise FileNotFoundError(f"{flag} {path}: no such directory {parent}")
    texts = read_texts(input_path)
    try:
        mesh = sharding.make_mesh(tuple(int(s) for s in mesh_shape))
    except ValueError as e:
        raise ValueError(f"--mesh_shape: {e}") from None
    embedder = Embedder(checkpoint, mesh=mesh, **embedder_kwargs)
    vectors, token_rows = embedder.embed(texts, with_tokens=bool(tokens_path))
    write_outputs(output, vectors, tokens_path, token_rows)
    return vectors


def main(argv):
    if len(argv) > 1:
        raise SystemExit(f"{PROG}: error: unexpected arguments: {argv[1:]}")
    with bad_input.command_errors(PROG):
        vectors = run(
            FLAGS.checkpoint,
            FLAGS.input,
            FLAGS.output,
            FLAGS.tokens,
            FLAGS.mesh_shape,
            pooling=FLAGS.pooling,
            layers=FLAGS.layers,
            layer_mode=FLAGS.layer_mode,
            normalize=FLAGS.normalize,
            max_length=FLAGS.max_length,
            batch_size=FLAGS.batch_size,
        )
    extra = f" and {FLAGS.tokens}" if FLAGS.tokens else ""
    print(f"wrote {FLAGS.output} {vectors.shape}{extra}")


if __name__ == "__main__":
    # The CPU settings `python -m bert_jax.main` starts with (docs/performance.md).
    cpu_env.apply()
    cli.quiet_logging()  # libraries' INFO lines only at --verbosity=1
    _define_flags()
    app.run(main, flags_parser=cli.flags_parser(PROG))
