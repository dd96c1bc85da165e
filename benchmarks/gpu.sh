#!/usr/bin/env bash
# The GPU work of this project in one call (issue 16): benchmarks/protocols/gpu_text8.yaml, every
# family at once on the one GPU under bf16 autocast, about 6 minutes; results under OUT_DIR:
#
#     bash benchmarks/gpu.sh OUT_DIR        # from the repository root, on the GPU machine
#
# Further arguments are overrides of the protocol (a dotlist, as `benchmarks/ablate.py` takes);
# tests/test_ablate.py runs this script so on a CPU with the protocol shrunk to seconds.
# RUNS_DIR (default /tmp/runs) holds the run folders, WHEELS_DIR (default .whl) the wheels.
#
# Packages that machine lacks travel as wheels in .whl/ (ignored by git) and are installed first;
# fetch them here, for the GPU machine's Python (3.12 on the lent H200s), with
#     pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#       omegaconf geoopt datasets dill multiprocess pyarrow fsspec
# SIMPLEXDIFF_COMMIT names the commit when the tree travels without .git. Then copy OUT_DIR's
# gpu_text8.{json,md,png} to benchmarks/results/ and commit them with the device named.
set -euo pipefail
out=${1:?usage: bash benchmarks/gpu.sh OUT_DIR [PROTOCOL_OVERRIDES...]}
shift
wheels=${WHEELS_DIR:-.whl}
mkdir -p "$out"
if compgen -G "$wheels/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$wheels"/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/nvidia-smi.txt"
  (nvidia-smi dmon -s um -d 10 -c 50 > "$out/dmon.txt" 2>&1 &)
fi
timeout 440 python3 benchmarks/ablate.py benchmarks/protocols/gpu_text8.yaml "$@" \
  --out "$out/gpu_text8.json" --runs "${RUNS_DIR:-/tmp/runs}" 2>&1 \
  | grep --line-buffered -v -E "warnings.warn|UserWarning|litlogger|Tip:" | tee "$out/gpu_log.txt"
