"""The original BERT pretraining recipe: sentence pairs, next-sentence labels, masking.

A faithful reimplementation of google-research/bert `create_pretraining_data.py`
(`create_instances_from_document`, `create_masked_lm_predictions` with
whole-word masking, `truncate_seq_pair`, the document and instance shuffles of
`create_training_instances`), on token ids and without I/O. Given the same
documents and a `random.Random` in the same state, it draws the same random
numbers in the same order as the original and returns the same instances; the
test suite checks this against a transcription of the original
(tests/data/original_recipe.py).

The recipe, with max_num_tokens = max_seq_length - 3 ([CLS] A [SEP] B [SEP]):
  * per document, the target length is max_num_tokens, or with probability
    `short_seq_prob` a random length in [2, max_num_tokens];
  * sentences accumulate into a chunk until the target is reached (or the
    document ends); A = the chunk's first `a_end` sentences, a_end uniform in
    [1, len(chunk) - 1];
  * B is, with probability 1/2 (always for a one-sentence chunk, so short
    documents raise the random share), a span from a random other document
    (up to 10 draws to avoid this one), and the chunk's unused sentences are
    put back for the next chunk; otherwise B = the rest of the chunk;
  * the longer of A and B loses a token from its front or back (at random)
    until both fit;
  * masking: every token but [CLS]/[SEP] is a candidate (with whole-word
    masking, a "##" piece joins the previous candidate), shuffled;
    num_to_predict = min(max_predictions, max(1, round(len * masked_lm_prob)))
    with Python 3's round; whole candidates are taken while they fit, and each
    taken token becomes [MASK] (80%), stays (10%) or becomes a random
    vocabulary entry (10%), drawn per token; predictions sorted by position
    (`mask_tokens`; the ids come from `masking_vocab.MaskingVocab`). ALBERT's
    n-gram masking (`RecipeConfig.max_ngram`) picks spans instead.

Two more sentence-level objectives (`RecipeConfig.objective`), for ALBERT-
and RoBERTa-style pretraining; both draw the same masks as above:
  * "sop", sentence-order prediction (ALBERT, Lan et al. 2019, section 4.2):
    chunks and A/B split as above, but B is always the rest of the chunk (the
    text right after A in the same document); after truncation A and B are
    swapped with probability 1/2, label 1 = swapped. A one-sentence chunk
    (a one-sentence document, or a sentence that alone reaches the target
    length) has no B: it becomes [CLS] A [SEP] with label 0, so its text still
    feeds the masked LM. (ALBERT's script pairs it with a random B instead,
    a leftover of NSP that makes the label mean "random" there.)
  * "none", RoBERTa's FULL-SENTENCES (Liu et al. 2019, section 4.2): the
    block's sentences packed in order into [CLS] ... [SEP] sequences of up to
    max_seq_length - 2 tokens, running across documents with an extra [SEP]
    between two documents; a sentence that does not fit starts the next
    sequence (one longer than a sequence is cut). Segment ids are all 0, the
    label 0, and there are no short sequences (RoBERTa section 3.1).

Random numbers: a `random.Random` in the original's state gives the original's
exact stream. Dynamic masking at training time is `pretraining_loader.mask_batch`,
vectorised over padded batches; both take the ids they need from one
`masking_vocab.MaskingVocab`.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Container, Iterator, Sequence
from typing import NamedTuple

from bert_jax.data.pretraining.masking_vocab import MaskingVocab


class Instance(NamedTuple):
    """One sentence pair, unpadded: what the original calls a `TrainingInstance`.

    `input_ids` is [CLS] A [SEP] B [SEP] after masking; segment 0 covers the
    first `len_a + 2` tokens, segment 1 the rest (none for a "sop" A alone and
    for "none", whose sequences are [CLS] ... [SEP] with `len_a = n - 2`).
    """

    input_ids: list[int]
    len_a: int
    masked_lm_positions: list[int]
    masked_lm_ids: list[int]  # The original ids at those positions.
    # next_sentence_labels = 1 when True (the original's convention); for "sop"
    # it means A and B are swapped, for "none" it is always False.
    is_random_next: bool


# ------------------------------------------------------------------ masking


def num_to_predict(length: int, masked_lm_prob: float, max_predictions: int) -> int:
    """How many tokens a sequence of `length` (specials included) gets masked."""
    return min(max_predictions, max(1, int(round(length * masked_lm_prob))))


def _shuffle_exact(x: list, rng: random.Random) -> None:
    """`random.Random.shuffle`, inlined: the same draws and result, ~1.6x faster.

    CPython's shuffle is Fisher-Yates from the back with `_randbelow(i + 1)`,
    which draws `getrandbits(bit_length)` until the value is in range.
    """
    getrandbits = rng.getrandbits
    for i in range(len(x) - 1, 0, -1):
        n = i + 1
        k = n.bit_length()
        j = getrandbits(k)
        while j >= n:
            j = getrandbits(k)
        x[i], x[j] = x[j], x[i]


def _check_shuffle_exact() -> bool:
    """Whether this Python's `random.Random.shuffle` is the one `_shuffle_exact` inlines."""
    for n in (1, 2, 3, 7, 64, 129):
        a, b = list(range(n)), list(range(n))
        r1, r2 = random.Random(n), random.Random(n)
        r1.shuffle(a)
        _shuffle_exact(b, r2)
        if a != b or r1.random() != r2.random():
            return False
    return True


