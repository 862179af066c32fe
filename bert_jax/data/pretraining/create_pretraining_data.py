"""Pretraining TFRecords from raw text: the original BERT recipe, streamed and parallel.

    python -m bert_jax.data.pretraining.create_pretraining_data \\
        --input_file='corpus/*.txt,more/*.txt.gz' \\
        --output_file=out/train-0.tfrecord,out/train-1.tfrecord \\
        --vocab_file=vocab.txt --do_lower_case=True [--do_whole_word_mask] \\
        --max_seq_length=128 --max_predictions_per_seq=20 --masked_lm_prob=0.15 \\
        --dupe_factor=10 --random_seed=12345 [--num_workers=16 --docs_per_block=10000]
        [--dynamic] [--objective=nsp|sop|none]

A drop-in for google-research/bert `create_pretraining_data.py`: the same input
format (one sentence a line, a blank line between documents), flags, recipe
(`bert_jax.data.pretraining.instances`) and TFRecord features
(`bert_jax.data.pretraining.records.FEATURES`, round-robin over the output
files). It differs where the original does not scale:

* Bounded memory. The original holds every document and every instance of all
  `dupe_factor` passes in memory (hence out-of-memory on Wikipedia-sized
  corpora) and shuffles them all at the end. Here the inputs, read in order as
  one stream of documents, go through in blocks of `--docs_per_block`, and
  each block runs the original's `create_training_instances` on its own:
  shuffle its documents, `dupe_factor` passes, shuffle its instances. So (1) a
  random next segment B comes from another document of the same block, not of
  the whole corpus (for blocks of thousands of documents the statistics are the
  same: the chance of drawing the document itself, then retried, is 1/block);
  (2) the final shuffle is within a block, a bounded shuffle buffer, not
  global: each stretch of output comes from one block and holds its
  `dupe_factor` copies of each document. Shuffle again when training (several
  files read interleaved, a shuffle buffer). A short last block (under half a
  block) is merged into the one before, so no block draws B from a handful of
  documents. Memory: a block holds its text and serialized examples, ~0.8 KB
  an example at max_seq_length=128, e.g. 10,000 Wikipedia-sized documents
  (~5 examples each) x dupe_factor 10 = ~400 MB; at most num_workers + 2
  blocks are in flight. Lower `--docs_per_block` on small machines.
* Exactness. Block 0 uses `--random_seed` itself, so a corpus that fits in one
  block gives exactly the original's output (same examples, same order, same
  files); later blocks get their own seeds from (random_seed, block index).
  The output depends on the inputs and flags only, not on `--num_workers`.
* Speed. Blocks are tokenized and cut in worker processes (`--num_workers`,
  all cores by default), and examples are serialized straight to protobuf
  bytes. One worker makes ~20k examples/s at dupe_factor 10 (3.5x the
  original's algorithm with the same tokenizer); the main process reads and
  writes (~5 us an example, ~20 us a document), enough for ~10 workers.
* Bad input is reported: undecodable (non-UTF-8) lines with file and line
  (`--on_bad_input=fail` stops, `skip` drops the line), empty input files
  (fail, or skip with a warning), documents without any token (skipped and
  counted, as the original silently does), sentences longer than a sequence
  (counted; the recipe truncates them). Outputs are written to temporary files
  renamed at the end, so a failed run leaves no partial TFRecord; the command
  stopped by Ctrl-C or SIGTERM removes its temporary files (and the output
  folders it made) and exits with status 1.

Beyond the original:

* `--dynamic` writes unmasked records for masking at training time
  (RoBERTa's dynamic masking; `pretraining_loader` masks every batch afresh):
  only `pretraining_records.UNMASKED` (input_ids, input_mask, segment_ids,
  next_sentence_labels), and one pass (`dupe_factor` is set to 1: more passes
  would only repeat the sequences). The recipe still draws its masks, then
  they are undone: the random stream, hence the sequences, labels, order and
  files, is exactly that of the static run with `--dupe_factor=1`. The wasted
  draws cost little against the 10x fewer examples.
* `--objective` picks the sentence-level task (`pretraining_instances`
  module docstring): `nsp` (BERT's, the default), `sop` (ALBERT's
  sentence-order prediction, label 1 = swapped) or `none` (RoBERTa's
  FULL-SENTENCES packing, label 0). Each works with static masking too (then
  `dupe_factor` passes with different masks, as for `nsp`) and with
  `--dynamic`.
* `--max_ngram=3` masks n-gram spans as ALBERT (`pretraining_instances.mask_tokens`);
  ALBERT's data is `--objective=sop --max_ngram=3` (configs/pretrain.py
  recipe=albert).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import multiprocessing
import os
import random
import struct
import time
from collections.abc import Iterator, Sequence

from absl import app, flags, logging

from bert_jax import cli
from bert_jax.data import bad_input, files, progress
from bert_jax.data.pretraining import corpus
from bert_jax.data.pretraining import instances as recipe
from bert_jax.data.pretraining.masking_vocab import MaskingVocab
from bert_jax.tokenizers.wordpiece import BertTokenizer

# TensorFlow is imported only in the main process, for writing (and for
# globbing and gs:// paths in `files`), so that worker processes start fast and small.

FLAGS = flags.FLAGS


def _define_flags() -> None:
    """The original script's flags (same names, defaults and meanings), plus ours."""
    flags.DEFINE_string(
        "input_file",
        None,
        "Input text files: comma-separated globs; tfds:NAME[:SPLIT[:FEATURE]] reads a TFDS "
        "text dataset (e.g. tfds:wikipedia/20230601.en).",
    )
    flags.DEFINE_string(
        "output_file", None, "Output TFRecord files, comma-separated; examples go round-robin."
    )
    flags.DEFINE_string("vocab_file", None, "The BERT model's vocab.txt.")
    flags.DEFINE_bool("do_lower_case", True, "Lowercase and strip accents (uncased models).")
    flags.DEFINE_bool("do_whole_word_mask", False, "Mask all wordpieces of a word together.")
    flags.DEFINE_integer(
        "max_ngram", 1, "Mask spans of up to n units, p(n) ~ 1/n (ALBERT: 3); 1: BERT's masking."
    )
    flags.DEFINE_integer("max_seq_length", 128, "Maximum sequence length.")
    flags.DEFINE_integer("max_predictions_per_seq", 20, "Maximum masked LM predictions a sequence.")
    flags.DEFINE_integer("random_seed", 12345, "Random seed for data generation.")
    flags.DEFINE_integer("dupe_factor", 10, "Passes over the input, each with different masks.")
    flags.DEFINE_float("masked_lm_prob", 0.15, "Masked LM probability.")
    flags.DEFINE_float("short_seq_prob", 0.1, "Probability of a shorter target length.")
    flags.DEFINE_integer("num_workers", None, "Worker processes (default: all cores).")
    flags.DEFINE_integer(
        "docs_per_block", 10_000, "Documents processed together: the random-next pool and shuffle."
    )
    flags.DEFINE_bool(
        "dynamic", False, "Write unmasked sequences, masked at training time (dupe_factor 1)."
    )
    flags.DEFINE_enum(
        "objective", "nsp", list(recipe.OBJECTIVES), "Sentence-level task: nsp, sop or none."
    )
    flags.DEFINE_enum(
        "on_bad_input",
        bad_input.FAIL,
        list(bad_input.VALUES),
        "Undecodable lines, empty files: stop, or skip (count and warn); see bad_input.py.",
    )
    flags.mark_flags_as_required(["input_file", "output_file", "vocab_file"])


