"""Learns a WordPiece vocabulary in BERT's vocab.txt layout from a corpus.

    python -m bert_jax.data.pretraining.build_vocab --input_file='wiki_*.txt.gz,books.txt' \\
        --output_file=vocab.txt --vocab_size=30522 --do_lower_case=true
    python -m bert_jax.data.pretraining.build_vocab --embedded_corpus --output_file=vocab.txt \\
        --vocab_size=8000

The input is BERT-format text (one sentence per line, blank lines between
documents; see `corpus.py`) and/or `--embedded_corpus`, the standard library's
documentation (`embedded_corpus.py`). Training is HF `tokenizers`'
WordPieceTrainer behind BERT's normalizer and pre-tokenizer, fed from a
stream of sentences, so memory holds word counts, never the corpus.

Layout (ids are line numbers), for `num_unused` = N:

    [PAD], [unused0] .. [unused98], [UNK], [CLS], [SEP], [MASK],
    [unused99] .. [unused{N-1}], learned tokens

the layout of Google's released uncased vocab.txt, which it reproduces for
N = 994 (its [unused*] slots let users add tokens without resizing the
embeddings). [UNK], [CLS], [SEP], [MASK] are thus ids 100-103 as in both
released vocabularies whenever N >= 99; for N < 99 all [unused*] come first.
Learned tokens follow the trainer's order: single characters and their "##"
forms, then merges in the order learned (Google's vocab is ordered
differently after the characters; ids carry no meaning beyond that).

Reproducibility: the `tokenizers` WordPiece trainer breaks ties between
equally frequent merges in hash-map order, so two runs on the same corpus
can differ in a few rare pieces near the vocabulary size cutoff (measured:
10 of 8,000 on the embedded corpus). Build a vocabulary once and keep the
file.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from absl import app, flags, logging
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from bert_jax import cli
from bert_jax.data import bad_input, files, progress
from bert_jax.data.pretraining import corpus, embedded_corpus
from bert_jax.tokenizers.wordpiece import SPECIAL_TOKENS

# Unused slots before [UNK] in Google's vocab.txt: [unused0] .. [unused98].
_UNUSED_BEFORE_UNK = 99


def bert_layout(learned: list[str], num_unused: int) -> list[str]:
    """Specials and [unused*] slots in BERT's order, then `learned` (module docstring)."""
    before = min(num_unused, _UNUSED_BEFORE_UNK)
    return [
        "[PAD]",
        *(f"[unused{i}]" for i in range(before)),
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *(f"[unused{i}]" for i in range(before, num_unused)),
        *learned,
    ]


def build_vocab(
    sentences: Iterable[str],
    vocab_size: int = 30522,
    do_lower_case: bool = True,
    num_unused: int = 100,
    *,
    strip_accents: bool | None = None,
    min_frequency: int = 2,
    limit_alphabet: int = 1000,
    show_progress: bool = False,
) -> list[str]:
    """Learns a WordPiece vocabulary from a stream of sentences.

    Args:
      sentences: the corpus, one sentence (or any text) per item; read once.
      vocab_size: lines of vocab.txt, specials and [unused*] included (30522
        is bert-base-uncased's).
      do_lower_case: lowercase (uncased model); must match the tokenizer's.
      num_unused: [unused*] slots to reserve.
      strip_accents: strip accents; None follows `do_lower_case`, as in the
        original tokenizer.
      min_frequency: a merge must occur this often (HF's BERT default, 2).
      limit_alphabet: keep at most this many distinct characters, the most
        frequent (HF's BERT default, 1000); rarer ones become [UNK].
      show_progress: show the trainer's progress bar.

    Returns:
      The tokens in vocab.txt order: exactly `vocab_size` of them unless the
      corpus has fewer tokens to learn (logged as a warning).

    Raises:
      ValueError: `vocab_size` leaves no room beyond specials and [unused*].
    """
    fixed = num_unused + len(SPECIAL_TOKENS)
    if num_unused < 0 or vocab_size <= fixed:
        raise ValueError(
            f"vocab_size={vocab_size} leaves no room for learned tokens after "
            f"{len(SPECIAL_TOKENS)} special tokens and num_unused={num_unused}"
        )
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    # The original BasicTokenizer's steps: clean control characters and
    # whitespace, split CJK characters, lowercase and strip accents, then
    # split on whitespace and punctuation.
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=True,
        strip_accents=strip_accents,
        lowercase=do_lower_case,
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size - num_unused,  # It counts the special tokens.
        min_frequency=min_frequency,
        limit_alphabet=limit_alphabet,
        special_tokens=list(SPECIAL_TOKENS),
        continuing_subword_prefix="##",
        show_progress=show_progress,
    )
    tokenizer.train_from_iterator(sentences, trainer=trainer)
    by_id = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    learned = [t for t, _ in by_id if t not in SPECIAL_TOKENS]
    # vocab.txt cannot hold a token with whitespace (its lines are stripped);
    # the normalizer should have left none.
    bad = [t for t in learned if not t or any(c.isspace() for c in t)]
    if bad:
        logging.warning("dropping %d tokens with whitespace: %r", len(bad), bad[:10])
        learned = [t for t in learned if t and not any(c.isspace() for c in t)]
    tokens = bert_layout(learned[: vocab_size - fixed], num_unused)
    if len(tokens) < vocab_size:
        logging.warning(
            "the corpus supports only %d of vocab_size=%d tokens (%d learned)",
            len(tokens),
            vocab_size,
            len(learned),
        )
    return tokens


