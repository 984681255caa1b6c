#!/usr/bin/env bash
# The production recipe on one GPU and on two (benchmarks/multi_gpu.py), LoRA then QLoRA, on a
# Llama-3.1-8B shape with random weights at 4096 tokens, batch 2 per GPU (one GPU: 2 x 2 accumulated).
#   bash benchmarks/multi_gpu.sh OUT_FILE [SHAPE SEQ STEPS]      (tiny 128 4 runs it on a CPU in a minute)
set -euo pipefail
out=$1; shape=${2:-Llama-3.1-8B}; seq=${3:-4096}; steps=${4:-24}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # never NVLink multicast
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
dir=$(mktemp -d)
script="$(dirname "$0")/multi_gpu.py"
python=${PYTHON:-python3}
launch2="$python -m accelerate.commands.launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no"
$python "$script" prepare --shape "$shape" --seq "$seq" --examples $((4 * steps)) --dir "$dir"
for method in lora qlora; do
  $launch2 "$script" train --dir "$dir" --method $method --batch 2 --steps "$steps" --name $method-2gpu
  # one GPU only: a single process that sees two would split each batch over both (Trainer's DataParallel)
  CUDA_VISIBLE_DEVICES=0 $python "$script" train --dir "$dir" --method $method --batch 2 --accumulate 2 --steps "$steps" --name $method-1gpu
  $python "$script" report --dir "$dir" --out "$out" --made-by "bash benchmarks/multi_gpu.sh $*"   # after each method, so that a run cut short keeps what it has
done
rm -rf "$dir"
