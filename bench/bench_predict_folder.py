"""Batch inference: `chexpert-predict` over a folder of JPEGs vs a plain batched loop, images/s on the CPU.

- ours: `predict_to_csv(predictor, [folder], out)`, the function behind `chexpert-predict` (find the images, load and
  check each, preprocess, batches of `--bs`, forward, probabilities, per-image and per-study rows in a CSV);
- plain (baseline): for each batch of the same files, PIL decode -> L -> resize -> normalise -> stack -> forward ->
  sigmoid, with the same model object, under `torch.inference_mode`.
Model: DenseNet-121 (random weights: speed does not depend on them) from a bundle written by `save_bundle` and loaded
by `Predictor.from_bundle`, at `--size` (default 128 so that it runs in a minute on a 2-core CPU; the bundle
default is 320), 1 torch thread (see bench_predict.py). Also times the `chexpert-predict` command once, start-up
included, with OMP_NUM_THREADS set to the same thread count (with torch's default 2 threads on a 2-core machine
shared with other jobs, the command took 59 s instead of 30 s here: OpenMP threads waiting for each other).
Target: ours <= 1.15 x the plain loop's time (median over reps of the ratio within a rep). Last line: `RATIO predict_folder_over_plain: ...`.
Usage: python bench/bench_predict_folder.py [--size 128] [--bs 16] [--images 48] [--reps 3]
"""
import argparse, os, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
from common import header, interleaved, med, verdict, run_quiet, bench_sample, ROOT

TARGET = 1.15


def main(size=128, bs=16, images=48, reps=3, threads=1) -> int:
    run_quiet()
    import shutil, numpy as np, torch
    if threads: torch.set_num_threads(threads)
    from PIL import Image
    from chexpert_nb.data import read_chexpert_csv
    from chexpert_nb.model import normalize_stats
    from chexpert_nb.testing import tiny_bundle
    from chexpert_nb.predict import Predictor
    from chexpert_nb.batch import predict_to_csv
    header(f'Batch inference over a folder: DenseNet-121 at {size} px, batches of {bs}, CPU, '
           f'torch threads {torch.get_num_threads()}')
    tmp = Path(tempfile.mkdtemp())
    root = bench_sample(100)
    files = read_chexpert_csv(root/'train.csv', root=root)['file'].tolist()[:images]
    folder = tmp/'study'
    for i, f in enumerate(files):  # one folder, as a user would point the command at
        (folder/f"p{i // 3:03d}").mkdir(parents=True, exist_ok=True); shutil.copy(f, folder/f"p{i // 3:03d}"/f"view{i % 3}.jpg")
    files = sorted(str(p) for p in folder.rglob('*.jpg'))
    stats = normalize_stats(1)
    bundle = tiny_bundle(tmp/'model', size=size)
    pred = Predictor.from_bundle(bundle, 'cpu')
    model = pred.model.eval()
    mean, std = stats['mean'][0], stats['std'][0]
    print(f"   {len(files)} JPEGs of {Image.open(files[0]).size} px in {folder}")

    def ours():
        counts = predict_to_csv(pred, [str(folder)], tmp/'out.csv', batch_size=bs, show_progress=False)
        assert counts['images'] == len(files) and counts['failed'] == 0, counts

    def plain():
        out = []
        for i in range(0, len(files), bs):
            x = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert('L').resize((size, size), Image.BILINEAR),
                                                         dtype=np.float32)) for f in files[i:i + bs]])
            x = ((x / 255 - mean) / std)[:, None]
            with torch.inference_mode(): out.append(torch.sigmoid(model(x)))
        return torch.cat(out)

    times = interleaved({'chexpert-predict (predict_to_csv)': ours, 'plain batched loop (baseline)': plain}, reps=reps)
    ips = {k: len(files) / med(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"   {k:36s} {ips[k]:6.1f} img/s  ({', '.join(f'{t:.2f}' for t in v)} s per {len(files)} images)")
    t0 = time.perf_counter()
    r = subprocess.run([str(Path(sys.executable).parent/'chexpert-predict'), str(folder), '--model', str(bundle),
                        '--out', str(tmp/'cli.csv'), '--batch-size', str(bs), '--device', 'cpu'],
                       capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, **({'OMP_NUM_THREADS': str(threads)} if threads else {})})
    cli = time.perf_counter() - t0
    print(f"   the chexpert-predict command, start-up included (OMP_NUM_THREADS={threads or 'default'}): {cli:.1f} s "
          f"for {len(files)} images (exit {r.returncode})")
    paired = med([o / p for o, p in zip(times['chexpert-predict (predict_to_csv)'], times['plain batched loop (baseline)'])])
    print(f"   median over reps of ours / plain in the same rep: {paired:.3f}")
    return verdict('predict_folder_over_plain', paired, TARGET)


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--size', type=int, default=128); ap.add_argument('--bs', type=int, default=16)
    ap.add_argument('--images', type=int, default=48); ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--threads', type=int, default=1)
    a = ap.parse_args()
    sys.exit(main(a.size, a.bs, a.images, a.reps, a.threads))