def write_vocab(tokens: Iterable[str], path: str) -> int:
    """Writes vocab.txt, one token per line, atomically (`files.atomic_write`).

    An error leaves no partial file (and any previous `path` untouched).
    Works for local and gs:// paths.

    Returns:
      The number of tokens written.

    Raises:
      ValueError: a token is empty, holds whitespace or repeats.
    """
    seen: set[str] = set()
    with files.atomic_write(path) as f:
        for token in tokens:
            if not token or any(c.isspace() for c in token):
                raise ValueError(f"token {len(seen)} is empty or holds whitespace: {token!r}")
            if token in seen:
                raise ValueError(f"token {token!r} appears twice")
            seen.add(token)
            f.write(f"{token}\n".encode())
    return len(seen)


# ---------------------------------------------------------------------- CLI


def _define_flags() -> None:
    """Flags, defined only when run as a script so importing defines none."""
    flags.DEFINE_string(
        "input_file",
        None,
        "Comma-separated globs of BERT-format text files; tfds:NAME[:SPLIT[:FEATURE]] "
        "reads a TFDS text dataset.",
    )
    flags.DEFINE_bool("embedded_corpus", False, "Also read the stdlib documentation corpus.")
    flags.DEFINE_string("output_file", None, "The vocab.txt to write (local or gs://).")
    flags.DEFINE_integer("vocab_size", 30522, "Lines of vocab.txt, specials included.")
    flags.DEFINE_bool("do_lower_case", True, "Lowercase and strip accents (uncased).")
    flags.DEFINE_integer("num_unused", 100, "[unused*] slots; 994 gives Google's uncased layout.")
    flags.DEFINE_integer("min_frequency", 2, "Least count of a learned merge.")
    flags.DEFINE_integer("limit_alphabet", 1000, "Most distinct characters kept.")
    flags.DEFINE_enum(
        "on_bad_input",
        bad_input.FAIL,
        list(bad_input.VALUES),
        "A non-UTF-8 line or an empty file: fail, or skip (count and warn); see bad_input.py.",
    )
    flags.mark_flag_as_required("output_file")


def _counted(documents: Iterable[list[str]], counts: dict[str, int]) -> Iterator[str]:
    for doc in documents:
        counts["documents"] += 1
        for sentence in doc:
            counts["sentences"] += 1
            counts["characters"] += len(sentence)
            yield sentence


def main(argv: list[str]) -> None:
    prog = "bert_jax.data.pretraining.build_vocab"
    with bad_input.command_errors(prog), bad_input.interruptible(prog):
        _main(argv)


def _main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cfg = flags.FLAGS
    if not cfg.input_file and not cfg.embedded_corpus:
        raise app.UsageError("give --input_file, --embedded_corpus or both")
    start = time.time()
    stats = corpus.CorpusStats()
    sources = []
    if cfg.input_file:
        sources.append(
            corpus.text_documents(cfg.input_file, on_bad_input=cfg.on_bad_input, stats=stats)
        )
    if cfg.embedded_corpus:
        sources.append(embedded_corpus.embedded_documents())
    counts = {"documents": 0, "sentences": 0, "characters": 0}
    # Reading is the slow phase: a tqdm bar with a rate, in place of the
    # trainer's own bars (no rate, and they would draw over this one).
    sentences = progress.bar(
        (s for source in sources for s in _counted(source, counts)),
        desc="reading",
        unit=" sentences",
        unit_scale=True,
    )
    tokens = build_vocab(
        sentences,
        vocab_size=cfg.vocab_size,
        do_lower_case=cfg.do_lower_case,
        num_unused=cfg.num_unused,
        min_frequency=cfg.min_frequency,
        limit_alphabet=cfg.limit_alphabet,
    )
    write_vocab(tokens, cfg.output_file)
    if cfg.input_file:
        print(f"text files: {stats.summary()}")
    print(
        f"read {counts['documents']} documents, {counts['sentences']} sentences, "
        f"{counts['characters']} characters"
    )
    pieces = sum(t.startswith("##") for t in tokens)
    print(
        f"wrote {len(tokens)} tokens ({pieces} '##' pieces, {cfg.num_unused} unused; "
        f"vocab_size={cfg.vocab_size}) to {cfg.output_file} in {time.time() - start:.1f}s"
    )


if __name__ == "__main__":
    cli.quiet_logging()  # libraries' INFO lines only at --verbosity=1
    _define_flags()
    app.run(main)
