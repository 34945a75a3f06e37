#!/usr/bin/env bash
# The recipe on a real GPU in one prepared call (issue 22): install, synthetic JPEGs, the three GPU benchmarks, one real
# chexpert-train epoch at 320 px, chexpert-evaluate, chexpert-predict on the GPU, a kill-and-resume check, the real-X-ray
# learning check, then (time allowing) torch.compile. Every step has its own timeout, writes <step>.log, and adds a row
# (step, rc, seconds, note) to summary.tsv; a failed step does not stop the script. A summary is printed at the end.
#
#   bash bench/gpu_all.sh              # the GPU machine: ~9 minutes in all (--budget), results under $OUT
#   bash bench/gpu_all.sh --dry-run    # this CPU: the same steps with tiny sizes (32 px, a few images), a few minutes
#
# Options: --dry-run; --budget SECONDS (the whole run, install included; default 540, dry run 900);
#          --only STEP,STEP (these steps, after machine, install and sample; e.g. --only train,evaluate,predict);
#          --pack / --no-pack (default: pack on the GPU, not in a dry run): the results are written to a scratch folder
#          and $OUT receives summary.tsv, summary.txt, machine.txt and results.tar.gz (all of them), re-packed after every
#          step, because the device tool brings back at most 8 files from $OUT. --no-pack writes everything into $OUT.
# Environment: OUT (default: a new temporary folder), PY (the python; default: the repo's .venv, the main worktree's
#          .venv, else python3: the first that imports torch), WEIGHTS (DenseNet-121's ImageNet state dict, .pth),
#          NIH_DATA (a folder holding nih-cxr14-sample and nih-cxr14-more), KEEP=1 (keep the trained bundles),
#          REAL_ARMS (bench/real_learning.py's --arms; default ours-densenet121,peer-densenet121), REAL_EPOCHS.
#
# On the GPU machine (no package registry there: nothing outside it can be reached) the packages its image lacks come
# from wheels in .whl/ (made here by bench/gpu_wheels.sh; the call carries '.whl'), installed with
# `pip install --no-index --no-deps --target` and put on PYTHONPATH after the repo; the image's torch is reused.
# ImageNet weights cannot be downloaded there: with no WEIGHTS and no .whl/densenet121*.pth, training runs
# --no-pretrained (said in the summary). The NIH X-rays travel only as shared/ inside the checkout.
set -u -o pipefail

