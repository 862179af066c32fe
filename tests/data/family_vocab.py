"""ALBERT and RoBERTa tokenizer files trained here on real text, as the released ones were made.

A SentencePiece unigram model with ALBERT's special pieces (`<pad>` 0,
`<unk>` 1, control symbols `[CLS]` `[SEP]` `[MASK]`) and a byte-level BPE
with RoBERTa's (`<s>` 0, `<pad>` 1, `</s>` 2, `<unk>` 3, `<mask>` 4): the
files HF's AlbertTokenizer and RobertaTokenizer read. Nothing is downloaded.
"""

import io
from collections.abc import Sequence
from pathlib import Path


def build(sentences: Sequence[str], root: Path, spiece_size=3000, bpe_size=2000) -> dict:
    """{"albert": root/albert (spiece.model), "roberta": root/roberta (vocab.json,
    merges.txt)}, trained on `sentences`."""
    import sentencepiece
    from tokenizers import ByteLevelBPETokenizer

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        model_type="unigram",
        vocab_size=spiece_size,
        pad_id=0,
        unk_id=1,
        bos_id=-1,
        eos_id=-1,
        control_symbols=["[CLS]", "[SEP]", "[MASK]"],
        num_threads=1,
        minloglevel=2,
    )
    (root / "albert").mkdir(parents=True)
    (root / "albert" / "spiece.model").write_bytes(model.getvalue())
    bpe = ByteLevelBPETokenizer()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe.train_from_iterator(
        sentences, vocab_size=bpe_size, special_tokens=specials, show_progress=False
    )
    (root / "roberta").mkdir()
    bpe.save_model(str(root / "roberta"))
    return {"albert": root / "albert", "roberta": root / "roberta"}
