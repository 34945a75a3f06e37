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
Last line: `RATIO gpu_step_fused_opt_over_fwd_bwd: ...`. Writes gpu_step.json into $OUT when that is set.

    python bench/gpu_step.py                                     # under a minute on an H100
    python bench/gpu_step.py --device cpu --size 64 --bs 4 --steps 3   # dry run of the code path
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
    args = p.parse_args()
    run_quiet()
    import torch
    if args.device == 'cuda' and not torch.cuda.is_available(): print("no CUDA GPU: this benchmark needs one"); sys.exit(2)
    from fastai.optimizer import OptimWrapper
    from chexpert_nb.labels import ChexpertLoss
    from chexpert_nb.bundle import BundleConfig, build_model
    from chexpert_nb.train import paper_adam
    dev = torch.device(args.device); cuda = args.device == 'cuda'
    header(f"gpu_step: DenseNet-121 at {args.size} px, bs {args.bs}, device {args.device}"
           + (f" ({torch.cuda.get_device_name()})" if cuda else ''))
    config = BundleConfig('gpu-step', pretrained=False)
    model = build_model(config).to(dev).to(memory_format=torch.channels_last)
    params = list(model.parameters())
    loss_func = ChexpertLoss(config.policy)
    x = torch.randn(args.bs, 1, args.size, args.size, device=dev).to(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (args.bs, 14), device=dev).float()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    opts = {'step fastai': paper_adam(params, lr=1e-4),
            'step fused': OptimWrapper(params, opt=partial(torch.optim.Adam, betas=(0.9, 0.999), eps=1e-8,
                                                            weight_decay=0, **({'fused': True} if cuda else {})), lr=1e-4)}

    def fwd_bwd():
        with torch.autocast(args.device, dtype=torch.float16 if cuda else torch.bfloat16, enabled=cuda):
            loss = loss_func(model(x), y)
        loss.backward()

    def timed(f):
        sync(); t0 = time.perf_counter(); f(); sync(); return time.perf_counter() - t0

    times = {'fwd+bwd': [], **{k: [] for k in opts}}
    for i in range(args.warmup + args.steps):  # alternate: fwd+bwd, fastai step, fwd+bwd, fused step, ...
        for name, opt in opts.items():
            t = timed(fwd_bwd); s = timed(opt.step); opt.zero_grad()
            if i >= args.warmup: times['fwd+bwd'].append(t); times[name].append(s)
    fb = med(times['fwd+bwd'])
    result = {'device': torch.cuda.get_device_name() if cuda else 'cpu', 'size': args.size, 'bs': args.bs}
    for k, v in times.items():
        result[f'{k} ms'] = round(med(v) * 1000, 2)
        extra = '' if k == 'fwd+bwd' else f"  ({med(v) / fb:.2f} x fwd+bwd; a whole step: {args.bs / (fb + med(v)):.0f} images/s)"
        print(f"   {k:12s} median {med(v) * 1000:8.2f} ms{extra}", flush=True)
    if os.environ.get('OUT'): (Path(os.environ['OUT'])/'gpu_step.json').write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    sys.exit(verdict('gpu_step_fused_opt_over_fwd_bwd', med(times['step fused']) / fb, 0.10))


if __name__ == '__main__': main()