# -------------------------------------------------------------------- input


def _blocks(
    input_files: Sequence[str], docs_per_block: int, on_bad_input: str, stats: corpus.CorpusStats
) -> Iterator[list[list[str]]]:
    """The documents of all files, in order, in blocks of `docs_per_block`.

    A last block shorter than half a block is merged into the previous one.
    """
    block: list[list[str]] = []
    full: list[list[str]] | None = None  # Held back one step, to merge a short tail.
    for source in input_files:
        for doc in corpus.source_documents(source, on_bad_input=on_bad_input, stats=stats):
            block.append(doc)
            if len(block) == docs_per_block:
                if full is not None:
                    yield full
                full, block = block, []
    if full is not None and len(block) < docs_per_block // 2:
        full, block = full + block, []
    for b in (full, block):
        if b:
            yield b


# ----------------------------------------------------------------- examples

_FLOAT_ONE, _FLOAT_ZERO = struct.pack("<f", 1.0), struct.pack("<f", 0.0)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class ExampleEncoder:
    """Serializes an `Instance` to a tf.train.Example in the original's layout.

    Writes the protobuf wire format directly, about 4x faster than building
    `tf.train.Example` objects; `tf.train.Example.FromString` parses it to the
    message the original's `write_instance_to_example_files` writes.
    An Example is `features` (field 1) = Features, whose map `feature` (field
    1) holds entries {key (1): name, value (2): Feature}; a Feature is
    `float_list` (2) or `int64_list` (3), each a packed `value` (1).
    """

    def __init__(self, max_seq_length: int, max_predictions: int, vocab_size: int):
        self.max_seq_length, self.max_predictions = max_seq_length, max_predictions
        # Varints of every id, position and length that can occur (a message
        # holds at most 4 bytes an id, 1 a mask/segment value, 4 a weight).
        top = max(vocab_size, 6 * max_seq_length + 10 * max_predictions + 512)
        self._varints = [_varint(i) for i in range(top)]
        self._zeros = [b"\0" * i for i in range(max(max_seq_length, max_predictions) + 1)]
        self._ones = [b"\1" * i for i in range(max_seq_length + 1)]

    def _entry(self, name: bytes, payload: bytes, list_tag: int = 0x1A) -> bytes:
        """A map entry {name: Feature{int64_list (0x1A) or float_list (0x12): payload}}."""
        v = self._varints
        m = len(payload)
        list_len = 1 + len(v[m]) + m  # Int64List/FloatList: tag 0x0A, length, payload.
        feature_len = 1 + len(v[list_len]) + list_len
        entry_len = 2 + len(name) + 1 + len(v[feature_len]) + feature_len
        header = [b"\x0a", v[entry_len], b"\x0a", v[len(name)], name]
        header += [b"\x12", v[feature_len], bytes((list_tag,)), v[list_len], b"\x0a", v[m]]
        return b"".join(header) + payload

    def _sequence(self, ids: list[int], len_a: int) -> bytes:
        """The input_ids, input_mask and segment_ids entries, padded."""
        v, zeros, ones, entry = self._varints, self._zeros, self._ones, self._entry
        n = len(ids)
        pad = self.max_seq_length - n
        if pad < 0:
            raise ValueError(f"instance of {n} tokens does not fit")
        len_b = n - len_a - 2  # Segment 1: B and its [SEP].
        return b"".join(
            (
                entry(b"input_ids", b"".join([v[t] for t in ids]) + zeros[pad]),
                entry(b"input_mask", ones[n] + zeros[pad]),
                entry(b"segment_ids", zeros[len_a + 2] + ones[len_b] + zeros[pad]),
            )
        )

    def _label(self, inst: recipe.Instance) -> bytes:
        return self._entry(
            b"next_sentence_labels", self._ones[1] if inst.is_random_next else self._zeros[1]
        )

    def encode(self, inst: recipe.Instance) -> bytes:
        v, zeros, entry = self._varints, self._zeros, self._entry
        k = len(inst.masked_lm_positions)
        pred_pad = self.max_predictions - k
        if pred_pad < 0:
            raise ValueError(f"instance of {k} predictions does not fit")
        features = b"".join(
            (
                self._sequence(inst.input_ids, inst.len_a),
                entry(
                    b"masked_lm_positions",
                    b"".join([v[p] for p in inst.masked_lm_positions]) + zeros[pred_pad],
                ),
                entry(
                    b"masked_lm_ids",
                    b"".join([v[t] for t in inst.masked_lm_ids]) + zeros[pred_pad],
                ),
                entry(
                    b"masked_lm_weights",
                    _FLOAT_ONE * k + _FLOAT_ZERO * pred_pad,
                    list_tag=0x12,
                ),
                self._label(inst),
            )
        )
        return b"\x0a" + v[len(features)] + features

    def encode_unmasked(self, inst: recipe.Instance) -> bytes:
        """The instance with its masks undone, as `pretraining_records.UNMASKED` only."""
        ids = list(inst.input_ids)
        for p, t in zip(inst.masked_lm_positions, inst.masked_lm_ids, strict=True):
            ids[p] = t
        features = self._sequence(ids, inst.len_a) + self._label(inst)
        return b"\x0a" + self._varints[len(features)] + features


