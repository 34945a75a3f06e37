"""Predictor: single-image latency, file bytes to 14 probabilities, on the CPU.

Three ways to get the 14 probabilities of one image, timed in the same process, in rounds (A B C, then B C A, ...:
the order rotates so that no way always runs first), so that load from other processes hits all alike. The verdict
uses the median over rounds of the *paired* ratio (ours / raw within one round), which cancels most of the load
that a shared machine puts on both; medians of each column are printed too:
  raw      `model(x)` on an already prepared (1, n_in, size, size) tensor, under torch.inference_mode: the floor;
  ours     `Predictor.predict([file_bytes])`: decode, checks, grayscale, resize, normalise, forward, to_probs;
  fastai   `learn.predict(item)` of a Learner over the same model with the training DataLoaders' validation path.
The model is DenseNet-121 at the bundle default of 320 px, 1 channel (weights random: latency does not depend on
them), loaded through `Predictor.from_bundle` from a bundle written by `save_bundle`. The image is a real 320x320
NIH radiograph JPEG from ../shared/data/nih-cxr14-sample when present (else a synthetic CheXpert-size JPEG);
a 1024x1024 original PNG is timed too and reported.
Torch runs on `--threads` threads (default 1): on a shared machine, two OpenMP threads that wait for each other
make one forward 10-20x slower and the timings meaningless; one thread measures the work itself. `--threads 0`
keeps torch's default.
Targets: ours <= 1.15 x raw, and ours < fastai. Last line: `RATIO predictor_over_raw_forward: ... PASS|FAIL`;
exit status 1 when a target is missed.
Usage: python bench/bench_predict.py [--reps 21] [--size 320] [--threads 1]
"""
from __future__ import annotations
import argparse, statistics, sys, tempfile, time, warnings
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

ROOT = Path(__file__).resolve().parents[1]
NIH = ROOT.parent/'shared'/'data'/'nih-cxr14-sample'
TARGET_OVER_RAW = 1.15


def machine() -> str:
    "The machine line of bench/common.py, plus torch's thread count (this benchmark pins it)."
    import torch
    return f"{common.machine()}, torch {torch.__version__} with {torch.get_num_threads()} threads"



def frames(tmp: Path):
    "`(df, label)`: a frame with `file` and the 14 label columns holding the benchmark image(s)."
    from chexpert_nb.data import read_chexpert_csv
    from chexpert_nb.sample import make_sample
    if (NIH/'labels.csv').exists():
        return read_chexpert_csv(NIH/'labels.csv', root=NIH, layout='flat').head(8), 'real NIH radiograph, 320x320 JPEG'
    s = make_sample(tmp/'sample', patients=4, seed=0)
    return read_chexpert_csv(s/'valid.csv', root=s).head(8), 'synthetic CheXpert-size JPEG (NIH sample absent)'


def main(reps: int = 21, size: int = 320, threads: int = 1) -> int:
    warnings.filterwarnings('ignore')
    sys.stdout.reconfigure(line_buffering=True)
    import numpy as np, torch
    if threads: torch.set_num_threads(threads)
    from chexpert_nb.predict import Predictor
    from chexpert_nb.images import load_image
    from chexpert_nb.model import preprocess
    from chexpert_nb.testing import tiny_bundle
    from chexpert_nb.learner import chexpert_dls, chexpert_learner
    print(f"== predictor latency: file bytes -> 14 probabilities, batch of one, CPU\n   "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine()}")
    tmp = Path(tempfile.mkdtemp())
    pred = Predictor.from_bundle(tiny_bundle(tmp/'bench-densenet121', size=size), device='cpu')
    config = pred.config
    df, what = frames(tmp)
    jpeg = Path(df.file[0]).read_bytes()
    x = preprocess(load_image(jpeg), pred.config)[None]
    model = pred.model

    def raw():
        with torch.inference_mode(): model(x)

    dls = chexpert_dls(df, df, size=size, bs=1, policy=config.policy, n_in=config.n_in, augment=False,
                       num_workers=0, device='cpu')
    learn = chexpert_learner(dls, config)
    learn.model.load_state_dict(model.state_dict())
    learn.model.eval()
    ours_p = pred.predict([jpeg])[0]
    def fastai_predict():
        with learn.no_bar(): return learn.predict(jpeg)
    fastai_p = fastai_predict()[2].numpy()
    err = float(np.abs(ours_p - fastai_p).max())
    print(f"   image: {what}, {len(jpeg) / 1e3:.0f} kB; model: {config.arch} at {size} px, n_in {config.n_in}")
    print(f"   ours vs learn.predict on this image: max |difference| of the 14 probabilities {err:.1e}")
    img = load_image(jpeg)
    parts = common.rotated({'decode': lambda: load_image(jpeg), 'preprocess': lambda: preprocess(img, pred.config)}, 50, warmup=2)
    print("   the predictor's own work, timed alone: decode + checks %.2f ms, preprocess %.2f ms"
          % tuple(statistics.median(v) * 1e3 for v in parts.values()))
    fns = {'raw forward on a prepared tensor': raw,
           'Predictor.predict(bytes)': lambda: pred.predict([jpeg]),
           'learn.predict (fastai)': fastai_predict}
    png = sorted((NIH/'originals').glob('*.png'))[0].read_bytes() if (NIH/'originals').is_dir() else None
    if png: fns['Predictor.predict(1024 px PNG bytes)'] = lambda: pred.predict([png])
    with torch.inference_mode(False):
        times = common.rotated(fns, reps, warmup=2)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"   {k:40s} median {med[k] * 1e3:7.1f} ms (min {min(v) * 1e3:.1f}, max {max(v) * 1e3:.1f}, n={len(v)})")
    raw_k, ours_k, fastai_k = list(fns)[:3]
    paired = lambda a, b: statistics.median(x / y for x, y in zip(times[a], times[b]))
    print(f"   ratio of the medians: ours / raw {med[ours_k] / med[raw_k]:.3f}, ours / fastai {med[ours_k] / med[fastai_k]:.3f}; "
          f"of the minima: ours / raw {min(times[ours_k]) / min(times[raw_k]):.3f}")
    if png: print(f"   the 1024 px PNG original: {paired(list(fns)[3], raw_k):.3f} x raw (paired)")
    over_fastai = paired(ours_k, fastai_k)
    ok_fastai = over_fastai < 1
    print(f"RATIO predictor_over_learn_predict: {over_fastai:.3f} (paired; target < 1) {'PASS' if ok_fastai else 'FAIL'}")
    ratio = paired(ours_k, raw_k)
    ok = ratio <= TARGET_OVER_RAW
    print(f"RATIO predictor_over_raw_forward: {ratio:.3f} (paired; target <= {TARGET_OVER_RAW}) {'PASS' if ok else 'FAIL'}")
    return 0 if ok and ok_fastai else 1


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--reps', type=int, default=21)
    ap.add_argument('--size', type=int, default=320)
    ap.add_argument('--threads', type=int, default=1, help='torch threads; 0: torch default')
    sys.exit(main(**vars(ap.parse_args())))
