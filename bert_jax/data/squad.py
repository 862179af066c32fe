"""SQuAD v1.1/v2.0: reading (files or TFDS), windowed features, and logits -> answer text.

Follows google-research/bert `run_squad.py` (`read_squad_examples`,
`convert_examples_to_features`, `_check_is_max_context`, `write_predictions`)
with one change of method: positions are CHARACTER offsets, not whitespace
words. The tokenizer gives every wordpiece its (start, end) span in the
context, so

* a training target is the gold answer's character span mapped to the first
  and last wordpiece that overlap it. The original maps it to whitespace
  words and narrows them with `_improve_answer_span` to a whole-wordpiece
  match of the tokenized answer. Both agree on 10,556 of the 10,570 SQuAD
  v1.1 dev answers; the 14 others start or end inside a wordpiece, where the
  original finds no match and keeps whole words with their punctuation
  ("20–18" for the answer "8"), and this keeps the overlapping wordpieces
  ("18");
* a predicted answer is the original context substring from the start
  token's first character to the end token's last one. The original instead
  rebuilds text from whitespace words and aligns it back with
  `get_final_text`, a heuristic that falls back to the whole words when the
  alignment fails; character offsets make it unnecessary. The text keeps the
  context's own whitespace (the official evaluation collapses it).

Tokenizing the whole context equals the original's word-by-word tokenizing:
BERT's basic tokenizer splits on whitespace first either way.

    examples, stats = parse_squad(load_json("dev-v1.1.json"), "dev-v1.1.json")
    # or from TFDS, rebuilt as the same JSON structure:
    examples, stats = parse_squad(load_tfds("1.1", "validation"), "TFDS squad/v1.1 validation")
    features = make_features(examples, tokenizer)          # is_training=False
    ...  # start_logits, end_logits: (len(features), max_seq_length)
    predictions, null_odds, nbest = postprocess(examples, features, start, end)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from bert_jax.data import bad_input, files, progress
from bert_jax.tokenizers.wordpiece import BertTokenizer


@dataclasses.dataclass(frozen=True)
class Example:
    """One question on one context.

    Attributes:
      qas_id: the question's "id".
      question: the question text.
      context: the paragraph (shared, not copied, by the paragraph's questions).
      answers: every gold answer, {"text": str, "answer_start": int}; the
        first is the training target (as in the original); an impossible
        v2.0 question has none.
      is_impossible: v2.0 questions without an answer.
    """

    qas_id: str
    question: str
    context: str
    answers: list[dict[str, Any]]
    is_impossible: bool = False


def is_version_2(dataset_json: Mapping[str, Any] | Sequence[Any]) -> bool:
    """v2.0 if the file's "version" says so or any question has "is_impossible".

    Takes the parsed file or its "data" list.
    """
    if isinstance(dataset_json, Mapping):
        if str(dataset_json.get("version", "")).lstrip("v").startswith("2"):
            return True
        dataset_json = dataset_json["data"]
    return any(
        "is_impossible" in qa
        for article in dataset_json
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    )


def load_json(path: str) -> dict[str, Any]:
    """A SQuAD file (local or gs://, gzipped if ".gz") as the official JSON structure.

    Parse it with `parse_squad(load_json(path), path)`; the official
    evaluation (`bert_jax.metrics.squad.evaluate`) takes the structure itself.

    Raises:
      FileNotFoundError: no file at `path`.
      ValueError: the file is not valid JSON; names the file.
    """
    with files.open_read(path) as f:
        data = f.read()
    try:
        return json.loads(data)  # Bytes: json detects UTF-8 (and -16/-32) itself.
    except json.JSONDecodeError as e:  # Its message gives the line and column.
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 ({e.reason} at byte {e.start})") from None


def parse_squad(
    dataset_json: Mapping[str, Any], source: str, *, on_bad_input: str = "fail"
) -> tuple[list[Example], dict[str, Any]]:
    """Examples from a SQuAD v1.1 or v2.0 dataset in the official JSON structure.

    Every answerable question's first answer (its training target) must be
    the text at its `answer_start` in the context; the original run_squad.py
    only warns and drops the question in training ("Could not find answer").
    Other gold answers are kept as they are: evaluation compares texts only.

    Args:
      dataset_json: {"version", "data": [{"title", "paragraphs": [{"context",
        "qas": [{"id", "question", "answers", "is_impossible"?}]}]}]}, as the
        official files hold it (`load_json`, or `from_tfds_records` builds it).
      source: what the data came from, for messages: the file's path, or the
        TFDS dataset and split.
      on_bad_input: a bad training answer (text not at answer_start, or an
        answerable question with no answer), or data without a question:
        "fail" raises ValueError naming `source` and the question ids; "skip"
        drops the question (`bad_input`). Either way each bad answer is
        logged and counted in the stats.

    Returns:
      (examples, stats); stats: "version" ("1.1" or "2.0"), "questions" read,
      "impossible", "bad_answers" (count), "bad_answer_ids" (qas_ids) and
      "skipped" (questions dropped).
    """
    bad_input.check(on_bad_input)
    where = "the top level"
    try:
        version_2 = is_version_2(dataset_json)
        examples, bad = [], []
        for i, article in enumerate(dataset_json["data"]):
            for j, paragraph in enumerate(article["paragraphs"]):
                where = f"data[{i}].paragraphs[{j}]"
                context = paragraph["context"]
                for k, qa in enumerate(paragraph["qas"]):
                    where = f"data[{i}].paragraphs[{j}].qas[{k}]"
                    answers = list(qa.get("answers", []))
                    # v2.0 files mark impossible questions; without the flag, no answer means none.
                    impossible = bool(qa.get("is_impossible", version_2 and not answers))
                    if not impossible:
                        problem = _answer_problem(context, answers)
                        if problem:
                            logging.warning("%s: question %s: %s", source, qa["id"], problem)
                            bad.append(qa["id"])
                            continue
                    examples.append(Example(qa["id"], qa["question"], context, answers, impossible))
    except (KeyError, TypeError, AttributeError) as e:
        # Not the official structure: a key missing, or a value of another type.
        why = f"no key {e.args[0]!r}" if isinstance(e, KeyError) else str(e)
        raise ValueError(f"{source}: {where}: not the SQuAD structure ({why})") from None
    fail = on_bad_input == bad_input.FAIL
    if bad and fail:
        shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise ValueError(
            f"{source}: {len(bad)} answers do not match the context at their answer_start "
            f"(questions {shown}); pass on_bad_input='skip' to drop those questions"
        )
    if bad:
        n = len(examples) + len(bad)
        logging.warning("%s: skipped %d of %d questions for a bad answer", source, len(bad), n)
    if not examples and not bad:
        if fail:
            raise ValueError(f"{source}: no questions")
        logging.warning("%s: no questions, skipped", source)
    stats = {
        "version": "2.0" if version_2 else "1.1",
        "questions": len(examples) + len(bad),
        "impossible": sum(e.is_impossible for e in examples),
        "bad_answers": len(bad),
        "bad_answer_ids": bad,
        "skipped": len(bad),
    }
    return examples, stats


def load_tfds(version: str, split: str) -> dict[str, Any]:
    """TFDS `squad/v1.1` or `squad/v2.0` as the official JSON (`from_tfds_records`).

    TFDS downloads and prepares the dataset on first use (as GLUE's does).
    """
    import tensorflow_datasets as tfds  # Imports TF: only when TFDS is asked for.

    ds = tfds.load(f"squad/v{version}", split=split)
    return from_tfds_records(tfds.as_numpy(ds), version)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _answers(feature: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A TFDS Sequence({"text", "answer_start"}) as the official [{"text", "answer_start"}]."""
    return [
        {"text": _text(t), "answer_start": int(s)}
        for t, s in zip(feature["text"], feature["answer_start"], strict=True)
    ]


def from_tfds_records(records: Iterable[Mapping[str, Any]], version: str) -> dict[str, Any]:
    """TFDS SQuAD records (one per question) back in the official JSON structure.

    TFDS flattens the files to one record per question ("id", "title",
    "context", "question", "answers"; v2.0 also "is_impossible" and
    "plausible_answers"; tensorflow_datasets `squad_dataset_builder.py`,
    `qa_utils.squadlike_features`). Questions are grouped back into
    articles by title and paragraphs by context, in record order, so that
    `parse_squad` and the official evaluation (`bert_jax.metrics.squad.evaluate`, which
    walks this structure) serve both sources alike.

    Args:
      records: `tfds.as_numpy` records (bytes or str texts).
      version: "1.1" or "2.0"; v2.0 questions carry "is_impossible", and
        "plausible_answers" where they have any, as the official v2.0 files.
    """
    articles: dict[str, dict[str, list[dict[str, Any]]]] = {}  # title -> context -> qas
    for record in records:
        qa = {
            "id": _text(record["id"]),
            "question": _text(record["question"]),
            "answers": _answers(record["answers"]),
        }
        if version == "2.0":
            qa["is_impossible"] = bool(record["is_impossible"])
            if plausible := _answers(record["plausible_answers"]):
                qa["plausible_answers"] = plausible
        paragraphs = articles.setdefault(_text(record["title"]), {})
        paragraphs.setdefault(_text(record["context"]), []).append(qa)
    return {
        # As the official files: "1.1" and "v2.0".
        "version": "v2.0" if version == "2.0" else version,
        "data": [
            {
                "title": title,
                "paragraphs": [{"context": c, "qas": qas} for c, qas in paragraphs.items()],
            }
            for title, paragraphs in articles.items()
        ],
    }


def _answer_problem(context: str, answers: list[dict[str, Any]]) -> str | None:
    """Why the first answer cannot be a training target, or None."""
    if not answers:
        return "no answer"
    text, start = answers[0]["text"], answers[0]["answer_start"]
    found = context[start : start + len(text)] if 0 <= start <= len(context) else None
    if found != text:
        return f"answer {text!r} is not at answer_start {start} (found {found!r})"
    if not text.strip():
        return "answer is blank"
    return None


@dataclasses.dataclass(frozen=True)
class SquadFeatures:
    """Windows of [CLS] query [SEP] context-window [SEP], one row each (RoBERTa:
    <s> query </s></s> context-window </s>, one token type; the tokenizer's
    `seps_between_pair` and `second_type_id`).

    Attributes:
      arrays: the model's inputs, int32: input_ids, token_type_ids,
        attention_mask (N, max_seq_length), padded with [PAD]/0; with
        is_training also start_positions, end_positions (N,) (0 = [CLS]: the
        answer is not inside this window, or there is none).
      example_index: (N,) which example each row comes from.
      doc_offset: (N,) the row position of the window's first context token
        (len(query) + 2; RoBERTa + 3).
      doc_start: (N,) that token's index among the context's wordpieces.
      token_spans: per row, (n_doc, 2) int32 [start, end) character span in
        the example's context of each window context token (a view into the
        example's array, not a copy).
      token_is_max_context: per row, (n_doc,) bool: this window gives the
        token its most context (the original's `_check_is_max_context`).
    """

    arrays: dict[str, np.ndarray]
    example_index: np.ndarray
    doc_offset: np.ndarray
    doc_start: np.ndarray
    token_spans: list[np.ndarray]
    token_is_max_context: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.example_index)


def _doc_spans(n_tokens: int, max_tokens: int, doc_stride: int) -> list[tuple[int, int]]:
    """The original's sliding windows: (start, length), each `doc_stride` after the last.

    An empty context still gets one (empty) window, so every example has a row.
    """
    spans, start = [], 0
    while True:
        length = min(n_tokens - start, max_tokens)
        spans.append((start, length))
        if start + length >= n_tokens:
            return spans
        start += min(length, doc_stride)


def _max_context(spans: list[tuple[int, int]], n_tokens: int) -> list[np.ndarray]:
    """`_check_is_max_context` for every token of every window at once.

    A token's score in a window is min(left, right context) + 0.01 * window
    length; the first window with the best score owns it (argmax picks the
    first maximum, like the original's strict `>`).
    """
    if len(spans) == 1:
        return [np.ones(spans[0][1], bool)]
    scores = np.full((len(spans), n_tokens), -np.inf)
    for j, (start, length) in enumerate(spans):
        pos = np.arange(start, start + length)
        scores[j, start : start + length] = (
            np.minimum(pos - start, start + length - 1 - pos) + 0.01 * length
        )
    best = scores.argmax(0)
    return [best[start : start + length] == j for j, (start, length) in enumerate(spans)]


def _answer_tokens(spans: np.ndarray, answer: dict[str, Any]) -> tuple[int, int] | None:
    """The first and last wordpieces overlapping the answer's characters, or None."""
    begin = answer["answer_start"]
    end = begin + len(answer["text"])
    first = int(np.searchsorted(spans[:, 1], begin, side="right"))  # first token ending after it
    last = int(np.searchsorted(spans[:, 0], end, side="left")) - 1  # last token starting in it
    return (first, last) if first <= last else None


def make_features(
    examples: Sequence[Example],
    tokenizer: BertTokenizer,
    max_seq_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
    is_training: bool = False,
) -> SquadFeatures:
    """Windows every example as the original `convert_examples_to_features`.

    The query is cut to `max_query_length` wordpieces; the context's
    wordpieces are covered by windows of max_seq_length - len(query) - 3
    tokens, each starting `doc_stride` after the previous. Defaults are the
    original's (run_squad.py flags). With `is_training`, each row's target is
    the first answer's tokens if the window holds all of them, else [CLS].
    """
    pad, cls, sep = tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id
    contexts: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # context -> ids, spans
    rows = []  # (example index, head ids, window start, window length, (target start, end))
    token_spans, max_context = [], []
    unmapped = 0
    for index, ex in enumerate(progress.bar(examples, desc="SQuAD features", unit=" examples")):
        if ex.context not in contexts:
            pieces, offsets = tokenizer.tokenize_with_offsets(ex.context)
            contexts[ex.context] = (
                np.asarray(tokenizer.convert_tokens_to_ids(pieces), np.int32),
                np.asarray(offsets, np.int32).reshape(-1, 2),
            )
        ids, spans = contexts[ex.context]
        query = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(ex.question))
        query = query[:max_query_length]
        head = [cls, *query, *[sep] * tokenizer.seps_between_pair]
        max_tokens = max_seq_length - len(head) - 1
        if max_tokens <= 0:
            raise ValueError(
                f"max_seq_length={max_seq_length} leaves no room for the context after a "
                f"{len(query)}-token query (max_query_length={max_query_length})"
            )
        target = None
        if is_training and not ex.is_impossible:
            target = _answer_tokens(spans, ex.answers[0])
            unmapped += target is None
        windows = _doc_spans(len(ids), max_tokens, doc_stride)
        for (start, length), is_max in zip(windows, _max_context(windows, len(ids)), strict=True):
            # The target as positions in the row, if the window holds the whole answer.
            inside = target and start <= target[0] and target[1] < start + length
            h = len(head)
            row_target = (target[0] - start + h, target[1] - start + h) if inside else (0, 0)
            rows.append((index, head, start, length, row_target))
            token_spans.append(spans[start : start + length])
            max_context.append(is_max)
    if unmapped:
        logging.warning("%d answers cover no wordpiece; their target is [CLS]", unmapped)

    n = len(rows)
    input_ids = np.full((n, max_seq_length), pad, np.int32)
    token_type_ids = np.zeros((n, max_seq_length), np.int32)
    attention_mask = np.zeros((n, max_seq_length), np.int32)
    example_index, doc_offset, doc_start = (np.zeros(n, np.int32) for _ in range(3))
    start_positions, end_positions = np.zeros(n, np.int32), np.zeros(n, np.int32)
    for r, (index, head, start, length, (first, last)) in enumerate(rows):
        h, ids = len(head), contexts[examples[index].context][0]
        input_ids[r, :h] = head
        input_ids[r, h : h + length] = ids[start : start + length]
        input_ids[r, h + length] = sep
        token_type_ids[r, h : h + length + 1] = tokenizer.second_type_id
        attention_mask[r, : h + length + 1] = 1
        example_index[r], doc_offset[r], doc_start[r] = index, h, start
        start_positions[r], end_positions[r] = first, last
    arrays = dict(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
    if is_training:
        arrays |= dict(start_positions=start_positions, end_positions=end_positions)
    return SquadFeatures(arrays, example_index, doc_offset, doc_start, token_spans, max_context)


def _softmax(scores: list[float]) -> list[float]:
    """The original's `_compute_softmax`, in Python floats."""
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = 0.0
    for x in exps:  # Not sum(): Python 3.12's sum() of floats is compensated.
        total += x
    return [x / total for x in exps]


def postprocess(
    examples: Sequence[Example],
    features: SquadFeatures,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    version_2: bool = False,
    null_score_diff_threshold: float = 0.0,
) -> tuple[dict[str, str], dict[str, float], dict[str, list[dict[str, Any]]]]:
    """Answer texts from span logits, as the original `write_predictions`.

    Over all windows of an example: the `n_best_size` best start and end
    positions (ties to the lower position); a pair is a candidate if both are
    context tokens, end >= start, it spans at most `max_answer_length` tokens,
    and the window gives the start token its most context. Candidates are
    ranked by start + end logit and deduplicated by text. The text is the
    context substring from the start token's first character to the end
    token's last (no `get_final_text`; see the module docstring).

    v2.0: the null score is the lowest start_logit[0] + end_logit[0] over the
    windows; the prediction is "" if null score - best non-null score >
    `null_score_diff_threshold` (`apply_null_threshold`), and that difference
    is the null odds (the official evaluation's --na-prob-file). With
    threshold math.inf every question gets its best non-null answer, the
    input of `bert_jax.metrics.squad.tune_null_threshold`.

    Args:
      start_logits, end_logits: (len(features), max_seq_length).

    Returns:
      predictions {qas_id: text}; null_odds {qas_id: float} (empty unless
      version_2); nbest {qas_id: [{text, probability, start_logit,
      end_logit, start, end}, ...]} best first, as the original's
      nbest_predictions.json plus the answer's character span in the context
      (-1, -1 for the null answer).
    """
    start_logits, end_logits = np.asarray(start_logits), np.asarray(end_logits)
    if start_logits.shape != end_logits.shape or len(start_logits) != len(features):
        raise ValueError(
            f"{len(features)} features but start_logits {start_logits.shape}, "
            f"end_logits {end_logits.shape}"
        )
    # (N, n_best_size) best positions per row, ties in position order like the
    # original's stable `sorted(..., reverse=True)`.
    best_starts = np.argsort(-start_logits, axis=1, kind="stable")[:, :n_best_size]
    best_ends = np.argsort(-end_logits, axis=1, kind="stable")[:, :n_best_size]
    rows_of: list[list[int]] = [[] for _ in examples]
    for r, index in enumerate(features.example_index):
        rows_of[index].append(r)

    predictions, null_odds, all_nbest = {}, {}, {}
    for index, ex in enumerate(examples):
        # Candidates as parallel arrays (row, first and last context token,
        # start and end logit) in the original's order: rows, then start, then end.
        parts = []
        null = None  # (score, start logit, end logit) of the lowest-scoring [CLS]
        for r in rows_of[index]:
            if version_2:
                s0, e0 = float(start_logits[r, 0]), float(end_logits[r, 0])
                if null is None or s0 + e0 < null[0]:
                    null = (s0 + e0, s0, e0)
            starts = best_starts[r] - features.doc_offset[r]  # Among the window's context tokens.
            ends = best_ends[r] - features.doc_offset[r]
            n_doc = len(features.token_spans[r])
            ok_start = (starts >= 0) & (starts < n_doc)
            ok_start[ok_start] = features.token_is_max_context[r][starts[ok_start]]
            ok_end = (ends >= 0) & (ends < n_doc)
            length = ends[None, :] - starts[:, None] + 1
            ok = ok_start[:, None] & ok_end[None, :] & (length >= 1) & (length <= max_answer_length)
            i, j = np.nonzero(ok)  # Row-major: the original's nested loop order.
            parts.append(
                (
                    np.full(len(i), r),
                    starts[i],
                    ends[j],
                    start_logits[r, best_starts[r, i]].astype(np.float64),
                    end_logits[r, best_ends[r, j]].astype(np.float64),
                )
            )
        if version_2:  # The null answer competes as one more candidate, after ties.
            parts.append(([-1], [0], [0], [null[1]], [null[2]]))
        columns = (np.concatenate(x) for x in zip(*parts, strict=True))
        rows, firsts, lasts, s_logits, e_logits = columns
        # Stable, so ties keep their order as in the original's sorted(reverse=True).
        order = np.argsort(-(s_logits + e_logits), kind="stable")

        nbest, seen, offsets = [], set(), {}
        for c in order:
            if len(nbest) >= n_best_size:
                break
            if rows[c] < 0:
                text, char_span = "", (-1, -1)
            else:
                spans = features.token_spans[rows[c]]
                char_span = (int(spans[firsts[c], 0]), int(spans[lasts[c], 1]))
                text = ex.context[char_span[0] : char_span[1]]
                if text in seen:
                    continue
            seen.add(text)
            offsets[text] = char_span
            nbest.append((text, float(s_logits[c]), float(e_logits[c])))
        if version_2 and "" not in seen:  # Cut off by n_best_size: the original appends it.
            nbest.append(("", null[1], null[2]))
        best = next((b for b in nbest if b[0]), None)
        if best is None:
            # No valid span: the original's nonce answer "empty" with logits 0 (with
            # v2.0 the original would crash here; the null answer then wins unless
            # its score is negative).
            best = ("empty", 0.0, 0.0)
            nbest.append(best)
        probs = _softmax([s + e for _, s, e in nbest])
        all_nbest[ex.qas_id] = [
            {
                "text": t,
                "probability": p,
                "start_logit": s,
                "end_logit": e,
                "start": offsets.get(t, (-1, -1))[0],
                "end": offsets.get(t, (-1, -1))[1],
            }
            for (t, s, e), p in zip(nbest, probs, strict=True)
        ]
        predictions[ex.qas_id] = best[0]
        if version_2:
            null_odds[ex.qas_id] = null[0] - best[1] - best[2]
    if version_2:
        predictions = apply_null_threshold(predictions, null_odds, null_score_diff_threshold)
    return predictions, null_odds, all_nbest


def apply_null_threshold(
    answers: Mapping[str, str], null_odds: Mapping[str, float], threshold: float
) -> dict[str, str]:
    """v2.0 predictions: "" where the null odds exceed `threshold`, else the answer.

    The original `write_predictions` rule (`score_diff >
    null_score_diff_threshold`), and the direction of the official
    evaluation's `na_prob > na_prob_thresh` and of its best-threshold search:
    a question whose null odds equal the threshold keeps its answer in all
    three.

    Args:
      answers: {qas_id: best non-null answer} (`postprocess` with
        null_score_diff_threshold=math.inf).
      null_odds: {qas_id: null score - best non-null score}, as `postprocess`.
      threshold: the null_score_diff_threshold.
    """
    return {q: "" if null_odds[q] > threshold else a for q, a in answers.items()}