DRY=0; PACK=auto; BUDGET=; ONLY=
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --pack) PACK=1 ;;
    --no-pack) PACK=0 ;;
    --budget) BUDGET=$2; shift ;;
    --budget=*) BUDGET=${1#*=} ;;
    --only) ONLY=$2; shift ;;
    --only=*) ONLY=${1#*=} ;;
    -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_all.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
T_START=$(date +%s)
[ -n "$BUDGET" ] || BUDGET=$([ $DRY = 1 ] && echo 900 || echo 540)
DEADLINE=$((T_START + BUDGET))
[ "$PACK" = auto ] && PACK=$([ $DRY = 1 ] && echo 0 || echo 1)
export OUT=${OUT:-$(mktemp -d -t gpu_all.XXXXXX)}
mkdir -p "$OUT"
SCRATCH=$(mktemp -d -t gpu_all_work.XXXXXX)     # bundles, checkpoints, the wheels' site folder: never packed
if [ "$PACK" = 1 ]; then RES=$SCRATCH/results; else RES=$OUT; fi
mkdir -p "$RES"
SUMMARY=$RES/summary.tsv
printf 'step\trc\tseconds\tnote\n' > "$SUMMARY"
exec > >(tee -a "$RES/gpu_all.log") 2>&1

# ---------------------------------------------------------------- sizes: the GPU run, or the dry run on this CPU
CORES=$(nproc --all 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)  # not OMP_NUM_THREADS
if [ $DRY = 1 ]; then
  MODE="dry run (CPU, tiny sizes)"; DEV=cpu; SIZE=32; PATIENTS=8; WORKERS=0
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  STEP_ARGS=(--dry-run); DATA_ARGS=(--dry-run --patients $PATIENTS); TRAIN_BENCH_ARGS=(--dry-run --patients $PATIENTS)
  COMPILE_ARGS=(--dry-run --parts compile --json gpu_compile.json)
  TRAIN_ARGS=(--size $SIZE --bs 4 --num-workers $WORKERS --ood-images 16 --no-onnx)  # the ONNX export takes minutes on a small CPU
  EVAL_ARGS=(--device cpu --n-boot 20 --batch-size 8); PRED_ARGS=(--device cpu --batch-size 8)
  RESUME_ARGS=(--size $SIZE --bs 2 --limit 24 --checkpoint-every 2 --num-workers 0)
  REAL_MIN=3
else
  MODE="GPU"; DEV=cuda; SIZE=320; PATIENTS=1000; WORKERS=$((CORES < 16 ? CORES : 16))
  STEP_ARGS=(--parts opt,max-batch); DATA_ARGS=(--patients $PATIENTS --batches 20 --workers $WORKERS)
  TRAIN_BENCH_ARGS=(--patients $PATIENTS --steps 60 --warmup 10 --workers $WORKERS)
  COMPILE_ARGS=(--parts compile --steps 10 --json gpu_compile.json)
  TRAIN_ARGS=(--size $SIZE --num-workers $WORKERS)  # the default recipe otherwise (bs 16, lr 1e-4, jfhealthcare policy...)
  EVAL_ARGS=(--device cuda); PRED_ARGS=(--device cuda)
  RESUME_ARGS=(--size $SIZE --limit 1200 --checkpoint-every 15 --num-workers $WORKERS)
  REAL_MIN=4
fi
SAMPLE=$ROOT/data/bench/gpu-sample-$PATIENTS   # the folder bench/gpu_data.py and gpu_train.py use for --patients
BUNDLE=$SCRATCH/models/gpu-all-train
RESUME_OUT=$SCRATCH/models/gpu-all-resume
SITE=$SCRATCH/site

# ---------------------------------------------------------------- the python: reuse one that already has torch
pick_python() {
  local common c
  common=$(git -C "$ROOT" rev-parse --path-format=absolute --git-common-dir 2>/dev/null) || common=
  for c in "${PY:-}" "$ROOT/.venv/bin/python" ${common:+"$(dirname "$common")/.venv/bin/python"} python3 python; do
    [ -n "$c" ] && command -v "$c" >/dev/null 2>&1 && "$c" -c 'import torch' >/dev/null 2>&1 && { echo "$c"; return 0; }
  done
  return 1
}
PY=$(pick_python) || PY=${PY:-python3}
export PY PYTHONUNBUFFERED=1 PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg PYTHONWARNINGS=ignore
# the command-line entry points as the console scripts call them, from this tree (not an installed copy)
cli() { local mod=$1 fn=$2; shift 2; "$PY" -c "import sys; from chexpert_nb.$mod import $fn; $fn()" "$@"; }

# ImageNet weights: the default recipe is pretrained; the GPU machine cannot download them
WEIGHTS_NOTE=
if [ -z "${WEIGHTS:-}" ]; then
  for w in "$ROOT"/.whl/densenet121*.pth "$ROOT"/.whl/weights/densenet121*.pth "${TORCH_HOME:-$HOME/.cache/torch}"/hub/checkpoints/densenet121-*.pth; do
    [ -f "$w" ] && { WEIGHTS=$w; break; }
  done
fi
if [ $DRY = 1 ]; then PRETRAIN=(--no-pretrained); WEIGHTS_NOTE="dry run: --no-pretrained"
elif [ -n "${WEIGHTS:-}" ] && [ -f "$WEIGHTS" ]; then PRETRAIN=(--weights "$WEIGHTS"); WEIGHTS_NOTE="ImageNet weights from $WEIGHTS"
else PRETRAIN=(--no-pretrained); WEIGHTS_NOTE="no ImageNet weights on this machine (WEIGHTS, .whl/densenet121*.pth, torch's cache): --no-pretrained"
fi

# the 1,201 NIH X-rays: shared/ inside the checkout (what the device copies), else ../shared beside it
NIH=${NIH_DATA:-}
if [ -z "$NIH" ]; then
  for d in "$ROOT/shared/data" "$ROOT/../shared/data"; do [ -d "$d/nih-cxr14-sample" ] && { NIH=$(cd "$d" && pwd); break; }; done
fi

# ---------------------------------------------------------------- steps
pack() {
  [ "$PACK" = 1 ] || return 0
  cp -f "$SUMMARY" "$RES/machine.txt" "$OUT/" 2>/dev/null
  [ -f "$RES/summary.txt" ] && cp -f "$RES/summary.txt" "$OUT/"
  tar -czf "$OUT/results.tar.gz.tmp" --exclude='*.safetensors' --exclude='*.pth' --exclude='*.onnx' --exclude='*.pt' \
      --exclude='*.npy' -C "$RES" . 2>/dev/null && mv -f "$OUT/results.tar.gz.tmp" "$OUT/results.tar.gz"
}

record() {  # record STEP RC SECONDS NOTE
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$SUMMARY"
}

# step NAME CAP MIN FUNCTION [ARGS...]: run FUNCTION under `timeout` (CAP seconds, less when the budget is short; skipped
# when under MIN seconds are left), output to NAME.log, a row in summary.tsv
step() {
  local name=$1 cap=$2 min=$3; shift 3
  local now left t rc t0 dt note
  if [ -n "$ONLY" ] && ! [[ ",machine,install,sample,$ONLY," == *",$name,"* ]]; then
    record "$name" skip 0 "not in --only $ONLY"; return 0
  fi
  now=$(date +%s); left=$((DEADLINE - now - 5)); t=$((cap < left ? cap : left))
  if [ "$t" -lt "$min" ]; then
    record "$name" skip 0 "not run: ${left}s of the ${BUDGET}s budget left, the step needs ${min}s"
    echo "== [$name] skipped: ${left}s left"; pack; return 0
  fi
  echo "== [$name] (timeout ${t}s) $(date -u +%H:%M:%S)"
  t0=$(date +%s.%N)
  STEP_NOTE=$RES/.$name.note; : > "$STEP_NOTE"; export STEP_NOTE
  # a fresh bash under `timeout` (which ends the step's whole process group), given this script's variables and functions
  timeout -k 10 "$t" bash -c "$(declare -p "${ARRAYS[@]}"; declare -p "${SCALARS[@]}" 2>/dev/null; declare -f); $(printf '%q ' "$@")" \
    > "$RES/$name.log" 2>&1
  rc=$?; [ $rc = $SKIP ] && rc=skip
  dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  note=$(tr '\n' ' ' < "$STEP_NOTE" | sed 's/ *$//'); rm -f "$STEP_NOTE"
  [ $rc = 124 ] || [ $rc = 137 ] && note="timed out after ${t}s${note:+; $note}"
  [ -z "$note" ] && note=$(grep -E '^RATIO ' "$RES/$name.log" | tr '\n' ';' | sed 's/;$//')
  [ -z "$note" ] && note=$(grep -v '^\s*$' "$RES/$name.log" | tail -n 1 | cut -c1-200)
  record "$name" "$rc" "$dt" "$note"
  echo "   rc $rc in ${dt}s${note:+: $note}"
  [ $rc = 0 ] || [ $rc = skip ] || { echo "   last lines of $name.log:"; tail -n 8 "$RES/$name.log" | sed 's/^/   | /'; }
  pack
}
note() { echo "$*" >> "$STEP_NOTE"; }   # a step's own words for its summary row

SKIP=99   # a step function's exit status for "skipped, and why is in its note"
ARRAYS=(PRETRAIN STEP_ARGS DATA_ARGS TRAIN_BENCH_ARGS COMPILE_ARGS TRAIN_ARGS EVAL_ARGS PRED_ARGS RESUME_ARGS)
SCALARS=(ROOT RES OUT SCRATCH DRY DEV SIZE PATIENTS WORKERS CORES SAMPLE BUNDLE RESUME_OUT SITE NIH REAL_MIN WEIGHTS WEIGHTS_NOTE
         MODE BUDGET DEADLINE T_START PACK SUMMARY SKIP)

s_machine() {
  {
    echo "== mode: $MODE; budget ${BUDGET}s; $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "== host: $(uname -a)"; echo "cores: $CORES"; free -g 2>/dev/null | head -2; df -h "$SCRATCH" 2>/dev/null | tail -1
    echo "== nvidia-smi"; nvidia-smi 2>&1 || echo "(no nvidia-smi)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null
    echo "== python: $PY"
    "$PY" - <<'EOF' 2>&1
import platform, sys
print('python', platform.python_version(), sys.executable)
import torch
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(),
      'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')
EOF
    echo "== repo: $ROOT ($(git -C "$ROOT" log --oneline -1 2>/dev/null || echo 'no git'))"
    echo "== weights: $WEIGHTS_NOTE"; echo "== NIH X-rays: ${NIH:-not found}"
  } > "$RES/machine.txt" 2>&1
  cat "$RES/machine.txt"
  note "$(grep -m1 '^torch ' "$RES/machine.txt")"
}

