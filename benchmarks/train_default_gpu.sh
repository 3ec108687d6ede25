#!/usr/bin/env bash
# The default model's GPU training run (one lease of the project's accelerator): train the
# candidate architectures of benchmarks/train_default.py side by side on one GPU for a fixed
# time budget, run the CUDA tests, and copy the results to $OUT (at most 8 files come back).
#   DATA=benchmarks/data OUT=out bash benchmarks/train_default_gpu.sh
# Settings (environment): ARCHS ("deep shared deep32"), MINUTES (6.5), DEVICE (cuda), DATA, OUT.
# Statistics are computed afterwards on the CPU: python benchmarks/train_default.py --arch A --stats
set -u
ARCHS=${ARCHS:-"deep shared deep32"}
MINUTES=${MINUTES:-6.5}
DEVICE=${DEVICE:-cuda}
DATA=${DATA:-benchmarks/data}
RUNS=${RUNS:-/tmp/runs}
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:-}:$PWD"
mkdir -p "$OUT" "$RUNS"
nvidia-smi -L 2>/dev/null
python3 -c "import torch, e3nn, ase, vesin; print('torch', torch.__version__, 'e3nn', e3nn.__version__, 'ase', ase.__version__, 'cuda', torch.cuda.is_available())"
LIMIT=$(python3 -c "print(int(float('$MINUTES') * 60 + 120))")  # a stuck run still leaves time to copy
for arch in $ARCHS; do
  timeout "$LIMIT" python3 benchmarks/train_default.py --arch "$arch" --device "$DEVICE" --minutes "$MINUTES" --data "$DATA" \
    --out "$RUNS" --threads 4 --quiet > "$RUNS/$arch.log" 2>&1 &
done
(python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_physics_contracts.py > "$RUNS/tests.log" 2>&1; echo "pytest rc=$?" >> "$RUNS/tests.log") &
wait
for arch in $ARCHS; do
  cp "$RUNS/$arch/best.safetensors" "$OUT/$arch.safetensors" 2>/dev/null
  python3 - "$RUNS" "$arch" "$OUT" <<'PY'
import json, sys, pathlib
runs, arch, out = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
rec = {"log_tail": (runs / f"{arch}.log").read_text()[-4000:] if (runs / f"{arch}.log").exists() else None}
for name in ("summary.json", "metrics.json"):
    p = runs / arch / name
    rec[name] = json.loads(p.read_text()) if p.exists() else None
(out / f"{arch}.json").write_text(json.dumps(rec, indent=1))
PY
done
cat "$RUNS"/*.log > "$OUT/logs.txt"
tail -5 "$RUNS/tests.log"
ls -la "$OUT"
