#!/usr/bin/env bash
# Run the CuPy tests and GPU benchmarks on a machine with a CUDA GPU that has no network:
# the repo goes on PYTHONPATH (no install); pure-Python test dependencies the machine lacks
# may be carried in .devicedeps/ (pip wheels unpacked there). Results go to $OUT (or ./out).
#   usage: tools/gpu_check.sh [quick|full]
set -u
MODE="${1:-quick}"
OUT="${OUT:-$PWD/out}"
mkdir -p "$OUT"
DEPS="$(mktemp -d)"
python - "$DEPS" <<'PY'
import importlib.util, pathlib, shutil, sys
dest, src = pathlib.Path(sys.argv[1]), pathlib.Path(".devicedeps")
wanted = {"tqdm": "tqdm", "hypothesis": "hypothesis", "pytest_benchmark": "pytest_benchmark",
          "cpuinfo": "py_cpuinfo", "safetensors": "safetensors",
          "sortedcontainers": "sortedcontainers", "attr": "attrs"}
for module, dist in wanted.items():
    if importlib.util.find_spec(module) is None and src.is_dir():
        for path in list(src.glob(f"{module}*")) + list(src.glob(f"{dist}-*.dist-info")):
            target = dest / path.name
            if not target.exists():
                (shutil.copytree if path.is_dir() else shutil.copy)(path, target)
        if module == "hypothesis":
            for path in src.glob("_hypothesis*.py"):
                shutil.copy(path, dest / path.name)
        print("carried", module)
PY
export PYTHONPATH="$PWD:$DEPS"
{ nvidia-smi -L; python --version; python -c "import cupy, numpy, numba; print('cupy', cupy.__version__, 'numpy', numpy.__version__, 'numba', numba.__version__)"; lscpu | grep 'Model name'; } > "$OUT/env.txt" 2>&1
python -c "import fastnn; print(fastnn.backends.available())" >> "$OUT/env.txt" 2>&1
timeout 300 python -m pytest -q -p no:cacheprovider -k cupy --maxfail=40 tests \
    > "$OUT/pytest_cupy.txt" 2>&1
echo "pytest rc=$?" >> "$OUT/pytest_cupy.txt"
timeout 60 python examples/train_digits.py --backend cupy > "$OUT/train_digits_cupy.txt" 2>&1
echo "rc=$?" >> "$OUT/train_digits_cupy.txt"
if [ "$MODE" = full ]; then
    timeout 150 python -m pytest -q -p no:cacheprovider bench/bench_conv.py bench/bench_lstm.py \
        --benchmark-only --benchmark-columns=median,iqr,rounds > "$OUT/bench.txt" 2>&1
    echo "rc=$?" >> "$OUT/bench.txt"
fi
tail -3 "$OUT/pytest_cupy.txt"