_SHUFFLE_EXACT_OK = _check_shuffle_exact()


def _shuffle(x: list, rng: random.Random) -> None:
    if _SHUFFLE_EXACT_OK and type(rng) is random.Random:
        _shuffle_exact(x, rng)
    else:
        rng.shuffle(x)


def _candidates(
    ids: Sequence[int], special: Container[int], continuation: Container[int] | None
) -> list[int] | list[list[int]]:
    """Positions not in `special`; grouped into words when `continuation` is given."""
    if continuation is None:
        return [i for i, t in enumerate(ids) if t not in special]
    groups: list[list[int]] = []
    for i, t in enumerate(ids):
        if t in special:
            continue
        # A "##" piece joins the previous candidate, even across [SEP] (as the original).
        if groups and t in continuation:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _original_choice(candidates: list[int] | list[list[int]], budget: int, rng) -> list[int]:
    """The original's pick: shuffled candidates, whole ones taken while they fit."""
    _shuffle(candidates, rng)
    if candidates and isinstance(candidates[0], int):
        return candidates[:budget]  # Single positions always fit until the budget is met.
    chosen = []
    # The groups partition the positions, so the original's `covered_indexes`
    # check never fires and is left out; it draws no random numbers.
    for group in candidates:
        if len(chosen) >= budget:
            break
        if len(chosen) + len(group) <= budget:  # A word that would not fit is skipped.
            chosen += group
    return chosen


def _ngram_spans(
    candidates: list[int] | list[list[int]],
    budget: int,
    max_ngram: int,
    rng: random.Random,
) -> list[int]:
    """ALBERT's n-gram masking (Lan et al. 2020, section 4.1, after Joshi et
    al. 2019): spans of n consecutive units (tokens, or words with whole-word
    masking), n <= `max_ngram` drawn with p(n) proportional to 1/n.

    Units are visited from a shuffled order of span starts; a span stays
    inside one segment (never across [SEP]), shrinks until it fits the
    budget, and is skipped when it would overlap a chosen one.
    """
    units = [[c] if isinstance(c, int) else c for c in candidates]
    weights = [1.0 / n for n in range(1, max_ngram + 1)]
    starts = list(range(len(units)))
    _shuffle(starts, rng)
    chosen: list[int] = []
    taken = set()
    for start in starts:
        if len(chosen) >= budget:
            break
        (n,) = rng.choices(range(1, max_ngram + 1), weights)
        span = [units[start]]
        for nxt in units[start + 1 : start + n]:
            # Units are adjacent when only the unit itself lies between them;
            # a special token ([SEP]) between two ends the span.
            if nxt[0] != span[-1][-1] + 1:
                break
            span.append(nxt)
        while span and len(chosen) + sum(map(len, span)) > budget:
            span.pop()
        positions = [p for unit in span for p in unit]
        if not positions or taken.intersection(positions):
            continue
        chosen += positions
        taken.update(positions)
    return chosen


