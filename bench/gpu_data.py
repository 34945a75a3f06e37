"""GPU data path: can the project's DataLoaders feed DenseNet-121 on an H100/H200 at >= 1,500 images/s? (prepared)

For each variant, images/s of `dls.train` iterated to the GPU (batches on the device, batch transforms run there),
with `--workers` DataLoader workers and pinned memory, over synthetic CheXpert-layout JPEGs (written first; the
same folder as bench/gpu_train.py, so one session writes it once):
  chexpert_dls       `chexpert_dls(...)` as it is: decode, augment (one warp, one lookup) and collate uint8 batches
                     in the workers; pinned, to the GPU, scaled and normalised there
  before             the DataLoaders chexpert_dls made before the fast path (`before_dls` below): decode + squish
                     in the workers, float batches, rotation/zoom/lighting as fastai batch transforms on the GPU
  cache + ...        both over a `chexpert-cache` copy at the training size (written first, timed too)
Baseline in the same run: the plain decode + resize loop (PIL) over the same files in the same number of
processes, i.e. the most any loader could deliver. Also prints the host-to-device copy rate of a pinned batch.
Target: the best variant >= --target images/s (1,500: what DenseNet-121 training at 320 px should consume on one
H100/H200, bench/gpu_train.py) and >= 0.8 x the baseline.
Last line: `RATIO gpu_data_best_over_floor: ...`; exit 1 when either target is missed. Writes gpu_data.json into $OUT
when that is set.

    python bench/gpu_data.py                       # about 1-2 minutes on a 16-core H100/H200 machine
    python bench/gpu_data.py --variants chexpert_dls,cache --batches 20   # the fast path only
    python bench/gpu_data.py --dry-run             # the code path on the CPU: tiny sizes, one worker
"""
from __future__ import annotations
import argparse, json, os, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, run_quiet, BENCH_DATA, verdict, before_dls


VARIANTS = {'chexpert_dls': 'chexpert_dls', 'before': 'before (fastai batch aug)', 'cache': 'cache + chexpert_dls',
            'cache+before': 'cache + before'}  # --variants name -> the name printed and recorded


