"""GPU training step, split: forward + backward vs the optimizer step, fastai's Adam vs torch's fused Adam (prepared).

fastai's `Adam` (what `paper_adam` returns) updates DenseNet-121's 368 parameter tensors one at a time in Python,
about 8 small kernels each: some 3,000 kernel launches per step, which on a GPU can cost as much as the forward and
backward of a batch. `torch.optim.Adam(fused=True)` does the same update (beta2 0.999, eps 1e-8, no weight decay:
the same formula) in a few kernels, and fastai can use it through `OptimWrapper`. This script measures, on
synthetic tensors already on the device, with mixed precision and channels-last as `chexpert_learner` uses them:
  fwd+bwd      forward, loss, backward (the floor of a step);
  step fastai  fastai's `paper_adam(...).step()`;
  step fused   `OptimWrapper(torch.optim.Adam(..., fused=True)).step()` (the candidate for `chexpert_learner` on CUDA);
and prints images/s of whole steps with each optimizer. Target: the fused step costs <= 10% of fwd+bwd.
Then (--parts, default all three: opt,max-batch,compile):
  max-batch    the largest batch (doubling from --bs up to --max-batch-cap) whose fwd+bwd+fused step fits in GPU
               memory, with the peak memory and images/s of each size tried (the ceiling of a step at that batch);
  compile      `torch.compile(model)`: its compile time and fwd+bwd against eager at --bs (does it help?); the
               dry run compiles with the 'eager' backend (the CPU's inductor takes minutes)
Last line (with the part `opt`): `RATIO gpu_step_fused_opt_over_fwd_bwd: ...`. Writes --json (gpu_step.json) into $OUT
when that is set, after each part, so that a run cut short by a timeout still leaves what it measured.

    python bench/gpu_step.py                                 # about a minute on an H100/H200 (compile: +1-2 min)
    python bench/gpu_step.py --parts opt,max-batch           # no compile, ~40 s
    python bench/gpu_step.py --parts compile --json gpu_compile.json
    python bench/gpu_step.py --dry-run                       # the code path on the CPU, tiny sizes, about a minute
"""
from __future__ import annotations
import argparse, json, os, sys, time
from functools import partial
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, run_quiet, verdict, med


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--size', type=int, default=320); p.add_argument('--bs', type=int, default=16)
    p.add_argument('--steps', type=int, default=30); p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--device', default='cuda')
    p.add_argument('--parts', default='opt,max-batch,compile', help="comma-separated: opt, max-batch, compile")
    p.add_argument('--max-batch-cap', type=int, default=2048, help="stop the largest-batch search at this batch")
    p.add_argument('--json', default='gpu_step.json', help="the file written into $OUT")
    p.add_argument('--dry-run', action='store_true', help="the code path on the CPU with tiny sizes (no figures)")
    args = p.parse_args()
    parts = {s.strip() for s in args.parts.split(',') if s.strip()}
    if bad := parts - {'opt', 'max-batch', 'compile'}: p.error(f"--parts: unknown {sorted(bad)}")
    if args.dry_run: args.device, args.size, args.bs, args.steps, args.warmup, args.max_batch_cap = 'cpu', 32, 2, 1, 1, 4
    run_quiet()
    import torch
    if args.device == 'cuda' and not torch.cuda.is_available(): print("no CUDA GPU: this benchmark needs one (--dry-run: CPU)"); sys.exit(2)
    if args.dry_run: torch.set_num_threads(1)
    from fastai.optimizer import OptimWrapper
    from chexpert_nb.labels import ChexpertLoss, n_outputs
    from chexpert_nb.model import build_model
    from chexpert_nb.learner import paper_adam
    dev = torch.device(args.device); cuda = args.device == 'cuda'
    if cuda: torch.backends.cudnn.benchmark = True  # as fastai's default device setup does for fixed-size batches
    header(f"gpu_step: DenseNet-121 at {args.size} px, bs {args.bs}, device {args.device}"
           + (f" ({torch.cuda.get_device_name()}, torch {torch.__version__})" if cuda else ''))
    n_out = n_outputs(None)  # the default policy's outputs (U-MultiClass observations have 3)
    model = build_model('densenet121', 1, n_out, False, None, args.size).to(dev).to(memory_format=torch.channels_last)
    params = list(model.parameters())
    loss_func = ChexpertLoss(None)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    fused = partial(torch.optim.Adam, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, **({'fused': True} if cuda else {}))
    opts = {'step fastai': paper_adam(params, lr=1e-4), 'step fused': OptimWrapper(params, opt=fused, lr=1e-4)}

    def batch(bs):
        x = torch.randn(bs, 1, args.size, args.size, device=dev).to(memory_format=torch.channels_last)
        return x, torch.randint(0, 2, (bs, 14), device=dev).float()

    def fwd_bwd(net, x, y):
        with torch.autocast(args.device, dtype=torch.float16 if cuda else torch.bfloat16, enabled=cuda):
            loss = loss_func(net(x), y)
        loss.backward()

    def timed(f, *a):
        sync(); t0 = time.perf_counter(); f(*a); sync(); return time.perf_counter() - t0

    result = {'device': torch.cuda.get_device_name() if cuda else 'cpu', 'torch': torch.__version__,
              'size': args.size, 'bs': args.bs, 'parts': sorted(parts), 'dry_run': args.dry_run}
    out = Path(os.environ['OUT'])/args.json if os.environ.get('OUT') else None
    def save():
        if out and not args.dry_run: out.write_text(json.dumps(result, indent=1))

    # 1. the optimizer step against forward + backward, at the recipe's batch
    x, y = batch(args.bs)
    ratio = None
    if 'opt' in parts:
        ratio = optimizer_split(args, opts, fwd_bwd, timed, model, x, y, result)
        save()

    # 2. the largest batch that fits: fwd+bwd+fused step, doubling the batch until the GPU runs out of memory
    if 'max-batch' in parts:
        del x, y
        largest_batch(args, cuda, opts['step fused'], fwd_bwd, timed, batch, model, result)
        save()
        x, y = batch(args.bs)

    # 3. torch.compile: compile time, then fwd+bwd compiled against eager at --bs (alternating)
    if 'compile' in parts:
        compiled(args, fwd_bwd, timed, sync, model, x, y, result)
        save()
    print(json.dumps(result))
    if args.dry_run: print("dry run on the CPU: the code path works; no figures to record"); return
    if ratio is not None: sys.exit(verdict('gpu_step_fused_opt_over_fwd_bwd', ratio, 0.10))