s_install() {
  "$PY" -c 'import torch; print("torch", torch.__version__, "from", torch.__file__, "cuda available:", torch.cuda.is_available())' \
    || { note "no torch in $PY"; return 1; }
  # the wheels whose modules this python cannot import (the image's own packages are kept)
  local wheels
  wheels=$("$PY" - "$ROOT/.whl" <<'EOF'
import importlib.util, sys, zipfile
from pathlib import Path
for w in sorted(Path(sys.argv[1]).glob('*.whl')):
    tops = {n.split('/')[0] for n in zipfile.ZipFile(w).namelist()}
    mods = {t[:-3] if t.endswith('.py') else t for t in tops if not t.endswith(('.dist-info', '.data', '.pth')) and '-' not in t}
    mods = {m for m in mods if m.isidentifier() and not m.startswith('_')}
    if mods and any(importlib.util.find_spec(m) is None for m in mods): print(w)
EOF
)
  if [ -n "$wheels" ]; then
    echo "installing from .whl (no index): $(echo $wheels | xargs -n1 basename | tr '\n' ' ')"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" $wheels || return 1
    note "installed $(echo $wheels | wc -w) wheel(s) from .whl into $SITE"
  fi
  local need='fastai fastcore fastprogress fasttransform plum simplejpeg pydicom sklearn cv2 safetensors onnx onnxruntime onnxscript'
  local missing
  missing=$("$PY" -c "import importlib.util as u; print(' '.join(m for m in '$need'.split() if u.find_spec(m) is None))")
  if [ -n "$missing" ]; then
    echo "missing: $missing; trying pip install -e . (needs a package index; the GPU machine has none)"
    "$PY" -m pip install -q --retries 0 --timeout 15 -e "$ROOT" || { note "missing $missing: no .whl for them and no index (bench/gpu_wheels.sh makes .whl)"; return 1; }
  fi
  "$PY" -c "
import chexpert_nb, chexpert_nb.train, chexpert_nb.report, chexpert_nb.predict, chexpert_nb.batch, chexpert_nb.sample
from pathlib import Path
f = Path(chexpert_nb.__file__).resolve(); print('chexpert_nb from', f)
assert f.is_relative_to(Path('$ROOT').resolve()), f'chexpert_nb is imported from {f}, not from this tree $ROOT'
" || return 1
  [ -n "$(cat "$STEP_NOTE")" ] || note "nothing to install: every package was there"
  "$PY" - <<'EOF' 2>&1 | tee -a "$RES/machine.txt"
import importlib.metadata as md
print('== packages, after the install step')
for d in ('torch', 'torchvision', 'numpy', 'pandas', 'fastai', 'fastcore', 'fastprogress', 'simplejpeg', 'pydicom', 'onnx',
          'onnxruntime', 'onnxscript', 'opencv-python-headless', 'scikit-learn', 'safetensors', 'matplotlib'):
    try: print(f'{d} {md.version(d)}')
    except md.PackageNotFoundError: print(f'{d} (not installed)')
EOF
}

