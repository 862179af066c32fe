#!/usr/bin/env bash
# bert_jax pretraining steps on one GPU (H100/H200 class), in under 8 minutes:
# BERT-base at length 128 and BERT-large at length 512, bf16 compute with fp32
# master weights, AdamW, 20 / 76 MLM predictions (the BERT and MLPerf recipes).
# Variants, in alternating rounds with the base config: attention dropout off
# (the fused attention path), then cuDNN flash attention on that path.
# Records go to docs/results/gpu.jsonl; `python experiments/performance_doc.py`
# turns them into the GPU table of docs/performance.md (tokens/s, MFU against
# the chip's bf16 peak in bert_jax/flops.py).
#
#   bash experiments/bench_gpu.sh          # needs jax with CUDA: pip install "jax[cuda12]"
set -euo pipefail
cd "$(dirname "$0")/.."
record=${RECORD:-docs/results/gpu.jsonl}
python -c 'import jax; assert jax.devices()[0].platform == "gpu", jax.devices()' || {
  echo "no GPU visible to jax: install jax[cuda12] matching $(python -c 'import jax; print(jax.__version__)')" >&2
  exit 1
}
common=(--dtype=bfloat16 --steps=10 --rounds=2 --warmup=2 --record="$record")
variants=(
  "--variant=noattndrop:model.attention_dropout=0.0"
  "--variant=cudnn:model.attention_dropout=0.0;model.attention_impl='cudnn'"
)
python -m bert_jax.bench --model=base --batch=256 --seq=128 --predictions=20 \
  --label=gpu/base-128 "${common[@]}" "${variants[@]}"
python -m bert_jax.bench --model=large --batch=32 --seq=512 --predictions=76 \
  --label=gpu/large-512 "${common[@]}" "${variants[@]}"
python experiments/performance_doc.py
