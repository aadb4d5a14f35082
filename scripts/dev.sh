#!/usr/bin/env bash
# Developer loop without reinstalling: build the extension with CMake into build/dev and copy it next to
# the Python sources, so `PYTHONPATH=python python -m pytest ...` tests this checkout.
#   scripts/dev.sh            # (re)build, incremental
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python}
if [ ! -f build/dev/build.ninja ]; then
  cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$(command -v "$py")" \
        -Dpybind11_DIR="$("$py" -c 'import pybind11; print(pybind11.get_cmake_dir())')" >/dev/null
fi
ninja -C build/dev >build/dev/ninja.log 2>&1 || { grep -E -A3 "error|Error" build/dev/ninja.log | head -60; exit 1; }
for so in build/dev/_core*.so; do cp "$so" "python/fastmlp/.tmp.so" && mv -f "python/fastmlp/.tmp.so" "python/fastmlp/$(basename "$so")"; done  # a new file: running tests keep theirs
