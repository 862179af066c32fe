"""Test reference: google-research/bert `create_pretraining_data.py`, transcribed.

Our own rewrite of the original script's algorithm (the revision with
`--do_whole_word_mask`, 2019), kept deliberately close to its structure, slow
and simple, and drawing random numbers from one `random.Random` in exactly the
original's order, so that a faithful reimplementation can be compared with it
instance for instance. Only the test suite uses it.

What it mirrors, function by function:
  create_training_instances      read files, tokenize, drop empty documents,
                                 shuffle documents, `dupe_factor` passes,
                                 shuffle all instances.
  create_instances_from_document chunks of sentences, segment A/B, NSP.
  create_masked_lm_predictions   80/10/10 masking, optional whole-word masking.
  truncate_seq_pair              trim the longer side, front or back at random.
  instance_features              write_instance_to_example_files' arrays.

The original's FullTokenizer is replaced by `bert_jax.tokenizers.wordpiece`, which is
token for token the same (see tests/tokenizers/test_wordpiece.py).
"""

import collections
import random

import numpy as np

Instance = collections.namedtuple(
    "Instance", "tokens segment_ids is_random_next masked_lm_positions masked_lm_labels"
)


def read_documents(input_files, tokenizer):
    """The original's reading loop: one sentence a line, blank line = new document.

    `GFile(path, "r").readline()` splits on "\\n" only; the text is UTF-8.
    """
    documents = [[]]
    for path in input_files:
        with open(path, "rb") as f:
            for raw in f:
                line = raw.decode("utf-8").strip()
                if not line:
                    documents.append([])
                tokens = tokenizer.tokenize(line)
                if tokens:
                    documents[-1].append(tokens)
    return [d for d in documents if d]


def create_training_instances(
    documents,
    vocab_words,
    rng,
    max_seq_length=128,
    dupe_factor=10,
    short_seq_prob=0.1,
    masked_lm_prob=0.15,
    max_predictions_per_seq=20,
    do_whole_word_mask=False,
):
    """From tokenized documents (lists of lists of wordpieces) to shuffled instances."""
    documents = list(documents)
    rng.shuffle(documents)
    instances = []
    for _ in range(dupe_factor):
        for document_index in range(len(documents)):
            instances += create_instances_from_document(
                documents,
                document_index,
                max_seq_length,
                short_seq_prob,
                masked_lm_prob,
                max_predictions_per_seq,
                vocab_words,
                rng,
                do_whole_word_mask,
            )
    rng.shuffle(instances)
    return instances