s_sample() {
  "$PY" - <<EOF
import time, pandas as pd
from pathlib import Path
from chexpert_nb.sample import make_sample
root = Path('$SAMPLE'); t = time.time()
if not (root/'valid.csv').exists(): make_sample(root, patients=$PATIENTS, seed=0)
n = {s: len(pd.read_csv(root/f'{s}.csv')) for s in ('train', 'valid')}
print(f"{root}: {n['train']} train + {n['valid']} valid synthetic JPEGs in {time.time() - t:.0f}s")
EOF
  note "$(tail -n 1 "$RES/sample.log" 2>/dev/null | sed 's/.*: //')"
}

bench() { local script=$1; shift; OUT=$RES "$PY" "$ROOT/bench/$script" "$@"; }

s_train() {
  rm -rf "$BUNDLE"
  cli train train_cli --data "$SAMPLE" --out "$BUNDLE" --epochs 1 "${PRETRAIN[@]}" "${TRAIN_ARGS[@]}" --quiet || return
  mkdir -p "$RES/train_bundle"
  for f in config.json history.csv validation.json MODEL_CARD.md; do [ -f "$BUNDLE/$f" ] && cp -f "$BUNDLE/$f" "$RES/train_bundle/"; done
  ls -la "$BUNDLE"
  note "$("$PY" -c "import pandas as pd; r = pd.read_csv('$BUNDLE/history.csv').iloc[-1]; print(f\"1 epoch: train_loss {r.train_loss:.4f}, valid_loss {r.valid_loss:.4f}, nanmean_auroc {r.nanmean_auroc:.3f}, {r.time}\")" 2>&1 | tail -n 1)"
}