def optimizer_split(args, opts, fwd_bwd, timed, model, x, y, result) -> float:
    "fwd+bwd, fastai's step and the fused step, alternated; the fused step's share of fwd+bwd."
    times = {'fwd+bwd': [], **{k: [] for k in opts}}
    for i in range(args.warmup + args.steps):  # alternate: fwd+bwd, fastai step, fwd+bwd, fused step, ...
        for name, opt in opts.items():
            t = timed(fwd_bwd, model, x, y); s = timed(opt.step); opt.zero_grad()
            if i >= args.warmup: times['fwd+bwd'].append(t); times[name].append(s)
    fb = med(times['fwd+bwd'])
    for k, v in times.items():
        result[f'{k} ms'] = round(med(v) * 1000, 2)
        if k != 'fwd+bwd': result[f'{k} images_per_s'] = round(args.bs / (fb + med(v)), 1)
        extra = '' if k == 'fwd+bwd' else f"  ({med(v) / fb:.2f} x fwd+bwd; a whole step: {args.bs / (fb + med(v)):.0f} images/s)"
        print(f"   {k:12s} median {med(v) * 1000:8.2f} ms{extra}", flush=True)
    ratio = med(times['step fused']) / fb
    result['fused_over_fwd_bwd'] = round(ratio, 4)
    return ratio


def largest_batch(args, cuda, opt, fwd_bwd, timed, batch, model, result):
    "Double the batch from --bs until a step runs out of GPU memory (or reaches the cap): images/s and peak memory of each."
    import torch
    tried, bs, best = {}, args.bs, None
    while bs <= args.max_batch_cap:
        try:
            if cuda: torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
            xb, yb = batch(bs)
            for _ in range(2): fwd_bwd(model, xb, yb); opt.step(); opt.zero_grad()  # warm up (cudnn picks kernels)
            n = 3 if not args.dry_run else 1
            t = timed(lambda: [(fwd_bwd(model, xb, yb), opt.step(), opt.zero_grad()) for _ in range(n)])
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.
            tried[bs] = {'images_per_s': round(n * bs / t, 1), 'peak_gib': round(peak, 2)}
            best = bs
            print(f"   bs {bs:5d}: {n * bs / t:7.0f} images/s (fwd+bwd+fused step), peak {peak:6.2f} GiB", flush=True)
            del xb, yb
        except torch.cuda.OutOfMemoryError:
            opt.zero_grad(); xb = yb = None
            print(f"   bs {bs:5d}: out of GPU memory", flush=True)
            tried[bs] = 'out of memory'
            break
        bs *= 2
    if cuda: torch.cuda.empty_cache()
    result['batches'] = {str(k): v for k, v in tried.items()}
    result['largest_batch_tried_that_fits'] = best
    result['largest_batch_note'] = (f"doubling from {args.bs}; " + ('stopped at the first out-of-memory batch'
                                    if 'out of memory' in tried.values() else f'all fit up to the cap {args.max_batch_cap}'))
    print(f"   largest batch that fits: {best} ({result['largest_batch_note']})", flush=True)


def compiled(args, fwd_bwd, timed, sync, model, x, y, result):
    "Compile time of `torch.compile(model)` and its fwd+bwd against eager, alternated."
    import torch
    try:
        cmodel = torch.compile(model, backend='eager' if args.dry_run else 'inductor')
        t0 = time.perf_counter(); fwd_bwd(cmodel, x, y); sync(); compile_s = time.perf_counter() - t0
        model.zero_grad()
        ce = {'eager': [], 'compiled': []}
        for i in range(args.warmup + args.steps):
            for name, net in (('eager', model), ('compiled', cmodel)):
                t = timed(fwd_bwd, net, x, y); model.zero_grad()
                if i >= args.warmup: ce[name].append(t)
        speedup = med(ce['eager']) / med(ce['compiled'])
        result['compile'] = {'compile_s': round(compile_s, 1), 'eager fwd+bwd ms': round(med(ce['eager']) * 1000, 2),
                             'compiled fwd+bwd ms': round(med(ce['compiled']) * 1000, 2), 'speedup': round(speedup, 3),
                             'helps': bool(speedup > 1.05)}
        print(f"   torch.compile: {compile_s:.0f}s to compile; fwd+bwd {med(ce['compiled']) * 1000:.2f} ms against "
              f"{med(ce['eager']) * 1000:.2f} ms eager ({speedup:.2f}x: {'helps' if speedup > 1.05 else 'does not help'})", flush=True)
    except Exception as e:  # the compiler is optional: its failure is a finding, not a failed benchmark
        result['compile'] = {'error': f"{type(e).__name__}: {str(e)[:300]}"}
        print(f"   torch.compile failed: {result['compile']['error']}", flush=True)


if __name__ == '__main__': main()
