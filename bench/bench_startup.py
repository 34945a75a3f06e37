"""Predictor start-up: seconds and peak memory from a fresh process to the first image's 14 probabilities.

- candidate: `Predictor.from_bundle(model).predict(image)` as `chexpert-predict` and the app do it now: the bundle
  module rebuilds the model with torch and torchvision only.
- baseline: the same, in a process that first imports `chexpert_nb.train` (all of fastai), which is what loading a
  bundle cost before the bundle module existed (`infer.load_bundle` imported `chexpert_nb.train`).

Each is a fresh `python -c` process, alternated (A B A B ...), one torch thread; peak memory is the child's own
VmHWM (`ru_maxrss` would carry over the parent's peak, which has imported torch). The model is a 320 px DenseNet-121
bundle with random weights (`testing.tiny_bundle`), the image a
real NIH X-ray from ../shared when present, else a synthetic one. Target: the candidate takes <= 0.8x the
baseline's time (the import of fastai is what it saves; torch itself is most of what is left).
"""
from __future__ import annotations
import os, subprocess, sys, tempfile
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, BENCH_DATA, header, med, spread, verdict

CHILD = """
import sys, time
t0 = time.perf_counter()
{pre}
from chexpert_nb.predict import Predictor
p = Predictor.from_bundle({model!r}, device='cpu', engine='torch')
probs = p.predict([{image!r}])
assert probs.shape == (1, 14)
peak = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))  # this process's own peak
print(time.perf_counter() - t0, peak / 1024)
"""


def image_path() -> str:
    nih = ROOT.parent/'shared'/'data'/'nih-cxr14-sample'/'images'
    found = sorted(nih.glob('*.jpg'))[:1] if nih.is_dir() else []
    if found: return str(found[0])
    from common import bench_sample
    root = bench_sample(10)
    return str(next((root/'train').rglob('*.jpg')))


def run(pre: str, model: str, image: str) -> tuple[float, float]:
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}
    out = subprocess.run([sys.executable, '-c', CHILD.format(pre=pre, model=model, image=image)], env=env,
                         capture_output=True, text=True, check=True, cwd=tempfile.gettempdir())
    seconds, peak_mb = map(float, out.stdout.split())
    return seconds, peak_mb


def main(reps: int = 4) -> int:
    from chexpert_nb.testing import tiny_bundle
    header('Predictor start-up: fresh process -> first image probabilities (320 px DenseNet-121, 1 thread)')
    model = BENCH_DATA/'startup-model'
    if not (model/'config.json').exists(): tiny_bundle(model, size=320)
    image = image_path()
    variants = {'bundle (torch only)': '', 'with fastai (before)': 'import chexpert_nb.train'}
    results = {k: [] for k in variants}
    run('', str(model), image)  # warm the disk cache
    for _ in range(reps):
        for k, pre in variants.items(): results[k].append(run(pre, str(model), image))
    for k, rs in results.items():
        print(f"   {k:<22} {spread([s for s, _ in rs])}, peak memory {med([m for _, m in rs]):.0f} MB")
    t_new, t_old = (med([s for s, _ in results[k]]) for k in variants)
    m_new, m_old = (med([m for _, m in results[k]]) for k in variants)
    print(f"   memory ratio {m_new / m_old:.2f} ({m_new:.0f} vs {m_old:.0f} MB)")
    return verdict('predictor_startup_over_fastai_import', t_new / t_old, 0.8)


if __name__ == '__main__': sys.exit(main())