s_evaluate() {
  [ -f "$BUNDLE/config.json" ] || { note "no bundle: the train step failed"; return 1; }
  cli report evaluate_cli --model "$BUNDLE" --csv "$SAMPLE/valid.csv" --no-progress "${EVAL_ARGS[@]}" || return
  mkdir -p "$RES/train_bundle"
  for f in evaluation.json evaluation.csv roc.png reliability.png MODEL_CARD.md validation.json config.json; do
    [ -f "$BUNDLE/$f" ] && cp -f "$BUNDLE/$f" "$RES/train_bundle/"
  done
  note "$("$PY" -c "
import json; m = json.load(open('$BUNDLE/evaluation.json'))['competition_mean']
print(f\"study-level mean AUROC {m['auroc']:.3f} [{m['auroc_low']:.3f}, {m['auroc_high']:.3f}] over {len(m['tasks'])} tasks\")" 2>&1 | tail -n 1)"
}

s_predict() {
  [ -f "$BUNDLE/config.json" ] || { note "no bundle: the train step failed"; return 1; }
  cli predict predict_cli --model "$BUNDLE" --out "$RES/predictions.csv" "${PRED_ARGS[@]}" "$SAMPLE/valid" || return
  note "$(($(wc -l < "$RES/predictions.csv") - 1)) rows in predictions.csv"
}

