"""Data path: images/s through the project's training DataLoaders vs a plain decode + resize loop.

Files: a synthetic CheXpert-layout sample (grayscale JPEGs of 320 x 320..400 px, like CheXpert-v1.0-small).
- floor (baseline): for each file, `Image.open(f).convert('L').resize((size, size), Image.BILINEAR)`; nothing else.
- pipeline: `chexpert_nb.train.chexpert_dls(...).train` at the same size: decode (libjpeg-turbo into an array),
  squish with the training augmentations (rotation, zoom: one warp; brightness, contrast: one lookup table), collate
  uint8 batches, then on the DataLoaders' device (the CPU here) scale and normalise to the model's float input.
- pipeline, no augmentation: the same with `augment=False` (the squish alone).
- pipeline on the cache: the same DataLoaders over `chexpert-cache` output at the same size (`chexpert_nb.fastdata`).
- before: the DataLoaders `chexpert_dls` built before the fast path, rebuilt here from fastai's parts (`ImageBlock`,
  a squish `Resize`, `aug_transforms` and `Normalize` as batch transforms on the device), for the before/after.
- peer: torchxrayvision's `CheX_Dataset` (skimage decode, center crop, resize) in a torch DataLoader.
- full resolution (information, where the levers pay): 2320 x 2828 JPEGs read at the training size in full, with
  reduced-size JPEG decoding (`images.read_gray`), and from a resized cache.
All in one process, one worker (num_workers=0), alternated; `x floor` is the median over reps of each rep's time
over the floor's time in the same rep. Target: pipeline time <= 1.25 x floor time.
Last line: `RATIO data_pipeline_over_floor: pipeline s/img / floor s/img (target <= 1.25)`.
Usage: python bench/bench_data.py [--size 320] [--bs 32] [--reps 5] [--patients 100] [--device cpu]
"""
import argparse, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
from common import header, interleaved, med, verdict, run_quiet, bench_sample, BENCH_DATA, before_dls

TARGET = 1.25


def main(size=320, bs=32, reps=5, patients=100, device='cpu', workers=0, threads=1, full_res=8) -> int:
    run_quiet()
    import numpy as np, torch
    if threads: torch.set_num_threads(threads)  # the floor uses one core; 2 threads stall when others share the cores
    from PIL import Image
    from chexpert_nb.data import read_chexpert_csv
    from chexpert_nb.fastdata import cache_dataset
    header(f'Data path at {size} px, batch {bs}, {workers} worker(s), batch transforms on {device}; '
           f'torch threads {torch.get_num_threads()}')
    root = bench_sample(patients)
    train = read_chexpert_csv(root/'train.csv', root=root); valid = read_chexpert_csv(root/'valid.csv', root=root)
    cache = cache_dataset(root, BENCH_DATA/f'cache-{patients}-{size}', size=size, workers=0, progress=False)
    ctrain = read_chexpert_csv(cache/'train.csv', root=cache); cvalid = read_chexpert_csv(cache/'valid.csv', root=cache)
    files = train['file'].tolist()
    print(f"   {len(files)} training JPEGs, {np.mean([Path(f).stat().st_size for f in files]) / 1024:.0f} kB on "
          f"average, e.g. {Image.open(files[0]).size}; cache at {size} px in {cache}")

    def floor():
        for f in files: Image.open(f).convert('L').resize((size, size), Image.BILINEAR)
        return len(files)

    runs = {'floor: PIL decode + resize (baseline)': floor}
    try:
        from chexpert_nb.learner import chexpert_dls
    except ImportError as e:
        chexpert_dls = None; print(f"   chexpert_nb.train.chexpert_dls not available ({e}): pipeline not measured")
    if chexpert_dls is not None:
        def dl_run(dl):
            def run():
                n = 0
                for x, y in dl: n += len(x)
                return n
            return run
        kw = dict(size=size, bs=bs, num_workers=workers, device=torch.device(device))
        runs['pipeline: chexpert_dls train (augment)'] = dl_run(chexpert_dls(train, valid, **kw).train)
        runs['pipeline, no augmentation'] = dl_run(chexpert_dls(train, valid, augment=False, **kw).train)
        runs['pipeline on the cache (augment)'] = dl_run(chexpert_dls(ctrain, cvalid, **kw).train)
        runs['before: fastai ImageBlock + aug_transforms'] = dl_run(before_dls(train, valid, **kw).train)
    try:
        import torchvision, torchxrayvision as xrv
        ds = xrv.datasets.CheX_Dataset(imgpath=str(root), csvpath=str(root/'train.csv'), views=['PA', 'AP', 'L'],
                                       unique_patients=False, transform=torchvision.transforms.Compose(
                                           [xrv.datasets.XRayCenterCrop(), xrv.datasets.XRayResizer(size, engine='cv2')
                                            if _has_cv2() else xrv.datasets.XRayResizer(size)]))
        xdl = torch.utils.data.DataLoader(ds, batch_size=bs, num_workers=workers, drop_last=True)
        def peer():
            n = 0
            for b in xdl: n += len(b['img'])
            return n
        runs['peer: torchxrayvision CheX_Dataset'] = peer
    except Exception as e: print(f"   torchxrayvision peer not measured: {type(e).__name__}: {e}")

    counts = {k: f() for k, f in runs.items()}  # also the warm-up
    times = interleaved(runs, reps=reps, warmup=0)
    per_img = {k: med(v) / counts[k] for k, v in times.items()}
    FLOOR = 'floor: PIL decode + resize (baseline)'
    # the ratio of each rep to the floor of the same rep (they ran seconds apart), then the median over reps
    paired = {k: med([(t / counts[k]) / (f / counts[FLOOR]) for t, f in zip(v, times[FLOOR])]) for k, v in times.items()}
    for k in runs:
        print(f"   {k:40s} {1 / per_img[k]:6.0f} img/s  {per_img[k] * 1000:6.2f} ms/img  {paired[k]:5.2f}x floor"
              f"  ({counts[k]} images, {reps} reps: {', '.join(f'{t:.2f}' for t in times[k])} s)")
    if full_res: _full_res(size, full_res, reps)
    if chexpert_dls is None:
        print("RATIO data_pipeline_over_floor: not measured (no chexpert_nb.train yet) FAIL"); return 1
    return verdict('data_pipeline_over_floor', paired['pipeline: chexpert_dls train (augment)'], TARGET)


