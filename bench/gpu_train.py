"""DenseNet-121 training throughput on one GPU, through the project's own DataLoaders and Learner.

320 px (the paper's size), mixed precision and channels-last (what `chexpert_learner` turns on on CUDA), batches of
`--bs`, over synthetic CheXpert-layout JPEGs written first (drawn shapes, not X-rays: the pixels do not matter for
speed, their decoding does). Prints images/second of the whole pipeline, peak GPU memory, the share of each step
spent waiting for the next batch, and, as the baseline measured in the same run, the images/second of the same
model and optimizer on batches already on the GPU (compute only: the ceiling). The ratio pipeline / compute says how
much the data path costs: close to 1 means the GPU is the bottleneck.
Targets: >= 1,500 images/s through the project's data path (--target), < 10% of step time waiting for data, and
pipeline / compute >= 0.8. `--opt fused` trains with torch's fused Adam (`bench/gpu_step.py`'s candidate) in place of
fastai's `paper_adam`, pipeline and ceiling alike.

    python bench/gpu_train.py                      # ~1-2 minutes on an H100/H200, plus writing the JPEGs once
    python bench/gpu_train.py --bs 32 --steps 150 --workers 16 --opt fused

Needs a CUDA GPU; exits 2 without one (`--dry-run` checks the code path on the CPU with tiny settings). Writes
gpu_train.json into $OUT when that is set; exits 1 when a target is missed.
"""
from __future__ import annotations
import argparse, json, os, sys, time
from functools import partial
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, run_quiet, BENCH_DATA, verdict


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--patients', type=int, default=800, help="synthetic patients (about 2.5 images each)")
    p.add_argument('--size', type=int, default=320)
    p.add_argument('--bs', type=int, default=64)
    p.add_argument('--steps', type=int, default=100, help="timed training steps after --warmup")
    p.add_argument('--warmup', type=int, default=15)
    p.add_argument('--workers', type=int, default=None, help="DataLoader workers (default: all cores, at most 16)")
    p.add_argument('--opt', choices=['fastai', 'fused'], default='fastai',
                   help="fastai's paper_adam (what chexpert_learner uses) or torch's fused Adam")
    p.add_argument('--target', type=float, default=1500., help="images/s the pipeline must reach")
    p.add_argument('--dry-run', action='store_true', help="check the code path on the CPU with tiny settings (no figures)")
    args = p.parse_args()
    run_quiet()
    import torch
    if args.dry_run:
        args.patients, args.size, args.bs, args.steps, args.warmup, args.workers = min(args.patients, 8), 32, 4, 3, 1, 0
        torch.set_num_threads(1)
    elif not torch.cuda.is_available(): print("no CUDA GPU: this benchmark needs one"); sys.exit(2)
    dev = 'cuda' if torch.cuda.is_available() and not args.dry_run else 'cpu'
    sync = torch.cuda.synchronize if dev == 'cuda' else (lambda: None)
    from fastai.vision.all import Callback, CancelFitException
    from fastai.optimizer import OptimWrapper
    from chexpert_nb.sample import make_sample
    from chexpert_nb.data import read_chexpert_csv
    from chexpert_nb.labels import ChexpertLoss
    from chexpert_nb.bundle import BundleConfig
    from chexpert_nb.model import build_model
    from chexpert_nb.learner import chexpert_dls, chexpert_learner, paper_adam
    fused = partial(torch.optim.Adam, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, **({'fused': True} if dev == 'cuda' else {}))
    header(f"gpu_train: DenseNet-121 at {args.size} px, bs {args.bs}, mixed precision, channels-last, {args.opt} Adam")
    gpu = torch.cuda.get_device_name() if dev == 'cuda' else 'none (dry run on the CPU)'
    print(f"   GPU: {gpu}, torch {torch.__version__}", flush=True)

    t0 = time.time()
    root = BENCH_DATA/f'gpu-sample-{args.patients}'
    if not (root/'valid.csv').exists(): make_sample(root, patients=args.patients, seed=0)
    train_df = read_chexpert_csv(root/'train.csv', root=root)
    valid_df = read_chexpert_csv(root/'valid.csv', root=root)
    print(f"   data: {len(train_df)} synthetic JPEGs ready in {time.time()-t0:.0f}s", flush=True)

    workers = args.workers if args.workers is not None else min(16, os.cpu_count() or 1)
    dls = chexpert_dls(train_df, valid_df, size=args.size, bs=args.bs, num_workers=workers, device=dev)
    config = BundleConfig('gpu-train', pretrained=False)

    class Timer(Callback):
        "Per-step wall time and the part of it spent waiting for the batch; stops after warmup + steps."
        order = 100
        def before_fit(self): self.n, self.wait, self.step, self.t_end = 0, [], [], None
        def before_validate(self): self.t_end = None  # time training steps only
        def before_batch(self):
            if not self.training: return
            now = time.perf_counter()
            if self.t_end is not None and self.n >= args.warmup: self.wait.append(now - self.t_end)
        def after_batch(self):
            if not self.training: return
            sync()
            now = time.perf_counter()
            if self.t_end is not None and self.n >= args.warmup: self.step.append(now - self.t_end)
            self.t_end, self.n = now, self.n + 1
            if self.n >= args.warmup + args.steps: raise CancelFitException()

    learn = chexpert_learner(dls, config, path=BENCH_DATA/'gpu-train-model')
    if args.opt == 'fused': learn.opt_func = partial(OptimWrapper, opt=fused)
    timer = Timer()
    if dev == 'cuda': torch.cuda.reset_peak_memory_stats()
    epochs = 1 + (args.warmup + args.steps) // len(dls.train)
    with learn.no_bar(): learn.fit_one_cycle(epochs, 1e-4, cbs=[timer])
    step, wait = sum(timer.step), sum(timer.wait)
    pipeline = args.bs * len(timer.step) / step
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev == 'cuda' else 0.

    del learn, dls
    if dev == 'cuda': torch.cuda.empty_cache()

    # baseline (the ceiling): the same model, loss and optimizer, AMP and channels-last, on one batch already on the GPU.
    # fastai's Adam is no torch optimizer, so it steps without the GradScaler (its unscaling is a few fused kernels).
    model = build_model(config.arch, config.n_in, config.n_outputs, False, None, args.size).to(dev).to(memory_format=torch.channels_last)
    opt = paper_adam(list(model.parameters()), lr=1e-4) if args.opt == 'fastai' else fused(model.parameters(), lr=1e-4)
    loss_func, scaler = ChexpertLoss(config.policy), torch.amp.GradScaler(enabled=dev == 'cuda' and args.opt == 'fused')
    x = torch.randn(args.bs, 1, args.size, args.size, device=dev).to(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (args.bs, 14), device=dev).float()
    for i in range(args.warmup + args.steps):
        if i == args.warmup: sync(); t = time.perf_counter()
        with torch.autocast(dev, dtype=torch.float16, enabled=dev == 'cuda'): loss = loss_func(model(x), y)
        opt.zero_grad()
        if args.opt == 'fused': scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
        else: loss.backward(); opt.step()
    sync()
    compute = args.bs * args.steps / (time.perf_counter() - t)

    result = {'gpu': gpu, 'torch': torch.__version__, 'size': args.size, 'bs': args.bs, 'opt': args.opt, 'workers': workers,
              'steps': len(timer.step), 'pipeline_images_per_s': round(pipeline, 1),
              'compute_only_images_per_s': round(compute, 1), 'data_wait_share': round(wait / step, 3),
              'peak_gpu_memory_gib': round(peak, 2), 'cpu_cores': os.cpu_count()}
    print(f"   pipeline (project DataLoaders + Learner): {pipeline:.0f} images/s; waiting for data "
          f"{100*wait/step:.1f}% of step time; peak GPU memory {peak:.2f} GiB ({workers} workers)")
    print(f"   baseline (same model and optimizer, batches already on the GPU): {compute:.0f} images/s")
    print(f"   one epoch of the 223,414 CheXpert training images at this rate: "
          f"{223_414/pipeline/60:.0f} minutes")
    print(json.dumps(result))
    if args.dry_run: print("dry run on the CPU: the code path works; no figures to record"); return
    if os.environ.get('OUT'): (Path(os.environ['OUT'])/'gpu_train.json').write_text(json.dumps(result, indent=1))
    missed = verdict('gpu_train pipeline images per second', pipeline, args.target, '>=')
    missed |= verdict('gpu_train data wait share of step time', wait / step, 0.10, '<')
    sys.exit(missed | verdict('gpu_train pipeline/compute images per second', pipeline / compute, 0.8, '>='))


if __name__ == '__main__': main()
