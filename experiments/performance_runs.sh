#!/usr/bin/env bash
# The runs behind docs/performance.md, recorded to docs/results/*.jsonl, then the
# document regenerated. CPU benchmarks want a quiet machine: run this alone.
#
#   bash experiments/performance_runs.sh [cpu|compare|malloc|profile|packing|aot|all]   (default all; hours)
#
# `compare` runs only the side-by-side runs behind the CPU targets (10 minutes on Zen 5),
# what a new machine needs first; `malloc` the before/after pairs of the malloc settings
# (bert_jax.cpu_env); `profile` where the step's time goes; `cpu` runs these and every
# other CPU optimisation's before/after.
set -euo pipefail
cd "$(dirname "$0")/.."
export JAX_PLATFORMS=cpu
what=${1:-all}
shared=${SHARED:-../shared/data}
cpu=docs/results/cpu.jsonl
aot=docs/results/aot.jsonl
bench=(python -m bert_jax.perf.bench --steps=5 --rounds=3 --warmup=1 --record="$cpu")
minilm=(--model=mini --task=classification --batch=32 --seq=128
  --set=model.num_layers=6 --set=model.hidden_size=384 --set=model.num_heads=12
  --set=model.intermediate_size=1536 --text_file="$shared/glue/SST-2/train.tsv"
  --vocab_file="$shared/vocab/bert-base-uncased/vocab.txt")
small=(--model=small --batch=32 --seq=128 --predictions=20)

if [[ $what == cpu || $what == compare || $what == all ]]; then
  # Side by side with HF transformers (the issue's configurations).
  "${bench[@]}" "${small[@]}" --compare=hf-torch --label=compare/small-pretraining-train
  "${bench[@]}" "${small[@]}" --mode=infer --compare=hf-torch --label=compare/small-pretraining-infer
  "${bench[@]}" "${small[@]}" --dtype=bfloat16 --compare=hf-torch --label=compare/small-pretraining-train-bf16
  # bert_jax on HF's padded batch, and the same 32 examples packed (data.pack_examples).
  "${bench[@]}" "${minilm[@]}" --compare=hf-torch --label=compare/minilm-classification-train \
    --variant="packed:data.pack_examples=16"
  "${bench[@]}" "${minilm[@]}" --mode=infer --compare=hf-torch \
    --label=compare/minilm-classification-infer --variant="packed:data.pack_examples=16"
  # Each framework at its fastest malloc: HF again, with the tunables bert_jax's process
  # starts with (bert_jax.cpu_env; reused buffers speed HF's step too).
  hf_ours=(--compare=hf-torch --hf_malloc=bert_jax)
  "${bench[@]}" "${small[@]}" "${hf_ours[@]}" --label=compare/small-pretraining-train-hf-bert-jax-malloc
  "${bench[@]}" "${small[@]}" --mode=infer "${hf_ours[@]}" \
    --label=compare/small-pretraining-infer-hf-bert-jax-malloc
  "${bench[@]}" "${minilm[@]}" "${hf_ours[@]}" \
    --label=compare/minilm-classification-train-hf-bert-jax-malloc --variant="packed:data.pack_examples=16"
  "${bench[@]}" "${minilm[@]}" --mode=infer "${hf_ours[@]}" \
    --label=compare/minilm-classification-infer-hf-bert-jax-malloc --variant="packed:data.pack_examples=16"
fi

if [[ $what == cpu || $what == malloc || $what == all ]]; then
  # glibc's malloc tunables are read at process start: before and after are two runs.
  # Huge pages (without reused buffers, as when they were added), then reused buffers.
  BERT_JAX_MALLOC_REUSE=0 BERT_JAX_MALLOC_HUGEPAGES=0 "${bench[@]}" "${small[@]}" \
    --label=opt/malloc-hugepages
  BERT_JAX_MALLOC_REUSE=0 "${bench[@]}" "${small[@]}" --label=opt/malloc-hugepages --name=hugepages
  BERT_JAX_MALLOC_REUSE=0 "${bench[@]}" "${small[@]}" --label=opt/malloc-reuse
  "${bench[@]}" "${small[@]}" --label=opt/malloc-reuse --name=reuse
  BERT_JAX_MALLOC_REUSE=0 "${bench[@]}" "${minilm[@]}" --label=opt/malloc-reuse-classification
  "${bench[@]}" "${minilm[@]}" --label=opt/malloc-reuse-classification --name=reuse
fi

