"""Entity spans from IOB/IOBES tag sequences, read with CoNLL `conlleval`'s rules.

`conlleval.pl`'s `startOfChunk` and `endOfChunk` (which seqeval's default mode
copies) accept any tag sequence: an `I-X` after `O`, at the start of a sentence
or after a tag of another type starts a chunk, as if it were `B-X`; a type
change ends one; `E-` and `S-` tags (IOBES) are read the conlleval way too.
The NER reader (data/conll.py) and the NER scores (metrics/ner.py) both read
spans through `get_entities`, so predictions and scores agree on what a span is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# "O", or a prefix and a type: "B-PER", "I-ORG", ...
_TAG_RE = re.compile(r"O|[BIES]-\S+")
# conlleval's chunk boundaries given (previous, current) prefix; a type change
# also ends the previous chunk and starts a new one (unless the tag is O).
_ENDS_BEFORE = {("B", "B"), ("B", "S"), ("B", "O"), ("I", "B"), ("I", "S"), ("I", "O")}
_STARTS = {("E", "E"), ("E", "I"), ("S", "E"), ("S", "I"), ("O", "E"), ("O", "I")}


def split_tag(tag: str) -> tuple[str, str]:
    """("B", "PER") for "B-PER"; ("O", "") for "O".

    Raises:
      ValueError: the tag is neither "O" nor a B/I/E/S prefix, "-" and a type.
    """
    if not _TAG_RE.fullmatch(tag):
        raise ValueError(f"invalid NER tag {tag!r}: expected 'O' or B-/I-/E-/S- and a type")
    return ("O", "") if tag == "O" else (tag[0], tag[2:])


def get_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The chunks of one sentence as (type, first word, last word + 1), in order.

    >>> get_entities(["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"])
    [('PER', 0, 2), ('LOC', 3, 4), ('LOC', 4, 5), ('ORG', 5, 6)]
    """
    chunks = []
    prev, prev_type, begin = "O", "", 0
    for i, tag in enumerate([*tags, "O"]):  # The final "O" closes any open chunk.
        cur, cur_type = split_tag(tag)
        if prev in "ES" or (prev, cur) in _ENDS_BEFORE or (prev != "O" and prev_type != cur_type):
            chunks.append((prev_type, begin, i))
        if cur in "BS" or (prev, cur) in _STARTS or (cur != "O" and prev_type != cur_type):
            begin = i
        prev, prev_type = cur, cur_type
    return chunks