def block_rng(random_seed: int, block_index: int) -> random.Random:
    """Block 0 takes the seed itself (a one-block corpus reproduces the original).

    Later blocks seed from a string, which `random.Random` hashes with SHA-512:
    independent streams, the same on every machine and Python run.
    """
    if block_index == 0:
        return random.Random(random_seed)
    return random.Random(f"create_pretraining_data seed {random_seed} block {block_index}")


_worker: dict = {}  # Per process: the tokenizer, vocab and encoder (`_init_worker`).


def _init_worker(
    vocab_file: str, do_lower_case: bool, config: recipe.RecipeConfig, dynamic: bool
) -> None:
    tokenizer = BertTokenizer(vocab_file, do_lower_case)
    _worker.update(
        tokenizer=tokenizer,
        config=config,
        dynamic=dynamic,
        vocab=MaskingVocab.from_vocab(tokenizer.vocab),
        encoder=ExampleEncoder(
            config.max_seq_length, config.max_predictions_per_seq, tokenizer.vocab_size
        ),
    )


def _process_block(
    block_index: int, texts: list[list[str]], random_seed: int
) -> tuple[list[bytes], collections.Counter]:
    """Tokenizes a block of documents and runs the recipe: shuffled serialized examples."""
    tok, config = _worker["tokenizer"], _worker["config"]
    dynamic = _worker["dynamic"]
    encoder = _worker["encoder"]
    encode = encoder.encode_unmasked if dynamic else encoder.encode
    max_num_tokens = config.max_seq_length - 3
    counts = collections.Counter()
    documents = []
    for text in texts:
        doc = []
        for line in text:
            ids = tok.convert_tokens_to_ids(tok.tokenize(line))
            if ids:  # Lines of only dropped characters vanish, as in the original.
                doc.append(ids)
                counts["long_sentences"] += len(ids) > max_num_tokens
        if doc:
            documents.append(doc)
            counts["sentences"] += len(doc)
        else:
            counts["empty_documents"] += 1
    counts["documents"] = len(documents)
    rng = block_rng(random_seed, block_index)
    records = []
    tokens = masked = random_next = 0
    for inst in recipe.generate_instances(
        documents, rng, config, _worker["vocab"], tok.cls_id, tok.sep_id
    ):
        records.append(encode(inst))
        tokens += len(inst.input_ids)
        masked += 0 if dynamic else len(inst.masked_lm_positions)
        random_next += inst.is_random_next
    rng.shuffle(records)  # The original's final shuffle, within the block.
    counts.update(examples=len(records), tokens=tokens, masked=masked, random_next=random_next)
    return records, counts