def _full_res(size, n, reps):
    "Where the levers pay: full-resolution CheXpert-v1.0-size JPEGs (2320 x 2828) read at the training size."
    import numpy as np
    from PIL import Image, ImageFilter
    from chexpert_nb.sample import draw_synthetic
    from chexpert_nb.images import read_gray
    small_gray = lambda f, size: Image.fromarray(read_gray(f, size))  # reduced-size JPEG decoding, as a mode L image
    d = BENCH_DATA/f'full-res-{n}'
    files = [d/f'img{i}.jpg' for i in range(n)]
    if not all(f.exists() for f in files):
        d.mkdir(parents=True, exist_ok=True); rng = np.random.default_rng(0)
        for f in files:  # blurred: per-pixel noise at this size would make files 5x larger than real radiographs
            Image.fromarray(draw_synthetic({}, rng, w=2320, h=2828)).filter(ImageFilter.GaussianBlur(2)).save(f, quality=90)
    small = [d/'cache'/f.name for f in files]
    (d/'cache').mkdir(exist_ok=True)
    for f, c in zip(files, small):
        if not c.exists(): small_gray(f, size).resize((size, size), Image.BILINEAR).save(c, quality=95)
    runs = {'full decode + resize (floor)': lambda: [Image.open(f).convert('L').resize((size, size), Image.BILINEAR) for f in files],
            'read_gray (1/2..1/8 JPEG decoding) + resize': lambda: [small_gray(f, size).resize((size, size), Image.BILINEAR) for f in files],
            f'from the {size} px cache (decode + no-op resize)':
                lambda: [Image.open(c).convert('L').resize((size, size), Image.BILINEAR) for c in small]}
    times = interleaved(runs, reps=reps, warmup=1)
    base = med(times['full decode + resize (floor)'])
    print(f"   full resolution: {n} JPEGs of 2320 x 2828, {np.mean([f.stat().st_size for f in files]) / 1024:.0f} kB on average")
    for k, v in times.items():
        print(f"   {k:46s} {n / med(v):6.0f} img/s  {med(v) / n * 1000:6.1f} ms/img  {base / med(v):5.1f}x faster than the floor")


def _has_cv2():
    try: import cv2; return True  # noqa: F401
    except ImportError: return False


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--size', type=int, default=320); ap.add_argument('--bs', type=int, default=32)
    ap.add_argument('--reps', type=int, default=5); ap.add_argument('--patients', type=int, default=100)
    ap.add_argument('--device', default='cpu'); ap.add_argument('--workers', type=int, default=0)
    ap.add_argument('--threads', type=int, default=1, help='torch intra-op threads (0: leave as is)')
    ap.add_argument('--full-res', type=int, default=8, help='full-resolution JPEGs for the decoding/cache levers (0: skip)')
    a = ap.parse_args()
    sys.exit(main(a.size, a.bs, a.reps, a.patients, a.device, a.workers, a.threads, a.full_res))
