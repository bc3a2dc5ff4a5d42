#!/usr/bin/env bash
# The GPU check, for a lent GPU machine (at most 8 minutes; nothing is downloaded there):
#   1. the GPU-relevant tests: padding-free forward passes, torch's flash-attention varlen kernel
#      against the padded sdpa forward on CUDA (bf16), log-probs, and QLoRA on CUDA when bitsandbytes is
#      importable (tests/test_qlora.py: training on the device accelerate picks) (2.5 min at most);
#   2. benchmarks/gpu_bench.py: upo DPO, UPO, DPO without padding-free, and TRL's DPO when trl is
#      importable, on random-weight Qwen2-0.5B and -1.5B shapes built in-process: tokens/s, MFU
#      against the bf16 matmul peak measured there, peak memory (5 min at most).
# It needs a Python with upo's dependencies and a CUDA build of torch (PYTHON, default python3), run
# from the repository root:  bash benchmarks/gpu_check.sh [results.json]
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUTPUT=${1:-benchmarks/results/gpu.json}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "gpu_check: no nvidia-smi"
"$PYTHON" -c "import torch, transformers, accelerate, peft; assert torch.cuda.is_available(), 'no CUDA device'; \
print('gpu_check: torch', torch.__version__, 'cuda', torch.version.cuda, '| transformers', transformers.__version__, \
'| accelerate', accelerate.__version__, '| peft', peft.__version__)" || exit 1
status=0
timeout 150 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_packing.py tests/test_logps.py tests/test_qlora.py -rs || status=1
timeout 300 "$PYTHON" benchmarks/gpu_bench.py --output "$OUTPUT" || status=1
echo "gpu_check: done (exit $status)"
exit $status
