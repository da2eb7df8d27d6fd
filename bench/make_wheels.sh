#!/usr/bin/env bash
# Build .whl/: the wheels the GPU box's python3 (3.12, CUDA torch, no network) lacks for
# lotto-tui, at the versions this project's venv holds. The box already has torch,
# torchvision, numpy, pillow, safetensors, scikit-learn, matplotlib, pytest and
# pytest-timeout (see the device notes' package list); these are what it lacks, plus
# rich, markdown-it-py, pygments and typing_extensions at our versions (textual 8 and
# pydantic 2.14 need recent ones). gpu_check.sh installs them into /tmp/site.
#   usage: bash bench/make_wheels.sh        (then carry .whl; it must stay under 64 MiB)
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}  # this checkout's venv (README's setup)
DEST=${DEST:-.whl}
NAMES="pydantic pydantic_core annotated-types typing-inspection typing_extensions textual textual-plotext plotext
rich markdown-it-py mdit-py-plugins mdurl platformdirs pygments"
mkdir -p "$DEST"
specs=()
for name in $NAMES; do
  version=$("$PY" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
  if [ -z "$version" ]; then echo "make_wheels: $name is not installed in $PY's environment" >&2; exit 1; fi
  specs+=("$name==$version")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "${specs[@]}"
ls -1 "$DEST"
size=$(du -sm "$DEST" | cut -f1)
echo "$DEST: ${size} MiB"
if [ "$size" -ge 60 ]; then echo "make_wheels: $DEST is ${size} MiB; at most 64 MiB travel with a command" >&2; exit 1; fi
