#!/usr/bin/env bash
# Build fastmlp's extension with AddressSanitizer + UndefinedBehaviorSanitizer
# into a separate virtual environment and run the test suite under them.
#
#   scripts/sanitize.sh                      # the whole suite (tests/)
#   scripts/sanitize.sh tests/test_hostile.py -k load    # any pytest arguments
#
# Nothing is installed into the Python you run this from: the source tree is
# copied to $FASTMLP_SAN_DIR (default /tmp/fastmlp-sanitize), built there with
# -fsanitize=address,undefined (recoverable, so every report is counted, not
# just the first), installed into $FASTMLP_SAN_DIR/venv, and the copied tests
# run with LD_PRELOAD=libasan, PYTHONMALLOC=malloc (so Python's own objects
# and NumPy's buffers go through ASan's allocator) and detect_leaks=0 (the
# interpreter keeps its objects alive at exit by design). Child processes
# (tests/test_hostile.py, the benchmark smoke test) inherit the sanitizers.
# Reports go to $FASTMLP_SAN_DIR/logs/{asan,ubsan}.<pid>.
#
# Exit status: 0 only if the build succeeded, pytest ran, and there were zero
# sanitizer reports. (Test failures are reported separately: the point of this
# script is memory and UB errors; see the pytest summary for the rest.)
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${FASTMLP_SAN_DIR:-/tmp/fastmlp-sanitize}"
VENV="$WORK/venv"; SRC="$WORK/src"; LOGS="$WORK/logs"; BUILD="$WORK/build"
PY="${PYTHON:-python3}"
CXX="${CXX:-g++}"
FLAGS="-fsanitize=address,undefined -fsanitize-recover=address,undefined -fno-omit-frame-pointer -g"

mkdir -p "$WORK"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV" || exit 2
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
# build + test dependencies (the [test] extras of pyproject.toml, and scikit-learn for the estimators)
"$VENV/bin/python" -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" cmake ninja numpy scipy-openblas32 \
  pytest hypothesis tqdm threadpoolctl scikit-learn matplotlib || exit 2

echo "== copying $ROOT to $SRC"
rm -rf "$SRC"; mkdir -p "$SRC"
tar -C "$ROOT" --exclude=./.git --exclude=./build --exclude=./fuzz/corpus --exclude=./fuzz/findings \
  --exclude=./fuzz/artifacts --exclude=./fuzz/logs --exclude=__pycache__ --exclude=.hypothesis -cf - . \
  | tar -C "$SRC" -xf - || exit 2

echo "== building with $FLAGS"
CXX="$CXX" "$VENV/bin/python" -m pip install --no-build-isolation --no-deps --force-reinstall -q "$SRC" \
  --config-settings=build-dir="$BUILD" \
  --config-settings=cmake.define.CMAKE_CXX_FLAGS="$FLAGS" \
  --config-settings=cmake.define.CMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" \
  > "$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; echo "build failed"; exit 2; }
SO=$(ls "$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['platlib'])")"/fastmlp/_core*.so)
if ! ldd "$SO" | grep -q libasan; then echo "the installed $SO is not linked with ASan"; exit 2; fi
LIBASAN="$("$CXX" -print-file-name=libasan.so)"
[ -e "$LIBASAN" ] || { echo "libasan.so not found"; exit 2; }
# libstdc++ must be loaded when ASan starts, or its __cxa_throw interceptor finds no
# real __cxa_throw (python is a C program) and every C++ exception aborts
LIBSTDCXX="$("$CXX" -print-file-name=libstdc++.so.6)"
echo "== extension $SO"
echo "== preloading $LIBASAN $LIBSTDCXX"

rm -rf "$LOGS"; mkdir -p "$LOGS"
ARGS=("$@"); [ ${#ARGS[@]} -eq 0 ] && ARGS=(tests)
cd "$SRC"
start=$(date +%s)
# allocator_may_return_null + max_allocation_size_mb: the hostile-size tests get a
# MemoryError (as under their RLIMIT_AS without ASan) instead of an ASan abort.
ASAN_OPTIONS="detect_leaks=0:halt_on_error=0:allocator_may_return_null=1:max_allocation_size_mb=4096:log_path=$LOGS/asan:detect_stack_use_after_return=0" \
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=0:log_path=$LOGS/ubsan" \
PYTHONMALLOC=malloc LD_PRELOAD="$LIBASAN:$LIBSTDCXX" \
  "$VENV/bin/python" -m pytest -q -p no:cacheprovider "${ARGS[@]}" 2>&1 | tee "$WORK/pytest.log" | tail -25
secs=$(( $(date +%s) - start ))

asan=$(cat "$LOGS"/asan.* 2>/dev/null | grep -cE "ERROR: AddressSanitizer|AddressSanitizer: CHECK failed")
ubsan=$(cat "$LOGS"/ubsan.* "$LOGS"/asan.* 2>/dev/null | grep -c "runtime error:")
mine=$(cat "$LOGS"/* 2>/dev/null | grep -E "ERROR: AddressSanitizer|CHECK failed|runtime error:" -A40 | grep -cE "in fastmlp::|/cpp/|_core\.cpp")
summary=$(grep -aE "^[0-9]+ (passed|failed)|passed|failed|error" "$WORK/pytest.log" | tail -1)
echo
echo "fastmlp sanitizer run ($(date -u +%Y-%m-%dT%H:%MZ), $("$CXX" --version | head -1), -fsanitize=address,undefined)"
echo "  pytest ${ARGS[*]}: $summary in ${secs}s"
echo "  AddressSanitizer reports: $asan"
echo "  UndefinedBehaviorSanitizer reports: $ubsan"
echo "  report lines naming fastmlp code: $mine"
if [ "$asan" -gt 0 ] || [ "$ubsan" -gt 0 ]; then
  echo "  first reports:"
  cat "$LOGS"/* | grep -E "ERROR: AddressSanitizer|CHECK failed|runtime error:" | sed -E 's/==[0-9]+==//; s/0x[0-9a-f]+/ADDR/g; s/tid=[0-9]+/tid/' \
    | sort | uniq -c | sort -rn | head -10
  echo "  first frames in fastmlp code:"
  cat "$LOGS"/* | grep -E "in fastmlp::" | sed -E 's/^ *#[0-9]+ 0x[0-9a-f]+ in //' | sort | uniq -c | sort -rn | head -10
  exit 1
fi
exit 0
