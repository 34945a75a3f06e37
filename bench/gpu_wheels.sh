#!/usr/bin/env bash
# Make .whl/: the wheels bench/gpu_all.sh installs on the GPU machine, which has no package registry. Run it HERE (where
# pip reaches an index), in the checkout the device call sends, then call the device with carry ['.whl'].
#
#   bash bench/gpu_wheels.sh                        # wheels for the GPU image's Python 3.12, x86-64
#   PYVER=3.11 bash bench/gpu_wheels.sh             # for another Python (e.g. to try the offline install here)
#   WEIGHTS=/path/densenet121-a639ec97.pth bash bench/gpu_wheels.sh   # also copy DenseNet-121's ImageNet weights
#
# The GPU image (.library/device/KINDS.md) already holds torch, torchvision, numpy, pandas, scikit-learn, matplotlib,
# opencv-python-headless, onnx, onnxruntime, onnxscript, safetensors, accelerate, rich, anyio...: those are reused.
# What importing chexpert_nb.train/report/predict needs beyond them is below, at the versions of this venv (the tested
# set; --no-deps: one version of each). The ImageNet weights (32 MB) cannot be downloaded there nor here: without
# WEIGHTS, gpu_all.sh trains --no-pretrained and says so. All of .whl travels within the call's 64 MiB (with the tree
# and shared/data: check `du -sh .whl shared`).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
PYVER=${PYVER:-3.12}
DISTS="fastai fastcore fastprogress fasttransform fastdownload plum-dispatch beartype simplejpeg pydicom
       python-fasthtml starlette python-multipart itsdangerous defusedxml"
mkdir -p .whl
rm -f .whl/*.whl   # one version of each, for one Python: wheels left from an earlier run would stop the install there
grep -qx '/.whl/' .gitignore 2>/dev/null || grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
specs=()
for d in $DISTS; do
  v=$("$PY" -c "import importlib.metadata as m; print(m.version('$d'))" 2>/dev/null) || { echo "$d: not in $PY's environment, taking the newest"; v=; }
  specs+=("$d${v:+==$v}")
done
echo "downloading for CPython $PYVER, manylinux x86-64: ${specs[*]}"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${specs[@]}"
if [ -n "${WEIGHTS:-}" ]; then cp -f "$WEIGHTS" .whl/ && echo "copied $WEIGHTS into .whl/"; fi
ls -la .whl; du -sh .whl
echo "carry: .whl (and shared/ travels when the checkout has one: the NIH X-rays for bench/real_learning.py)"
