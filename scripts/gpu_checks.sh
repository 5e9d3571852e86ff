#!/bin/bash
# Every check that needs the lent GPU machine, in one call: a task that draws one gets 15 minutes
# of device time, a minute or two of it to start the machine. Runs the CUDA tests, make bench's
# CUDA rows (2,048² and 8,192²) and the GPU levers at 8,192², each within its own time limit so
# that one that hangs leaves the others their figures, and writes every log and report to OUT.
# The machine has Python and PyTorch but no GDAL and no network; which card it has, torch says at
# run time (machine.txt, and each report's rows).
#
#   here, once (minutes):  scripts/portable_gdal.sh .gpu_gdal ~/.pyenv/versions/3.12.1/bin/python3
#                          scripts/gpu_checks.sh --prepare .gpu_gdal
#   there, one call:       run(command="scripts/gpu_checks.sh .gpu_gdal $OUT", carry=[".gpu_gdal"],
#                              timeout_s=600)
#
# --prepare copies the real pairs the CUDA tests read into FOLDER/data (../shared does not travel).
# A step's limit in seconds can be changed with TESTS_S, BENCH_S and LEVERS_S; every step ends by
# DEADLINE_S (default 570) after the start, GDAL's unpacking included, so that the call's own 600 s
# never cut the logs off.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PAIRS=(oscd/abudhabi oscd/bercy levir/val_27_0000_0256)

if [[ ${1:-} == --prepare ]]; then
    folder=$(realpath "$2")
    [[ -f $folder/gdal-libs.tar.xz && -d $folder/osgeo ]] || { echo "build $folder first: scripts/portable_gdal.sh" >&2; exit 1; }
    for pair in "${PAIRS[@]}"; do
        mkdir -p "$folder/data/$pair" && cp -r "$ROOT/../shared/data/$pair/." "$folder/data/$pair/"
    done
    echo "pairs for the CUDA tests in $folder/data ($(du -sh "$folder" | cut -f1) to carry in all)"
    exit 0
fi

folder=$(realpath "$1"); out=$(realpath -m "$2"); mkdir -p "$out"
if [[ -z ${DEEPCL_GDAL_UNPACKED:-} ]]; then  # GDAL's libraries unpacked once, for every step
    exec "$ROOT/scripts/with_portable_gdal.sh" "$folder" env DEEPCL_GDAL_UNPACKED=1 \
        DEEPCL_DEADLINE=$(($(date +%s) + ${DEADLINE_S:-570})) "$ROOT/scripts/gpu_checks.sh" "$folder" "$out"
fi
cd "$ROOT" || exit 1
export PYTHONUNBUFFERED=1 DEEPCL_DATA=$folder/data
failed=0

step() {  # step NAME SECONDS COMMAND...: its output in OUT/NAME.log, its status in OUT/summary.txt
    local name=$1 seconds=$2; shift 2
    local left=$((DEEPCL_DEADLINE - $(date +%s) - 10)) started=$SECONDS
    ((seconds > left)) && seconds=$left
    if ((seconds < 20)); then
        echo "$name: not run, the call's time is spent" | tee -a "$out/summary.txt"; failed=1; return
    fi
    echo "$name: started, limit $seconds s" | tee -a "$out/summary.txt"
    timeout --kill-after=5 "$seconds" "$@" >"$out/$name.log" 2>&1
    local status=$?
    echo "$name: exit $status after $((SECONDS - started)) s" | tee -a "$out/summary.txt"
    [[ $status == 0 ]] || failed=1
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c 'import platform, sys, torch
cuda = torch.cuda.is_available()
print("Python", platform.python_version(), "torch", torch.__version__, "CUDA", torch.version.cuda,
      "device", torch.cuda.get_device_name(0) if cuda else "none torch can use")
sys.exit(not cuda)'
  cuda_status=$?
  nproc; git -C "$ROOT" log -1 --format='commit %H %s' 2>/dev/null || echo "commit: no .git here"
} >"$out/machine.txt" 2>&1
cat "$out/machine.txt"
if ((cuda_status != 0)); then
    echo "no CUDA device torch can use: nothing measured" | tee -a "$out/summary.txt"; exit 2
fi
# Pre-flight, before the timed steps: the python3 every step runs must import GDAL's bindings (those
# unpacked above) and run a kernel on the GPU; else each step would fail in turn, its whole limit apart.
if ! preflight=$(python3 -c 'from osgeo import gdal
assert gdal.GetDriverByName("GTiff") is not None, "GDAL without its GTiff driver"
import torch
torch.ones(1, device="cuda").add_(1).item()
print("GDAL", gdal.__version__, "imports; CUDA runs on", torch.cuda.get_device_name(0))' 2>&1); then
    echo "pre-flight failed, nothing measured: $(tail -n 1 <<<"$preflight")" | tee -a "$out/summary.txt"; exit 2
fi
echo "pre-flight: $preflight" | tee -a "$out/summary.txt"

# The tests with a CUDA case, and those of the pipeline's GPU structure (reader threads, blending
# on the device, writing behind). "-p no:cacheprovider": the checkout there may be read-only.
step cuda_tests "${TESTS_S:-150}" python3 -m pytest -q -p no:cacheprovider -rs \
    tests/test_device_blending.py tests/test_network.py tests/test_batches.py tests/test_detect.py \
    -k "cuda or even or write_that_fails or back_to_back or readers or blends or beside_a_gpu"
# Two repeats, not make bench's three: a third round of every child at both sizes has not been shown to fit
# BENCH_S, and the steps' limits already fill DEADLINE_S. Each row is then the mean of its two runs, both shown.
step bench "${BENCH_S:-240}" python3 -m benchmarks.detect_bench --devices cuda \
    --runs pipeline,naive,compute,io --repeats 2 --cache /tmp/deepcl_bench --report "$out/benchmarks_gpu_run.md"
step levers "${LEVERS_S:-150}" python3 -m benchmarks.gpu_levers --size 8192 --rounds 2 --cache /tmp/deepcl_bench
exit $failed
