"""Shared helpers for the benchmarks in bench/: machine description, interleaved timing, the verdict line.

Every benchmark measures its baseline and its candidate in the same process, alternating them (A B A B ...) so
that load from other processes hits both alike, takes medians, and ends with one line
`RATIO <name>: <value> (target <op> <target>) PASS|FAIL`; it exits 1 when the target is missed.
"""
from __future__ import annotations
import os, platform, statistics, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the project root
BENCH_DATA = ROOT/'data'/'bench'  # git-ignored scratch data written by the benchmarks


def machine() -> str:
    "CPU model, cores, load average and torch/threads: the line every benchmark prints first."
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True).stdout
        model = next(l.split(':', 1)[1].strip() for l in out.splitlines() if l.startswith('Model name'))
    except Exception: pass
    load = ', '.join(f'{x:.1f}' for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, load average {load}, python {platform.python_version()}"


def header(title: str):
    print(f"== {title}\n   {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine()}", flush=True)


def interleaved(fns: dict, reps: int = 5, warmup: int = 1) -> dict:
    "Seconds per call of each function, alternating them `reps` times after `warmup` untimed rounds."
    times = {k: [] for k in fns}
    for r in range(warmup + reps):
        for k, f in fns.items():
            t0 = time.perf_counter(); f(); dt = time.perf_counter() - t0
            if r >= warmup: times[k].append(dt)
    return times


def rotated(fns: dict, reps: int, warmup: int = 1) -> dict:
    "Seconds per call of each function: `reps` rounds (after `warmup`) calling each once, in a rotating order."
    times, keys = {k: [] for k in fns}, list(fns)
    for r in range(warmup + reps):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            t0 = time.perf_counter(); fns[k](); dt = time.perf_counter() - t0
            if r >= warmup: times[k].append(dt)
    return times


def med(xs) -> float: return statistics.median(xs)


def spread(xs) -> str: return f"median {med(xs):.3f}s (min {min(xs):.3f}, max {max(xs):.3f}, n={len(xs)})"


def verdict(name: str, value: float, target: float, op: str = '<=') -> int:
    "Print the last line (`RATIO name: value (target op target) PASS|FAIL`) and return the exit code."
    ok = value <= target if op == '<=' else value >= target if op == '>=' else value < target
    print(f"RATIO {name}: {value:.3f} (target {op} {target}) {'PASS' if ok else 'FAIL'}", flush=True)
    return 0 if ok else 1


def bench_sample(patients: int = 100, seed: int = 0) -> Path:
    "A synthetic CheXpert-layout sample (320 x 320..400 grayscale JPEGs) for the data benchmarks, made once."
    from chexpert_nb.sample import make_sample
    out = BENCH_DATA/f'sample-{patients}-{seed}'
    if not (out/'valid.csv').exists(): make_sample(out, patients=patients, seed=seed)
    return out


def run_quiet():
    "Pin torch to the machine's cores and silence warnings that do not concern the benchmark."
    import warnings; warnings.filterwarnings('ignore')
    sys.stdout.reconfigure(line_buffering=True)


class _Lookup:
    "`items[i]` (as a tensor when `tensor`): a picklable getter for fastai (the library's own is private)."
    def __init__(self, items, tensor=False): self.items, self.tensor = items, tensor
    def __call__(self, i):
        import torch
        return torch.from_numpy(self.items[i]) if self.tensor else self.items[i]

def before_dls(train, valid, size, bs, num_workers, device):
    "The DataLoaders `chexpert_dls` made before the fast path: fastai's ImageBlock, squish, batch augmentation, Normalize."
    import numpy as np
    from fastai.vision.all import (DataBlock, ImageBlock, PILImageBW, TransformBlock, IndexSplitter, Resize,
                                   ResizeMethod, aug_transforms, Normalize)
    from chexpert_nb.labels import make_targets
    from chexpert_nb.model import normalize_stats
    from chexpert_nb.learner import radiograph_augmentations
    files = np.concatenate([train['file'].to_numpy(), valid['file'].to_numpy()])
    targets = np.concatenate([make_targets(train), make_targets(valid, 'U-Ignore')])
    st = normalize_stats(1)
    block = DataBlock(blocks=(ImageBlock(cls=PILImageBW), TransformBlock()), get_x=_Lookup(files),
                      get_y=_Lookup(targets, tensor=True), splitter=IndexSplitter(np.arange(len(train), len(files))),
                      item_tfms=[Resize(size, method=ResizeMethod.Squish)],
                      batch_tfms=[*aug_transforms(do_flip=False, max_warp=0., pad_mode='zeros', **radiograph_augmentations()),
                                  Normalize.from_stats(st['mean'], st['std'])])
    return block.dataloaders(np.arange(len(files)), bs=bs, num_workers=num_workers, device=device)