def create_instances_from_document(
    all_documents,
    document_index,
    max_seq_length,
    short_seq_prob,
    masked_lm_prob,
    max_predictions_per_seq,
    vocab_words,
    rng,
    do_whole_word_mask=False,
):
    document = all_documents[document_index]
    max_num_tokens = max_seq_length - 3  # [CLS] A [SEP] B [SEP]

    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)

    instances = []
    current_chunk = []
    current_length = 0
    i = 0
    while i < len(document):
        segment = document[i]
        current_chunk.append(segment)
        current_length += len(segment)
        if i == len(document) - 1 or current_length >= target_seq_length:
            if current_chunk:
                a_end = 1
                if len(current_chunk) >= 2:
                    a_end = rng.randint(1, len(current_chunk) - 1)
                tokens_a = []
                for j in range(a_end):
                    tokens_a.extend(current_chunk[j])

                tokens_b = []
                # `or` short-circuits: a one-sentence chunk draws no number here.
                if len(current_chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    target_b_length = target_seq_length - len(tokens_a)
                    for _ in range(10):
                        random_document_index = rng.randint(0, len(all_documents) - 1)
                        if random_document_index != document_index:
                            break
                    random_document = all_documents[random_document_index]
                    random_start = rng.randint(0, len(random_document) - 1)
                    for j in range(random_start, len(random_document)):
                        tokens_b.extend(random_document[j])
                        if len(tokens_b) >= target_b_length:
                            break
                    # The unused sentences of the chunk are "put back".
                    num_unused_segments = len(current_chunk) - a_end
                    i -= num_unused_segments
                else:
                    is_random_next = False
                    for j in range(a_end, len(current_chunk)):
                        tokens_b.extend(current_chunk[j])
                truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
                assert len(tokens_a) >= 1
                assert len(tokens_b) >= 1

                tokens = ["[CLS]"] + tokens_a + ["[SEP]"] + tokens_b + ["[SEP]"]
                segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
                tokens, positions, labels = create_masked_lm_predictions(
                    tokens,
                    masked_lm_prob,
                    max_predictions_per_seq,
                    vocab_words,
                    rng,
                    do_whole_word_mask,
                )
                instances.append(Instance(tokens, segment_ids, is_random_next, positions, labels))
            current_chunk = []
            current_length = 0
        i += 1
    return instances


def create_masked_lm_predictions(
    tokens, masked_lm_prob, max_predictions_per_seq, vocab_words, rng, do_whole_word_mask=False
):
    cand_indexes = []
    for i, token in enumerate(tokens):
        if token == "[CLS]" or token == "[SEP]":
            continue
        # Whole-word masking: a "##" piece joins the previous candidate (even
        # across a skipped [SEP], as in the original).
        if do_whole_word_mask and len(cand_indexes) >= 1 and token.startswith("##"):
            cand_indexes[-1].append(i)
        else:
            cand_indexes.append([i])

    rng.shuffle(cand_indexes)
    output_tokens = list(tokens)
    num_to_predict = min(max_predictions_per_seq, max(1, int(round(len(tokens) * masked_lm_prob))))

    masked_lms = []
    covered_indexes = set()
    for index_set in cand_indexes:
        if len(masked_lms) >= num_to_predict:
            break
        if len(masked_lms) + len(index_set) > num_to_predict:
            continue
        if any(index in covered_indexes for index in index_set):
            continue
        for index in index_set:
            covered_indexes.add(index)
            # 80% [MASK], 10% unchanged, 10% a random vocabulary word; drawn
            # per wordpiece, also under whole-word masking.
            if rng.random() < 0.8:
                masked_token = "[MASK]"
            elif rng.random() < 0.5:
                masked_token = tokens[index]
            else:
                masked_token = vocab_words[rng.randint(0, len(vocab_words) - 1)]
            output_tokens[index] = masked_token
            masked_lms.append((index, tokens[index]))
    assert len(masked_lms) <= num_to_predict
    masked_lms.sort(key=lambda x: x[0])
    positions = [p for p, _ in masked_lms]
    labels = [label for _, label in masked_lms]
    return output_tokens, positions, labels


def truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng):
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        trunc_tokens = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        assert len(trunc_tokens) >= 1
        if rng.random() < 0.5:
            del trunc_tokens[0]
        else:
            trunc_tokens.pop()


def instance_features(instance, vocab, max_seq_length, max_predictions_per_seq):
    """`write_instance_to_example_files`' feature values, zero-padded, as numpy."""
    input_ids = [vocab[t] for t in instance.tokens]
    n = len(input_ids)
    assert n <= max_seq_length
    pad = max_seq_length - n
    ids = [vocab[t] for t in instance.masked_lm_labels]
    k = len(ids)
    pred_pad = max_predictions_per_seq - k
    return {
        "input_ids": np.array(input_ids + [0] * pad),
        "input_mask": np.array([1] * n + [0] * pad),
        "segment_ids": np.array(list(instance.segment_ids) + [0] * pad),
        "masked_lm_positions": np.array(list(instance.masked_lm_positions) + [0] * pred_pad),
        "masked_lm_ids": np.array(ids + [0] * pred_pad),
        "masked_lm_weights": np.array([1.0] * k + [0.0] * pred_pad, np.float32),
        "next_sentence_labels": np.array([1 if instance.is_random_next else 0]),
    }


def run(input_files, tokenizer, seed, **kwargs):
    """The original script's `main`, minus the writing: features, in output order."""
    documents = read_documents(input_files, tokenizer)
    vocab_words = list(tokenizer.vocab.keys())
    instances = create_training_instances(documents, vocab_words, random.Random(seed), **kwargs)
    return instances