s_resume() {
  rm -rf "$RESUME_OUT"
  local args=(--data "$SAMPLE" --out "$RESUME_OUT" --epochs 2 "${PRETRAIN[@]}" "${RESUME_ARGS[@]}"
              --no-onnx --no-calibrate --no-ood --quiet)
  # python itself in the background (not a function's subshell), so that the kill reaches the training process
  "$PY" -c "from chexpert_nb.train import train_cli; train_cli()" "${args[@]}" > "$RES/resume_first.log" 2>&1 &
  local pid=$! batch= epoch= i
  for i in $(seq 1 6000); do   # poll for a checkpoint taken inside an epoch (batch > 0), then kill -9 the run
    batch=$(grep -o '"batch": [0-9]*' "$RESUME_OUT/checkpoints/last.json" 2>/dev/null | grep -o '[0-9]*$')
    [ -n "$batch" ] && [ "$batch" -gt 0 ] && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.05
  done
  if ! kill -9 $pid 2>/dev/null; then
    wait $pid; local rc=$?; cat "$RES/resume_first.log"
    note "the first run ended (rc $rc) before a mid-epoch checkpoint: nothing to resume"; return 1
  fi
  wait $pid 2>/dev/null
  epoch=$(grep -o '"epoch": [0-9]*' "$RESUME_OUT/checkpoints/last.json" | grep -o '[0-9]*$')
  batch=$(grep -o '"batch": [0-9]*' "$RESUME_OUT/checkpoints/last.json" | grep -o '[0-9]*$')  # the checkpoint the kill left
  echo "killed the training run (pid $pid, kill -9) after its checkpoint at epoch $epoch, batch $batch:"
  cut -c1-300 "$RESUME_OUT/checkpoints/last.json"; echo
  echo "-- its log:"; tail -n 5 "$RES/resume_first.log"
  if grep -q 'wrote the model bundle' "$RES/resume_first.log"; then note "the first run had finished before the kill"; return 1; fi
  sleep 2  # its DataLoader workers notice that their parent is gone
  echo "== chexpert-train --out $RESUME_OUT --resume"
  cli train train_cli --out "$RESUME_OUT" --resume --quiet 2>&1 | tee "$RES/resume_second.log"
  [ "${PIPESTATUS[0]}" = 0 ] || { note "killed at epoch $epoch, batch $batch; --resume failed"; return 1; }
  "$PY" - "$RESUME_OUT" "$RES/resume_second.log" <<'EOF'
import re, sys, pandas as pd
from pathlib import Path
from chexpert_nb.bundle import is_bundle
out, log = Path(sys.argv[1]), Path(sys.argv[2]).read_text()
h = pd.read_csv(out/'history.csv')
print(h.to_string())
m = re.search(r'resuming .* at stage (\d+), epoch (\d+), batch (\d+)', log)
checks = {'resumed inside an epoch (batch > 0)': bool(m and int(m.group(3)) > 0),
          'a complete bundle': is_bundle(out), 'history.csv has the 2 epochs': len(h) == 2}
for k, v in checks.items(): print(f"{'ok ' if v else 'NOT'} {k}")
sys.exit(0 if all(checks.values()) else 1)
EOF
  local rc=$?
  cp -f "$RESUME_OUT/history.csv" "$RES/resume_history.csv" 2>/dev/null
  note "killed (-9) at epoch $epoch, batch $batch of a 2-epoch run; --resume: $([ $rc = 0 ] && echo 'went on from there, bundle complete, 2 epochs in history' || echo 'FAILED a check (see resume.log)')"
  return $rc
}

s_real_learning() {
  local script=$ROOT/bench/real_learning.py
  if [ ! -f "$script" ]; then echo "bench/real_learning.py is not in this tree: skipped"; note "bench/real_learning.py is not in this tree"; return $SKIP; fi
  if [ -z "$NIH" ]; then echo "no NIH X-rays (shared/data/nih-cxr14-sample)"; note "no shared/data/nih-cxr14-sample"; return $SKIP; fi
  # real_learning.py reads ROOT/../shared/data; the device copies shared/ INTO the checkout: link it there (GPU run only)
  if [ ! -d "$ROOT/../shared/data/nih-cxr14-sample" ] && [ $DRY = 0 ]; then
    ln -sfn "$(dirname "$NIH")" "$ROOT/../shared" && echo "linked $ROOT/../shared -> $(dirname "$NIH") (real_learning.py reads ../shared)"
  fi
  local left secs epochs arms help args
  left=$((DEADLINE - $(date +%s) - 15)); secs=$((REAL_MIN * 60 < left ? REAL_MIN * 60 : left))
  arms=${REAL_ARMS:-ours-densenet121,peer-densenet121}
  # the script has no time budget: epochs from a rough cost on the GPU (~60 s of start, split, image loading and scoring
  # for the two arms, ~10 s per epoch of both arms at 320 px with its single-process loading); REAL_EPOCHS overrides
  if [ $DRY = 1 ]; then epochs=${REAL_EPOCHS:-1}
  else epochs=${REAL_EPOCHS:-$(( (secs - 60) / 10 ))}; [ "$epochs" -lt 1 ] && epochs=1; [ "$epochs" -gt 30 ] && epochs=30; fi
  help=$("$PY" "$script" --help 2>&1)
  args=(--arms "$arms" --size "$SIZE" --epochs "$epochs" --out "$RES/real_learning/real_learning.json")
  grep -q -- '--threads' <<< "$help" && args+=(--threads "$([ $DRY = 1 ] && echo 1 || echo "$CORES")")
  grep -q -- '--n-boot' <<< "$help" && [ $DRY = 1 ] && args+=(--n-boot 20)
  mkdir -p "$RES/real_learning" "$SCRATCH/tmp"
  touch "$SCRATCH/real_learning.start"
  echo "python bench/real_learning.py ${args[*]}   (budget ${secs}s; NIH X-rays in $NIH)"
  TMPDIR=$SCRATCH/tmp OUT=$RES/real_learning timeout -k 5 "$secs" "$PY" "$script" "${args[@]}"
  local rc=$?
  # what its runs wrote (bundles in temporary folders): the small files, one folder deep, named by run
  find "$SCRATCH/tmp" "$ROOT/models" -newer "$SCRATCH/real_learning.start" -type f \( -name evaluation.json -o -name MODEL_CARD.md -o -name validation.json \
       -o -name '*.png' -o -name history.csv -o -name config.json -o -name evaluation.csv \) 2>/dev/null | while read -r f; do
    cp -f "$f" "$RES/real_learning/$(basename "$(dirname "$f")")-$(basename "$f")"
  done
  ls "$RES/real_learning"
  [ $rc = 124 ] && note "stopped at its ${secs}s budget ($epochs epochs asked; the JSON keeps the arms that finished)"
  grep -m2 -E 'MEAN|RATIO auroc' "$RES/real_learning.log" 2>/dev/null | tr -s ' ' | while read -r l; do note "$l"; done
  note "$arms, $SIZE px, $epochs epochs"
  if [ $rc = 124 ]; then [ -s "$RES/real_learning/real_learning.json" ] && return 0; return 1; fi  # its note says why
  return $rc
}

