#!/usr/bin/env bash
# bert_jax pretraining steps on one GPU (H100/H200 class), meant to fit in 8 minutes
# (mostly compiles: 10 of them; not yet run on a GPU, none has been lent):
# BERT-base at length 128 and BERT-large at length 512, bf16 compute with fp32
# master weights, AdamW, 20 / 76 MLM predictions (the BERT and MLPerf recipes).
#   1. Full rows: the base config, then in alternating rounds attention dropout off
#      (the fused attention path) and cuDNN flash attention on that path.
#   2. Real lengths, unpacked and packed: the first rows of Wikipedia examples (the
#      SQuAD v1.1 dev articles, original recipe; 92% real tokens at 128, 82% at 512)
#      and of the same examples packed (3 a row at 128, 6 at 512), cuDNN attention.
#      MFU counts real tokens only, so padding shows as lost throughput.
# Records go to $RECORD (docs/results/gpu.jsonl); `python experiments/performance_doc.py`
# turns them into the GPU table of docs/performance.md (tokens/s, MFU against the
# chip's bf16 peak in bert_jax/flops.py).
#
#   bash experiments/bench_gpu.sh prepare   # where TensorFlow and ../shared/data are:
#                                           # writes the real-length batches, $BATCHES
#   bash experiments/bench_gpu.sh           # on the GPU: jax with CUDA, bert_jax importable
#
# The GPU box needs no TensorFlow and no data: the batches travel as .npz files
# (`bench --save_batch`, read back with numpy). Without them step 2 is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
record=${RECORD:-docs/results/gpu.jsonl}
batches=${BATCHES:-build/gpu_batches}
base=(--model=base --batch=256 --seq=128 --predictions=20)
large=(--model=large --batch=32 --seq=512)

if [[ ${1:-run} == prepare ]]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  python experiments/packing_efficiency.py --corpora=wikipedia --work="$work" \
    --record="$work/packing.jsonl" --shared="${SHARED:-../shared/data}"
  mkdir -p "$batches"
  save=(env JAX_PLATFORMS=cpu python -m bert_jax.perf.bench)
  w="$work/wikipedia"
  "${save[@]}" "${base[@]}" --records="$w-128.tfrecord" --save_batch="$batches/base-128.npz"
  "${save[@]}" "${base[@]}" --records="$w-128-packed3.tfrecord" --set=data.examples_per_row=3 \
    --save_batch="$batches/base-128-packed3.npz"
  "${save[@]}" "${large[@]}" --predictions=80 --records="$w-512.tfrecord" \
    --save_batch="$batches/large-512.npz"
  "${save[@]}" "${large[@]}" --predictions=80 --records="$w-512-packed6.tfrecord" \
    --set=data.examples_per_row=6 --save_batch="$batches/large-512-packed6.npz"
  exit 0
fi

python -c 'import jax; assert jax.devices()[0].platform == "gpu", jax.devices()' || {
  echo "no GPU visible to jax: install jax with CUDA (pip install \"jax[cuda12]\")" >&2
  exit 1
}
common=(--dtype=bfloat16 --steps=10 --rounds=2 --warmup=2 --record="$record")
cudnn=(--set=model.attention_dropout=0.0 "--set=model.attention_impl=cudnn")
variants=(
  "--variant=noattndrop:model.attention_dropout=0.0"
  "--variant=cudnn:model.attention_dropout=0.0;model.attention_impl=cudnn"
)
python -m bert_jax.perf.bench "${base[@]}" --label=gpu/base-128 "${common[@]}" "${variants[@]}"
python -m bert_jax.perf.bench "${large[@]}" --predictions=76 --label=gpu/large-512 "${common[@]}" \
  "${variants[@]}"
if [[ -d $batches ]]; then
  # One failure here (a packed mask on cuDNN, say) must not lose the others.
  for run in "base-128:base:" "base-128-packed3:base:3" "large-512:large:" \
    "large-512-packed6:large:6"; do
    IFS=: read -r name size k <<<"$run"
    if [[ $size == base ]]; then args=("${base[@]}"); else args=("${large[@]}" --predictions=80); fi
    [[ -n $k ]] && args+=(--set=data.examples_per_row="$k")
    python -m bert_jax.perf.bench "${args[@]}" --records="$batches/$name.npz" "${cudnn[@]}" \
      --label="gpu/$name-wikipedia" "${common[@]}" || echo "FAILED: gpu/$name-wikipedia" >&2
  done
else
  echo "no $batches: real-length runs skipped (bash experiments/bench_gpu.sh prepare)" >&2
fi
python experiments/performance_doc.py