def _map_blocks(
    blocks: Iterator[list[list[str]]], worker_args: tuple, random_seed: int, num_workers: int
) -> Iterator[tuple[list[bytes], collections.Counter]]:
    """`_process_block` over the blocks, in worker processes, results in block order."""
    numbered = enumerate(blocks)
    head = list(itertools.islice(numbered, 2))
    if num_workers <= 1 or len(head) < 2:  # One block: no processes to start.
        _init_worker(*worker_args)
        for index, texts in itertools.chain(head, numbered):
            yield _process_block(index, texts, random_seed)
        return
    # "spawn": the parent has TensorFlow's threads, which fork does not copy.
    with multiprocessing.get_context("spawn").Pool(num_workers, _init_worker, worker_args) as pool:
        pending: collections.deque = collections.deque()
        for index, texts in itertools.chain(head, numbered):
            pending.append(pool.apply_async(_process_block, (index, texts, random_seed)))
            if len(pending) >= num_workers + 2:  # Bounds the blocks held in memory.
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


# ------------------------------------------------------------------- driver


_LABEL_NAMES = {"nsp": "random next", "sop": "swapped", "none": "label 1"}


def _summary(counts: collections.Counter, seconds: float, objective: str) -> str:
    docs, examples, tokens = counts["documents"], counts["examples"], counts["tokens"]
    return (
        f"{docs:,} documents ({docs / seconds:,.0f}/s), {examples:,} examples "
        f"({examples / seconds:,.0f}/s) in {seconds:.1f} s; {counts['sentences']:,} sentences, "
        f"{tokens:,} tokens in examples, {counts['masked']:,} masked "
        f"({counts['masked'] / max(tokens, 1):.1%}), {_LABEL_NAMES[objective]} "
        f"{counts['random_next'] / max(examples, 1):.1%}; skipped: "
        f"{counts['empty_documents']:,} empty documents, {counts['bad_lines']:,} undecodable "
        f"lines, {counts['empty_files']:,} empty files; {counts['long_sentences']:,} sentences "
        "longer than a sequence (truncated)"
    )