summary() {
  local total=$(( $(date +%s) - T_START ))
  {
    echo "gpu_all.sh: $MODE, $(date -u '+%Y-%m-%d %H:%M UTC'), ${total}s of the ${BUDGET}s budget"
    grep -m1 -E '^NVIDIA|^torch ' "$RES/machine.txt" 2>/dev/null
    echo "weights: $WEIGHTS_NOTE"
    column -t -s $'\t' "$SUMMARY" 2>/dev/null || cat "$SUMMARY"
    local failed
    failed=$(awk -F'\t' 'NR > 1 && $2 != "0" && $2 != "skip" {printf "%s ", $1}' "$SUMMARY")
    echo "failed: ${failed:-none}"
    echo "results: $([ "$PACK" = 1 ] && echo "$OUT/results.tar.gz (and summary.tsv, summary.txt, machine.txt in $OUT)" || echo "$RES")"
  } > "$RES/summary.txt"
  echo; cat "$RES/summary.txt"
  pack
}

# ---------------------------------------------------------------- the run
echo "gpu_all.sh: $MODE; results in $RES; budget ${BUDGET}s; python $PY"
step machine       30  5 s_machine
step install      120 10 s_install
step sample       120 10 s_sample
step gpu_step     $([ $DRY = 1 ] && echo 180 || echo 75)  20 bench gpu_step.py "${STEP_ARGS[@]}"
step gpu_data     $([ $DRY = 1 ] && echo 180 || echo 100) 20 bench gpu_data.py "${DATA_ARGS[@]}"
step gpu_train    $([ $DRY = 1 ] && echo 180 || echo 100) 20 bench gpu_train.py "${TRAIN_BENCH_ARGS[@]}"
step train        $([ $DRY = 1 ] && echo 300 || echo 200) 30 s_train
step evaluate     90 10 s_evaluate
step predict      90 10 s_predict
step resume       $([ $DRY = 1 ] && echo 300 || echo 120) 30 s_resume
step real_learning $((REAL_MIN * 60 + 30)) 60 s_real_learning
step gpu_compile  $([ $DRY = 1 ] && echo 150 || echo 240) 60 bench gpu_step.py "${COMPILE_ARGS[@]}"
summary
[ "${KEEP:-0}" = 1 ] && echo "kept the bundles and checkpoints in $SCRATCH (KEEP=1)" || rm -rf "$SCRATCH"  # results: in $OUT
exit 0