def mask_tokens(
    ids: Sequence[int],
    rng: random.Random,
    vocab: MaskingVocab,
    masked_lm_prob: float = 0.15,
    max_predictions: int = 20,
    whole_word: bool = False,
    max_ngram: int = 1,
) -> tuple[list[int], list[int], list[int]]:
    """The original's `create_masked_lm_predictions`, on ids.

    Every token but `vocab.special_ids` is a candidate (with `whole_word`, a
    "##" piece joins the candidate before it); the candidates are shuffled and
    whole ones taken while they fit in `num_to_predict`; each taken token
    becomes [MASK] (80%), stays (10%) or becomes a random replacement (10%).

    Args:
      ids: [CLS] ... [SEP] ... [SEP] token ids, WITHOUT padding (the number to
        predict is a share of the length).
      rng: the block's `random.Random`: the original's exact stream.
      vocab: `MaskingVocab.from_vocab(tokenizer.vocab)`.
      masked_lm_prob, max_predictions, whole_word: as in the original.
      max_ngram: > 1 masks n-gram spans instead (`_ngram_spans`, ALBERT);
        1 is the original's draw, random number for random number.

    Returns:
      (masked ids, sorted masked positions, original ids there).
    """
    continuation = vocab.continuation_ids if whole_word else None
    candidates = _candidates(ids, vocab.special_ids, continuation)
    budget = num_to_predict(len(ids), masked_lm_prob, max_predictions)
    if max_ngram > 1:
        chosen = _ngram_spans(candidates, budget, max_ngram, rng)
    else:
        chosen = _original_choice(candidates, budget, rng)
    output = list(ids)
    random_, replacements = rng.random, vocab.replacements
    for index in chosen:
        if random_() < 0.8:
            output[index] = vocab.mask_id
        elif random_() < 0.5:
            pass  # Kept as is, but still predicted.
        else:
            output[index] = replacements[rng.randint(0, len(replacements) - 1)]
    chosen.sort()
    return output, chosen, [ids[p] for p in chosen]


# ---------------------------------------------------------- sentence pairs


def truncate_seq_pair(
    tokens_a: list, tokens_b: list, max_num_tokens: int, rng: random.Random
) -> int:
    """Trims the longer list (B on ties) from the front or back, in place.

    Returns the number of tokens removed.
    """
    removed = 0
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        trunc = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del trunc[0]
        else:
            trunc.pop()
        removed += 1
    return removed


OBJECTIVES = ("nsp", "sop", "none")


@dataclasses.dataclass(frozen=True)
class RecipeConfig:
    """The original script's recipe flags."""

    max_seq_length: int = 128
    max_predictions_per_seq: int = 20
    masked_lm_prob: float = 0.15
    short_seq_prob: float = 0.1
    dupe_factor: int = 10
    do_whole_word_mask: bool = False
    objective: str = "nsp"  # One of OBJECTIVES; see the module docstring.
    # ALBERT's n-gram masking: spans of up to this many units (`mask_tokens`);
    # 3 in ALBERT (Lan et al. 2020, section 4.1). 1: the original's masking.
    max_ngram: int = 1

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective={self.objective!r}, expected one of {OBJECTIVES}")
        if self.max_seq_length < 5:
            raise ValueError(f"max_seq_length={self.max_seq_length} leaves no room for A and B")
        if self.max_ngram < 1:
            raise ValueError(f"max_ngram={self.max_ngram} < 1")
        if self.max_predictions_per_seq < 1:
            raise ValueError(f"max_predictions_per_seq={self.max_predictions_per_seq} < 1")


def create_instances_from_document(
    documents: Sequence[Sequence[list[int]]],
    document_index: int,
    rng: random.Random,
    config: RecipeConfig,
    vocab: MaskingVocab,
    cls_id: int,
    sep_id: int,
) -> list[Instance]:
    """The original's `create_instances_from_document`, on ids.

    Args:
      documents: all documents of the block; each a list of sentences, each a
        non-empty list of token ids. B segments marked random come from them.
      document_index: the document to cut into instances.
      rng: the block's `random.Random`.
      config: the recipe's flags.
      vocab: for masking.
      cls_id, sep_id: the ids of [CLS] and [SEP].
    """
    document = documents[document_index]
    max_num_tokens = config.max_seq_length - 3  # [CLS] A [SEP] B [SEP]
    # Mostly full-length sequences; sometimes (short_seq_prob) shorter ones,
    # to lessen the mismatch with short fine-tuning inputs.
    target_seq_length = max_num_tokens
    if rng.random() < config.short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)

    instances = []
    chunk: list[list[int]] = []
    chunk_length = 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        chunk_length += len(document[i])
        if i == len(document) - 1 or chunk_length >= target_seq_length:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            tokens_a = [t for sentence in chunk[:a_end] for t in sentence]
            tokens_b: list[int] = []
            # The `or` short-circuits: a one-sentence chunk draws no number.
            is_random_next = len(chunk) == 1 or rng.random() < 0.5
            if is_random_next:
                target_b_length = target_seq_length - len(tokens_a)
                for _ in range(10):  # Avoid this document; a one-document block cannot.
                    other = rng.randint(0, len(documents) - 1)
                    if other != document_index:
                        break
                random_document = documents[other]
                for sentence in random_document[rng.randint(0, len(random_document) - 1) :]:
                    tokens_b += sentence
                    if len(tokens_b) >= target_b_length:
                        break
                i -= len(chunk) - a_end  # Put the unused sentences back.
            else:
                tokens_b = [t for sentence in chunk[a_end:] for t in sentence]
            truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
            ids = [cls_id, *tokens_a, sep_id, *tokens_b, sep_id]
            instances.append(_masked(ids, len(tokens_a), is_random_next, rng, config, vocab))
            chunk, chunk_length = [], 0
        i += 1
    return instances