def _floor_worker(args):
    from PIL import Image
    files, size = args
    for f in files: Image.open(f).convert('L').resize((size, size), Image.BILINEAR)
    return len(files)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--patients', type=int, default=800, help="synthetic patients (about 2.5 images each)")
    p.add_argument('--size', type=int, default=320)
    p.add_argument('--bs', type=int, default=64)
    p.add_argument('--batches', type=int, default=40, help="timed batches per variant, after 2 warm-up batches")
    p.add_argument('--workers', type=int, default=None, help="DataLoader workers (default: all cores, at most 16)")
    p.add_argument('--device', default='cuda')
    p.add_argument('--variants', default='chexpert_dls,before,cache,cache+before',
                   help="comma-separated: chexpert_dls, before, cache (cache + chexpert_dls), cache+before")
    p.add_argument('--target', type=float, default=1500., help="images/s the best variant must reach on CUDA")
    p.add_argument('--dry-run', action='store_true', help="the code path on the CPU with tiny sizes (no figures)")
    args = p.parse_args()
    if args.dry_run: args.device, args.patients, args.size, args.bs, args.batches, args.workers = 'cpu', min(args.patients, 8), 32, 4, 2, 1
    chosen = [v.strip() for v in args.variants.split(',') if v.strip()]
    if bad := set(chosen) - set(VARIANTS): p.error(f"--variants: unknown {sorted(bad)}; choose from {list(VARIANTS)}")
    run_quiet()
    import torch
    if args.device == 'cuda' and not torch.cuda.is_available(): print("no CUDA GPU: this benchmark needs one (--dry-run: CPU)"); sys.exit(2)
    if args.dry_run: torch.set_num_threads(1)
    from multiprocessing import get_context
    from chexpert_nb.sample import make_sample
    from chexpert_nb.data import read_chexpert_csv
    from chexpert_nb.learner import chexpert_dls
    from chexpert_nb.fastdata import cache_dataset
    workers = args.workers if args.workers is not None else min(16, os.cpu_count() or 1)
    workers = max(workers, 1)  # the floor runs in a pool of `workers` processes
    header(f"gpu_data: {args.size} px, bs {args.bs}, {workers} workers, device {args.device}")
    if args.device == 'cuda': print(f"   GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    t0 = time.time()
    root = BENCH_DATA/f'gpu-sample-{args.patients}'
    if not (root/'valid.csv').exists(): make_sample(root, patients=args.patients, seed=0)
    train, valid = read_chexpert_csv(root/'train.csv', root=root), read_chexpert_csv(root/'valid.csv', root=root)
    print(f"   data: {len(train)} synthetic JPEGs ready in {time.time() - t0:.0f}s", flush=True)
    cache_s = None
    if any(v.startswith('cache') for v in chosen):
        t0 = time.time()
        cache = cache_dataset(root, BENCH_DATA/f'gpu-cache-{args.patients}-{args.size}', size=args.size,
                              workers=workers, progress=False)
        cache_s = time.time() - t0
        ctrain, cvalid = read_chexpert_csv(cache/'train.csv', root=cache), read_chexpert_csv(cache/'valid.csv', root=cache)
        print(f"   cache at {args.size} px: {cache_s:.1f}s ({len(train) + len(valid)} images, "
              f"{(len(train) + len(valid)) / max(cache_s, 1e-9):.0f} images/s with {workers} processes; 0s when it was "
              "there already)", flush=True)

    n_img = args.bs * args.batches
    files = (train['file'].tolist() * (1 + n_img // len(train)))[:n_img]
    chunks = [(files[i::workers], args.size) for i in range(workers)]
    with get_context('fork').Pool(workers) as pool:
        pool.map(_floor_worker, [(c[0][:2], args.size) for c in chunks])  # warm the processes
        t0 = time.perf_counter(); pool.map(_floor_worker, chunks); floor = n_img / (time.perf_counter() - t0)
    print(f"   floor: plain PIL decode + resize in {workers} processes: {floor:.0f} images/s", flush=True)

    device = torch.device(args.device)
    kw = dict(size=args.size, bs=args.bs, num_workers=workers, device=device)
    variants = {'chexpert_dls': lambda: chexpert_dls(train, valid, **kw),
                'before': lambda: before_dls(train, valid, **kw),
                'cache': lambda: chexpert_dls(ctrain, cvalid, **kw),
                'cache+before': lambda: before_dls(ctrain, cvalid, **kw)}
    variants = {VARIANTS[k]: variants[k] for k in chosen}
    sync = torch.cuda.synchronize if args.device == 'cuda' else (lambda: None)
    result = {'device': torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu', 'cpu_cores': os.cpu_count(),
              'workers': workers, 'size': args.size, 'bs': args.bs, 'floor_images_per_s': round(floor, 1),
              'cache_images_per_s': None if cache_s is None else round((len(train) + len(valid)) / max(cache_s, 1e-9), 1),
              'dry_run': args.dry_run}
    for name, make in variants.items():
        dl = make().train.new(pin_memory=args.device == 'cuda', shuffle=True)
        it, n, t0 = iter(dl), 0, None
        for i in range(2 + args.batches):
            try: x, y = next(it)
            except StopIteration: it = iter(dl); x, y = next(it)
            if i == 1: sync(); t0 = time.perf_counter()
            elif i > 1: n += len(x)
        sync(); ips = n / (time.perf_counter() - t0)
        result[f'{name} images_per_s'] = round(ips, 1)
        print(f"   {name:26s} {ips:7.0f} images/s  ({ips / floor:.2f} x floor)", flush=True)
        del it, dl
    if args.device == 'cuda':
        xb = torch.empty(args.bs, 1, args.size, args.size, dtype=torch.uint8).pin_memory()
        torch.cuda.synchronize(); t0 = time.perf_counter()
        for _ in range(20): xb.to('cuda', non_blocking=True)
        torch.cuda.synchronize()
        result['h2d_uint8_images_per_s'] = round(20 * args.bs / (time.perf_counter() - t0))
        print(f"   pinned uint8 batch to GPU: {result['h2d_uint8_images_per_s']:,} images/s", flush=True)
    best = max(result[f'{VARIANTS[k]} images_per_s'] for k in chosen)
    result['best_images_per_s'] = best
    if os.environ.get('OUT') and not args.dry_run: (Path(os.environ['OUT'])/'gpu_data.json').write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    if args.dry_run: print("dry run on the CPU: the code path works; no figures to record"); return
    print(f"   best variant: {best:.0f} images/s ({'meets' if best >= args.target else 'misses'} the {args.target:,.0f} images/s target)")
    code = verdict('gpu_data_best_over_floor', best / floor, 0.8, '>=')
    sys.exit(code or int(best < args.target))


if __name__ == '__main__': main()
