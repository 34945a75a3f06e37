"""Serving engines: ONNX Runtime vs torch on the CPU, for the users who only predict.

The model is DenseNet-121 at the bundle default of 320 px, 1 channel, random weights (time and memory do not depend
on them), written once with `tiny_bundle` + `export_onnx` under data/bench/. Both engines run on 1 thread: on a
shared machine, threads that wait for each other make timings meaningless; one thread measures the work itself.
Three measures, each interleaved (A B, B A, ...: the order rotates) so that load from other processes hits both:
  (a) cold start: a fresh Python process from nothing to the first image's 14 probabilities (file -> grayscale ->
      batch -> probabilities), its wall time and its peak memory (VmHWM in /proc/self/status: the resource module's
      ru_maxrss keeps the peak of the parent that forked the process, this benchmark's own torch). The torch process uses
      `chexpert_nb.engines.TorchEngine`. The ONNX process uses `chexpert_nb.engines.OnnxEngine` when
      `chexpert_nb.engines` and `chexpert_nb.images` import without torch; if they ever import it at module level, the
      ONNX process reads config.json with `json` and uses only numpy, PIL and onnxruntime (what OnnxEngine.probs does),
      and says so.
      Targets: ONNX / torch <= 0.2 in time and <= 0.3 in memory (medians).
  (b) single-image latency: `OnnxEngine.probs` on a (1, 1, 320, 320) uint8 batch vs torch's raw forward on the
      already prepared float tensor (`model(x)` under inference_mode: the floor of the torch engine).
      Target: ONNX / torch <= 0.8 (median of the ratios paired within a round).
  (c) folder throughput: 48 JPEGs (the real NIH radiographs in ../shared when present, else the synthetic sample),
      loaded with `load_image`, batched by 16 with `image_batch`, through each engine's `probs`. Reported only.
Last lines: `RATIO <name>: <value> (target <= t) PASS|FAIL`; exit status 1 when a target is missed.
Usage: python bench/bench_onnx.py [--cold-reps 5] [--reps 21]
"""
from __future__ import annotations
import argparse, json, os, statistics, subprocess, sys, textwrap, time, warnings
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

ROOT = common.ROOT
NIH = ROOT.parent/'shared'/'data'/'nih-cxr14-sample'
TARGET_COLD_TIME, TARGET_COLD_MEMORY, TARGET_LATENCY = 0.2, 0.3, 0.8

COLD_TORCH = '''
from chexpert_nb.engines import TorchEngine
from chexpert_nb.images import image_batch, load_image
engine = TorchEngine(BUNDLE, threads=1)
probs = engine.probs(image_batch([load_image(IMAGE)], engine.config.size))
'''
COLD_ONNX_ENGINE = '''
sys.modules['torch'] = None  # proof: importing torch would fail
from chexpert_nb.engines import OnnxEngine
from chexpert_nb.images import image_batch, load_image
engine = OnnxEngine(BUNDLE, threads=1)
probs = engine.probs(image_batch([load_image(IMAGE)], engine.config.size))
'''
COLD_ONNX_MINIMAL = '''
sys.modules['torch'] = None  # proof: importing torch would fail
import numpy as np, onnxruntime as ort
from PIL import Image
config = json.load(open(f'{BUNDLE}/config.json'))
options = ort.SessionOptions(); options.intra_op_num_threads = options.inter_op_num_threads = 1
session = ort.InferenceSession(f"{BUNDLE}/{config['onnx']['file']}", options, providers=['CPUExecutionProvider'])
size = config['size']
u8 = np.asarray(Image.open(IMAGE).convert('L').resize((size, size), Image.BILINEAR))[None, None]
probs = session.run(['probs'], {'image': u8})[0]
'''


def child(body: str, bundle: Path, image: Path) -> str:
    "A script for `python -c`: `body` between the imports it needs and a JSON line with probabilities and peak memory."
    return (f"import json, sys\nBUNDLE, IMAGE = {str(bundle)!r}, {str(image)!r}\n" + textwrap.dedent(body) + textwrap.dedent('''
        # VmHWM, this process image's peak resident memory: ru_maxrss would carry over the forking parent's peak
        hwm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:'))
        print(json.dumps({'probs': [float(p) for p in probs[0]], 'maxrss_mb': hwm / 1024,
                          'torch': sys.modules.get('torch') is not None}))
        '''))


def run_child(script: str) -> tuple[float, dict]:
    "(wall seconds, the child's JSON) of a fresh interpreter running `script`, with 1 OpenMP thread."
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, env=env, cwd=ROOT)
    dt = time.perf_counter() - t0
    if out.returncode: sys.exit(f"bench_onnx: a cold-start child failed:\n{out.stderr[-2000:]}")
    return dt, json.loads(out.stdout.strip().splitlines()[-1])


def engines_without_torch() -> bool:
    "Whether `chexpert_nb.engines` and `chexpert_nb.images` import in a process where torch cannot be imported."
    probe = "import sys; sys.modules['torch'] = None; import chexpert_nb.engines, chexpert_nb.images"
    return subprocess.run([sys.executable, '-c', probe], capture_output=True, cwd=ROOT).returncode == 0