if [[ $what == cpu || $what == all ]]; then
  # Optimisations, before (base) and after (variants), alternating in one process.
  "${bench[@]}" "${small[@]}" --label=opt/attention-dropout \
    --variant="no-attention-dropout:model.attention_dropout=0.0" \
    --variant="no-dropout:model.attention_dropout=0.0;model.hidden_dropout=0.0"
  "${bench[@]}" "${minilm[@]}" --label=opt/dropout-rng \
    --variant="rbg:rng_impl=rbg" --variant="unsafe_rbg:rng_impl=unsafe_rbg"
  "${bench[@]}" "${small[@]}" --label=opt/vocab-padding \
    --variant="pad128:model.vocab_pad_multiple=128"
  "${bench[@]}" "${small[@]}" --label=opt/scan-remat \
    --variant="scan:model.scan_layers=True" \
    --variant="scan+remat-full:model.scan_layers=True;model.remat_policy=full" \
    --variant="scan+remat-dots:model.scan_layers=True;model.remat_policy=save_dots"
  "${bench[@]}" "${small[@]}" --label=opt/bf16 --variant="bf16:model.dtype=bfloat16"
  # XLA:CPU's dots in oneDNN (bert_jax.cpu_env): base without it, the variant
  # with it as compiler options, alternating in one process.
  onednn="onednn:xla.xla_cpu_use_onednn=true;xla.xla_cpu_experimental_onednn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
  BERT_JAX_XLA_CPU_ONEDNN=0 "${bench[@]}" "${small[@]}" --label=opt/cpu-onednn --variant="$onednn"
  BERT_JAX_XLA_CPU_ONEDNN=0 "${bench[@]}" "${minilm[@]}" --label=opt/cpu-onednn-classification \
    --variant="$onednn"
  # Changes to the code, not the config: "before" runs at a commit before the change,
  # in a temporary worktree that records to this tree's docs/results.
  at_commit() {  # at_commit COMMIT CMD...
    local tree
    tree=$(mktemp -d)/project  # beside a link to ../shared, as the commands expect
    git worktree add --detach "$tree" "$1" >/dev/null
    ln -s "$(realpath "$shared/..")" "$tree/../shared"
    rm -rf "$tree/docs/results" && ln -s "$PWD/docs/results" "$tree/docs/results"
    (cd "$tree" && "${@:2}")
    git worktree remove --force "$tree"
  }
  # One model on every platform: the CPU-only paths of the model (dense layers on rows,
  # 16-bit dropout masks, vocabulary-major MLM logits) before, their removal after; HF
  # side by side in both, so the ratio is the number to compare.
  at_commit 523a01d "${bench[@]}" "${small[@]}" --compare=hf-torch --label=opt/one-bert
  "${bench[@]}" "${small[@]}" --compare=hf-torch --label=opt/one-bert --name=one-bert
fi

if [[ $what == cpu || $what == profile || $what == all ]]; then
  # Where the time goes: kernel time by kind (bert_jax.perf.profile); bert_jax alone.
  "${bench[@]}" "${small[@]}" --profile --label=profile/small-pretraining-train \
    --variant="no-dropout:model.attention_dropout=0.0;model.hidden_dropout=0.0"
  "${bench[@]}" "${minilm[@]}" --profile --label=profile/minilm-classification-train \
    --variant="packed:data.pack_examples=16"
fi

if [[ $what == packing || $what == all ]]; then
  python experiments/packing_efficiency.py --shared="$shared"
  work=/tmp/bert_jax_packing
  "${bench[@]}" --model=small --batch=32 --seq=512 --predictions=80 --label=packing/unpacked-512 \
    --records="$work/wikipedia-512.tfrecord"
  "${bench[@]}" --model=small --batch=32 --seq=512 --predictions=80 --label=packing/packed6-512 \
    --records="$work/wikipedia-512-packed6.tfrecord" --set=data.examples_per_row=6
fi

if [[ $what == aot || $what == all ]]; then
  # About 2 minutes a base compile, 5 a large one unscanned, on the 2-core machine.
  base=(python -m bert_jax.perf.aot --config=configs/pretrain.py:model=base --record="$aot")
  bf16=(--config.model.dtype=bfloat16)
  splash=(--config.model.attention_dropout=0.0 --config.model.attention_impl=splash)
  # The default config (bf16 compute, attention chosen by the trainer), then fp32.
  "${base[@]}" --topology=v5p-8 --label=base-128-default
  "${base[@]}" --topology=v5p-8 --config.model.dtype=float32 --label=base-128
  "${base[@]}" --topology=v5p-8 "${bf16[@]}" --label=base-128-bf16
  "${base[@]}" --topology=v5p-8 "${bf16[@]}" --config.model.attention_dropout=0.0 \
    --label=base-128-bf16-noattndrop
  "${base[@]}" --topology=v5p-8 "${bf16[@]}" "${splash[@]}" --label=base-128-bf16-noattndrop-splash
  "${base[@]}" --topology=v5p-8 "${bf16[@]}" --config.train_batch_size=512 --label=base-128-bf16-b512
  "${base[@]}" --topology=v5p-8 "${bf16[@]}" "${splash[@]}" --config.train_batch_size=512 \
    --label=base-128-bf16-noattndrop-splash-b512
  large=(python -m bert_jax.perf.aot --config=configs/pretrain.py:recipe=mlperf --record="$aot" "${bf16[@]}")
  "${large[@]}" --topology=v5p-8 --config.model.scan_layers=True --config.model.remat_policy=full \
    --label=large-512-b256-scan-remat
  "${large[@]}" --topology=v5p-8 --config.train_batch_size=32 --label=large-512-b32
  "${large[@]}" --topology=v5p-8 --config.train_batch_size=32 "${splash[@]}" \
    --label=large-512-b32-noattndrop-splash
  "${base[@]}" --topology=v5p-8 "${bf16[@]}" --config.model.scan_layers=True --label=base-128-bf16-scan
  "${base[@]}" --topology=v6e-8 "${bf16[@]}" --label=base-128-bf16-v6e
fi

python experiments/performance_doc.py