@contextlib.contextmanager
def _output_folders(output_files: Sequence[str]) -> Iterator[None]:
    """Makes the folders of `output_files`; removes those it made if the block fails."""
    import tensorflow as tf

    made = []
    for folder in sorted({os.path.dirname(f) for f in output_files if os.path.dirname(f)}):
        top = None
        parent = folder
        while parent and not tf.io.gfile.exists(parent):
            top, parent = parent, os.path.dirname(parent)
        tf.io.gfile.makedirs(folder)
        if top is not None:
            made.append(top)
    try:
        yield
    except BaseException:
        for top in made:  # made by this run: nothing in it is anyone else's
            if tf.io.gfile.exists(top):
                tf.io.gfile.rmtree(top)
        raise


def run(
    input_files: Sequence[str],
    output_files: Sequence[str],
    vocab_file: str,
    config: recipe.RecipeConfig,
    *,
    do_lower_case: bool = True,
    random_seed: int = 12345,
    num_workers: int | None = None,
    docs_per_block: int = 10_000,
    on_bad_input: str = "fail",
    dynamic: bool = False,
) -> dict[str, int]:
    """Writes pretraining examples from text files to TFRecords; returns the counts.

    Args:
      input_files: text files (.gz allowed) and "tfds:" datasets
        (`corpus.source_documents`), read in this order.
      output_files: TFRecord paths; examples go round-robin, as in the original.
      vocab_file, do_lower_case: the tokenizer.
      config: the recipe's flags.
      random_seed: as the original's `--random_seed`.
      num_workers: processes (default: all cores); the output does not depend on it.
      docs_per_block: documents per block (see the module docstring).
      on_bad_input: undecodable lines and empty files: "fail" or "skip"
        (`bad_input`).
      dynamic: write unmasked records (`pretraining_records.UNMASKED`), one
        pass (`config.dupe_factor` is replaced by 1).

    Returns:
      Counts: documents, sentences, examples, tokens, masked (0 when dynamic),
      random_next (examples with label 1, whatever the objective),
      empty_documents, bad_lines, empty_files, long_sentences, ...
    """
    bad_input.check(on_bad_input)
    if docs_per_block < 1:
        raise ValueError(f"docs_per_block={docs_per_block} < 1")
    if not output_files or len(set(output_files)) != len(output_files):
        raise ValueError(f"output files must be given, each once: {list(output_files)}")
    BertTokenizer(vocab_file, do_lower_case)  # Fails now on a bad vocab, naming the file.
    if num_workers is None:
        num_workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    if dynamic and config.dupe_factor != 1:
        logging.info(
            "--dynamic: dupe_factor %d -> 1 (masks are drawn at training time)",
            config.dupe_factor,
        )
        config = dataclasses.replace(config, dupe_factor=1)
    logging.info("%d input files, %d output files", len(input_files), len(output_files))

    counts: collections.Counter = collections.Counter()
    stats = corpus.CorpusStats()
    blocks = _blocks(input_files, docs_per_block, on_bad_input, stats)
    # The first block is read before TensorFlow starts and before any output
    # exists: a corpus that is bad there (not UTF-8, no documents) fails in a
    # fraction of a second and leaves nothing.
    blocks = itertools.chain(list(itertools.islice(blocks, 1)), blocks)
    import tensorflow as tf

    worker_args = (vocab_file, do_lower_case, config, dynamic)
    start = last_log = time.monotonic()
    # The corpus is streamed once, so its size is unknown: the bar counts
    # documents (with their rate), and shows the inputs opened so far.
    bar = progress.bar(desc="documents", unit=" docs", unit_scale=True)
    # A failed or interrupted run leaves no partial TFRecord, no temporary file,
    # no folder it made for its outputs, and earlier outputs untouched.
    with bar, _output_folders(output_files), files.atomic_paths(output_files) as temps:
        writers = [tf.io.TFRecordWriter(t) for t in temps]
        try:
            written = 0
            for records, block_counts in _map_blocks(blocks, worker_args, random_seed, num_workers):
                for r in records:
                    writers[written % len(writers)].write(r)
                    written += 1
                counts.update(block_counts)
                bar.set_postfix_str(
                    f"{counts['examples']:,} examples, input {stats.files}/{len(input_files)}",
                    refresh=False,
                )
                bar.update(block_counts["documents"])
                if time.monotonic() - last_log > 10:
                    last_log = time.monotonic()
                    elapsed = last_log - start
                    logging.info(
                        "%s documents (%.0f/s), %s examples (%.0f/s)",
                        f"{counts['documents']:,}",
                        counts["documents"] / elapsed,
                        f"{counts['examples']:,}",
                        counts["examples"] / elapsed,
                    )
        finally:
            for w in writers:
                w.close()
        counts.update(
            bad_lines=stats.skipped_lines,
            empty_files=len(stats.empty_files),
            empty_documents=stats.empty_documents,  # Blank-line runs; add those without tokens.
        )
        if not counts["examples"]:
            raise ValueError(f"no examples: the inputs hold no text ({list(input_files)})")
    logging.info("Wrote %s", _summary(counts, time.monotonic() - start, config.objective))
    if stats.skipped or stats.empty_files:
        logging.warning("Skipped lines: %s; empty files: %s", stats.skipped, stats.empty_files)
    return dict(counts)


