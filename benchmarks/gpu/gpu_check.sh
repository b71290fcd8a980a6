#!/usr/bin/env bash
# benchmarks/gpu/gpu_check.py on a lent GPU machine, from the carried working tree.
#
# The package runs from src/ on PYTHONPATH rather than being installed: that machine has no network, and
# `pip install -e .` would try to fetch setuptools for its isolated build. torch and transformers are the
# machine's own. The JSON, the pytest report and the log go to $OUT when it is set, else results/.
# Exit status: non-zero only when the script itself crashes (or overruns its hard limit); a missed target
# is a result, in the JSON and the table.
#
#     bash benchmarks/gpu/gpu_check.sh                 # extra arguments go to gpu_check.py
set -u
cd "$(dirname "$0")/../.."
out="${OUT:-results}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
python="${PYTHON:-python}"
command -v "$python" >/dev/null 2>&1 || python=python3
"$python" -c "import torch, transformers, neobert; print('torch', torch.__version__, '| CUDA', torch.version.cuda,
  '| GPU', torch.cuda.get_device_name() if torch.cuda.is_available() else None, '| transformers',
  transformers.__version__, '| neobert from', neobert.__file__)" || exit 1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv 2>/dev/null | tee "$out/nvidia-smi.txt"
# The script keeps itself within its budget (about 400 s); this bound only stops a hang, and SIGINT lets
# it leave the JSON of the stages it finished.
timeout --signal=INT --kill-after=20 460 "$python" benchmarks/gpu/gpu_check.py --out "$out/gpu_check.json" "$@" 2>&1 |
  tee "$out/gpu_check.log"
exit "${PIPESTATUS[0]}"