def _masked(
    ids: list[int],
    len_a: int,
    label: bool,
    rng: random.Random,
    config: RecipeConfig,
    vocab: MaskingVocab,
) -> Instance:
    masked, positions, labels = mask_tokens(
        ids,
        rng,
        vocab,
        config.masked_lm_prob,
        config.max_predictions_per_seq,
        config.do_whole_word_mask,
        config.max_ngram,
    )
    return Instance(masked, len_a, positions, labels, label)


def create_sop_instances_from_document(
    document: Sequence[list[int]],
    rng: random.Random,
    config: RecipeConfig,
    vocab: MaskingVocab,
    cls_id: int,
    sep_id: int,
) -> list[Instance]:
    """Sentence-order prediction pairs of one document (ALBERT); see the module docstring.

    `is_random_next` (next_sentence_labels) is True when A and B are swapped.
    """
    max_num_tokens = config.max_seq_length - 3
    target_seq_length = max_num_tokens
    if rng.random() < config.short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)
    instances = []
    chunk: list[list[int]] = []
    chunk_length = 0
    for i, sentence in enumerate(document):
        chunk.append(sentence)
        chunk_length += len(sentence)
        if i < len(document) - 1 and chunk_length < target_seq_length:
            continue
        a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
        tokens_a = [t for s in chunk[:a_end] for t in s]
        tokens_b = [t for s in chunk[a_end:] for t in s]
        truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
        swapped = bool(tokens_b) and rng.random() < 0.5
        if swapped:
            tokens_a, tokens_b = tokens_b, tokens_a
        ids = (
            [cls_id, *tokens_a, sep_id, *tokens_b, sep_id]
            if tokens_b
            else [cls_id, *tokens_a, sep_id]
        )
        instances.append(_masked(ids, len(tokens_a), swapped, rng, config, vocab))
        chunk, chunk_length = [], 0
    return instances


def pack_full_sentences(
    documents: Sequence[Sequence[list[int]]], max_seq_length: int, cls_id: int, sep_id: int
) -> Iterator[list[int]]:
    """RoBERTa FULL-SENTENCES: [CLS] sentences [SEP], packed in order across documents.

    Every token of `documents` appears once, in order, with a [SEP] between
    two documents that share a sequence; see the module docstring.
    """
    max_num_tokens = max_seq_length - 2  # [CLS] ... [SEP]
    current: list[int] = []
    for document in documents:
        for j, sentence in enumerate(document):
            sep = [sep_id] if j == 0 and current else []
            if current and len(current) + len(sep) + len(sentence) > max_num_tokens:
                yield [cls_id, *current, sep_id]
                current, sep = [], []
            current += sep + sentence
            while len(current) > max_num_tokens:  # A sentence longer than a sequence.
                yield [cls_id, *current[:max_num_tokens], sep_id]
                current = current[max_num_tokens:]
    if current:
        yield [cls_id, *current, sep_id]


def generate_instances(
    documents: list[list[list[int]]],
    rng: random.Random,
    config: RecipeConfig,
    vocab: MaskingVocab,
    cls_id: int,
    sep_id: int,
) -> Iterator[Instance]:
    """Shuffles `documents` in place, then yields `dupe_factor` passes of instances.

    The original's `create_training_instances` without its final shuffle:
    call `rng.shuffle` on the (possibly serialized) instances afterwards, as
    `create_pretraining_data` does, to continue its random stream exactly. The
    objective "sop" cuts each document as "nsp" does; "none" packs the
    shuffled documents into full sequences (the same ones each pass).
    """
    rng.shuffle(documents)
    for _ in range(config.dupe_factor):
        if config.objective == "none":
            for ids in pack_full_sentences(documents, config.max_seq_length, cls_id, sep_id):
                yield _masked(ids, len(ids) - 2, False, rng, config, vocab)
        elif config.objective == "sop":
            for document in documents:
                yield from create_sop_instances_from_document(
                    document, rng, config, vocab, cls_id, sep_id
                )
        else:
            for index in range(len(documents)):
                yield from create_instances_from_document(
                    documents, index, rng, config, vocab, cls_id, sep_id
                )
