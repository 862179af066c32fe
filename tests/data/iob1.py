"""IOB1 test data: IOB2 tags turned back into the original CoNLL-2003 scheme.

The inverse of `bert_jax.data.conll.iob1_to_iob2`, for writing IOB1 files and
predictions in tests; the library itself only ever reads IOB1.
"""

from collections.abc import Sequence


def iob2_to_iob1(tags: Sequence[str]) -> list[str]:
    """IOB2 to IOB1: B-X stays only right after a chunk of type X, else it becomes I-X."""
    out, prev = [], "O"
    for tag in tags:
        starts_chunk = tag.startswith("B-") and (prev == "O" or prev[2:] != tag[2:])
        out.append("I-" + tag[2:] if starts_chunk else tag)
        prev = tag
    return out