def bench_bundle() -> Path:
    "The 320 px DenseNet-121 bundle with model.onnx, written once under data/bench/."
    from chexpert_nb.bundle import read_config
    from chexpert_nb.onnx import export_onnx
    from chexpert_nb.testing import tiny_bundle
    d = common.BENCH_DATA/'onnx-densenet121-320'
    if not ((d/'model.onnx').exists() and read_config(d).onnx):
        tiny_bundle(d, size=320)
        export_onnx(d)
    return d


def images(n: int = 48) -> tuple[list[Path], str]:
    "`n` JPEGs and what they are."
    if (NIH/'images').is_dir():
        files = sorted((NIH/'images').glob('*.jpg'))[:n]
        if len(files) == n: return files, f'{n} real NIH radiographs, 320x320 JPEG'
    files = sorted(common.bench_sample(patients=40).rglob('*.jpg'))[:n]
    return files, f'{len(files)} synthetic CheXpert-size JPEGs (NIH sample absent)'


def cold_start(bundle: Path, image: Path, reps: int) -> tuple[float, float]:
    "(time ratio, memory ratio) of ONNX over torch, fresh process to the first probabilities."
    engine_ok = engines_without_torch()
    onnx_body = COLD_ONNX_ENGINE if engine_ok else COLD_ONNX_MINIMAL
    print("(a) cold start, fresh process -> first image's probabilities; ONNX process: " +
          ("chexpert_nb.engines.OnnxEngine (engines and images import without torch)" if engine_ok else
           "json + numpy + PIL + onnxruntime only (chexpert_nb.engines or images imports torch at module level)"))
    scripts = {'torch': child(COLD_TORCH, bundle, image), 'onnx': child(onnx_body, bundle, image)}
    results = {k: [] for k in scripts}
    for r in range(reps + 1):  # round 0 warms the page cache, untimed
        for k in (list(scripts) if r % 2 else list(scripts)[::-1]):
            res = run_child(scripts[k])
            if r: results[k].append(res)
    for k, v in results.items():
        print(f"   {k:6s} time {common.spread([t for t, _ in v])}, peak memory median "
              f"{statistics.median(j['maxrss_mb'] for _, j in v):.0f} MB, torch imported: {v[0][1]['torch']}")
    assert not any(j['torch'] for _, j in results['onnx']), "the ONNX process imported torch"
    diff = max(abs(a - b) for a, b in zip(results['onnx'][0][1]['probs'], results['torch'][0][1]['probs']))
    print(f"   max |ONNX - torch| of the 14 probabilities: {diff:.1e}")
    med = lambda k, f: statistics.median(f(t, j) for t, j in results[k])
    return (med('onnx', lambda t, j: t) / med('torch', lambda t, j: t),
            med('onnx', lambda t, j: j['maxrss_mb']) / med('torch', lambda t, j: j['maxrss_mb']))


def main(cold_reps: int = 5, reps: int = 21) -> int:
    warnings.filterwarnings('ignore')
    sys.stdout.reconfigure(line_buffering=True)
    import torch, onnxruntime
    torch.set_num_threads(1)
    from chexpert_nb.engines import OnnxEngine, TorchEngine
    from chexpert_nb.images import image_batch, load_image
    bundle = bench_bundle()
    files, what = images()
    print(f"== serving engines: ONNX Runtime vs torch, CPU, 1 thread\n   "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {common.machine()}, torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}\n   model: densenet121 at 320 px, n_in 1; images: {what}")
    cold_time, cold_memory = cold_start(bundle, files[0], cold_reps)

    onnx_engine, torch_engine = OnnxEngine(bundle, threads=1), TorchEngine(bundle, threads=1)
    batch = image_batch([load_image(files[0])], 320)
    x, model = torch_engine.input(batch), torch_engine.model
    def raw():
        with torch.inference_mode(): model(x)
    times = common.rotated({'torch raw forward on a prepared tensor': raw, 'OnnxEngine.probs(uint8 batch)': lambda: onnx_engine.probs(batch)}, reps)
    print("(b) single-image latency, 320 px, 1 thread")
    for k, v in times.items(): print(f"   {k:40s} median {statistics.median(v) * 1e3:7.1f} ms (min {min(v) * 1e3:.1f}, n={len(v)})")
    latency = statistics.median(o / t for t, o in zip(*times.values()))

    def folder(engine):
        for i in range(0, len(files), 16):
            engine.probs(image_batch([load_image(f) for f in files[i:i + 16]], 320))
    times = common.rotated({'torch': lambda: folder(torch_engine), 'onnx': lambda: folder(onnx_engine)}, 3)
    print(f"(c) folder throughput, {len(files)} JPEGs, batches of 16 (load_image + image_batch + probs)")
    for k, v in times.items(): print(f"   {k:6s} {len(files) / statistics.median(v):6.1f} images/s ({common.spread(v)})")
    print(f"   onnx / torch time: {statistics.median(times['onnx']) / statistics.median(times['torch']):.3f} (reported, no target)")

    codes = [common.verdict('onnx_over_torch_cold_start_time', cold_time, TARGET_COLD_TIME),
             common.verdict('onnx_over_torch_cold_start_memory', cold_memory, TARGET_COLD_MEMORY),
             common.verdict('onnx_over_torch_latency_1thread', latency, TARGET_LATENCY)]
    return max(codes)


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--cold-reps', type=int, default=5)
    ap.add_argument('--reps', type=int, default=21)
    sys.exit(main(**vars(ap.parse_args())))