def main(argv: Sequence[str]) -> None:
    prog = "bert_jax.data.pretraining.create_pretraining_data"
    with bad_input.command_errors(prog), bad_input.interruptible(prog):
        _main(argv)


def _main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = recipe.RecipeConfig(
        max_seq_length=FLAGS.max_seq_length,
        max_predictions_per_seq=FLAGS.max_predictions_per_seq,
        masked_lm_prob=FLAGS.masked_lm_prob,
        short_seq_prob=FLAGS.short_seq_prob,
        dupe_factor=FLAGS.dupe_factor,
        do_whole_word_mask=FLAGS.do_whole_word_mask,
        objective=FLAGS.objective,
        max_ngram=FLAGS.max_ngram,
    )
    run(
        corpus.expand_sources(FLAGS.input_file),
        [f.strip() for f in FLAGS.output_file.split(",") if f.strip()],
        FLAGS.vocab_file,
        config,
        do_lower_case=FLAGS.do_lower_case,
        random_seed=FLAGS.random_seed,
        num_workers=FLAGS.num_workers,
        docs_per_block=FLAGS.docs_per_block,
        on_bad_input=FLAGS.on_bad_input,
        dynamic=FLAGS.dynamic,
    )


if __name__ == "__main__":
    cli.quiet_logging()  # libraries' INFO lines only at --verbosity=1
    _define_flags()
    app.run(main)
