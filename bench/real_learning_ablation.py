"""Ablation for issues 20/23: what each part of the project's recipe costs against the plain torchxrayvision-style loop.

DenseNet-121 from scratch on the fixed patient split of bench/real_learning.py (train 812 images / valid 84 / test
305 held-out patients), short runs (default 64 px, 3 epochs, batch 16, 1 torch thread). Each variant changes ONE
thing, either in the project's recipe (`train(TrainConfig)`) towards the plain loop, or in the plain loop towards the
project's recipe. Every variant is scored on the held-out patients (mean AUROC over the 8 NIH-labelled observations,
95% interval over patients) and against its reference with a paired interval over the same patient resamples.
Results are appended to --out after every variant; variants already there are skipped (a run may be resumed).

Usage: python bench/real_learning_ablation.py [--size 64] [--epochs 3] [--only 'name;name'] [--out bench/real_learning/real_learning_ablation.json]
"""
from __future__ import annotations
import argparse, json, sys, tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
import real_learning as RL
from common import header, run_quiet

# name: (kind, keyword arguments, reference, what changes). 'ours' kwargs are TrainConfig fields; 'peer' run_peer's.
VARIANTS = {
    'ours: defaults (lr 1e-4 one-cycle)': ('ours', {}, None, "the project's recipe as issue 20 ran it"),
    'peer: defaults (Adam 1e-3 constant)': ('peer', {}, None, 'the plain loop as issue 23 ran it'),
    'ours: defaults, last epoch': 
        ('ours', {'_select': 'last'}, 'ours: defaults (lr 1e-4 one-cycle)', 'best epoch on the 84 validation images -> the last epoch'),
    'peer: last epoch': 
        ('peer', {'select': 'last'}, 'peer: defaults (Adam 1e-3 constant)', 'best epoch on the 84 validation images -> the last epoch'),
    'ours: lr 1e-3': ('ours', {'lr': 1e-3}, 'ours: defaults (lr 1e-4 one-cycle)', 'one-cycle peak 1e-4 -> 1e-3'),
    'peer: lr 1e-4': ('peer', {'lr': 1e-4}, 'peer: defaults (Adam 1e-3 constant)', 'constant 1e-3 -> 1e-4'),
    'peer: one-cycle 1e-3': ('peer', {'schedule': 'onecycle'}, 'peer: defaults (Adam 1e-3 constant)', 'constant -> one-cycle, peak 1e-3'),
    'peer: one-cycle 1e-4': ('peer', {'lr': 1e-4, 'schedule': 'onecycle'}, 'peer: lr 1e-4', 'constant 1e-4 -> one-cycle, peak 1e-4'),
    'peer: one-cycle 1e-4, fastai head': 
        ('peer', {'lr': 1e-4, 'schedule': 'onecycle', 'head': 'fastai'}, 'peer: one-cycle 1e-4',
        'avg-pool + linear -> fastai head (at one-cycle 1e-4)'),
    'peer: fastai head': 
        ('peer', {'head': 'fastai'}, 'peer: defaults (Adam 1e-3 constant)', 'avg-pool + linear -> concat-pool, BN, dropout, 512 hidden'),
    'peer: mild augmentation': 
        ('peer', {'aug': 'mild'}, 'peer: defaults (Adam 1e-3 constant)', 'RandomAffine(45, .15, .85-1.15) -> (10, zoom 1-1.1)'),
    'ours: no augmentation': ('ours', {'augment': False}, 'ours: defaults (lr 1e-4 one-cycle)', 'mild augmentation -> none'),
    'ours: lr 1e-3, no augmentation': ('ours', {'lr': 1e-3, 'augment': False}, 'ours: lr 1e-3', 'mild augmentation -> none (at lr 1e-3)'),
    'peer: blank as negative': 
        ('peer', {'blank': 'negative'}, 'peer: defaults (Adam 1e-3 constant)', 'the 6 unlabelled observations: masked -> negatives'),
    'peer: ImageNet normalisation': ('peer', {'norm': 'imagenet'}, 'peer: defaults (Adam 1e-3 constant)', 'x*2048-1024 -> (x-.449)/.226'),
    'peer: Adam (no amsgrad, no wd)': 
        ('peer', {'amsgrad': False, 'wd': 0.0}, 'peer: defaults (Adam 1e-3 constant)', "amsgrad, wd 1e-5 -> fastai's paper_adam settings"),
    'ours: blank ignore, U-Ignore': 
        ('ours', {'blank': 'ignore', 'policy': 'U-Ignore'}, 'ours: defaults (lr 1e-4 one-cycle)', 'blank negative/jfhealthcare -> ignore/U-Ignore'),
}

@contextmanager
def last_epoch_kept():
    "train() with its best-epoch choice replaced by 'keep the last epoch' (the library's BestModel, saving every epoch)."
    from chexpert_nb import train as T
    class LastEpoch(T.BestModel):
        def epoch_done(self): self.learn.save(self.fname, with_opt=False)
    saved, T.BestModel = T.BestModel, LastEpoch
    try: yield
    finally: T.BestModel = saved


OPTIONAL = ['ours: blank ignore, U-Ignore']  # same targets as the defaults on these data (checked in RESULTS.md): run with --only


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size', type=int, default=64); p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--bs', type=int, default=16); p.add_argument('--threads', type=int, default=1)
    p.add_argument('--only', default=None, help='semicolon-separated variant names (default: all, in table order)')
    p.add_argument('--n-boot', type=int, default=1000)
    p.add_argument('--out', default=str(Path(__file__).parent/'real_learning'/'real_learning_ablation.json'))
    args = p.parse_args(argv)
    if missing := RL.missing_data():
        print(f"SKIP real_learning_ablation: the shared NIH X-rays are not here ({', '.join(missing)} missing)."); return 0
    run_quiet()
    import numpy as np, torch
    torch.set_num_threads(args.threads)
    from chexpert_nb.observations import NIH_OBSERVATIONS
    header(f"Ablation, DenseNet-121 from scratch: {args.size} px, {args.epochs} epochs, batch {args.bs}, torch "
           f"{torch.__version__}, {torch.get_num_threads()} thread(s)")
    split = RL.prepare_split()
    train_df, valid_df, test_df = RL.frames()
    truth = RL.truth_of(test_df)
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.exists() else {}
    key = f"{args.size}px-{args.epochs}ep-bs{args.bs}"
    done = doc.setdefault(key, {'split': split, 'variants': {}})['variants']
    names = [n.strip() for n in args.only.split(';')] if args.only else [n for n in VARIANTS if n not in OPTIONAL]
    files = np.concatenate([d['file'].to_numpy() for d in (train_df, valid_df, test_df)])
    arrays = None
    workdir = Path(tempfile.mkdtemp(prefix='rl-ablation-'))
    for i, name in enumerate(names):
        if name in done: print(f"-- {name}: done already ({done[name]['mean']:.3f})"); continue
        kind, kw, ref, what = VARIANTS[name]
        print(f"-- {name} ({what})", flush=True)
        if kind == 'peer':
            if arrays is None: arrays = dict(zip(files, RL.load_arrays(files, args.size)))
            r = RL.run_peer(name, train_df, valid_df, test_df, args.size, args.epochs, args.bs, arrays=arrays,
                            test_each_epoch=True, **kw)
            probs = r.pop('probs')
        else:
            kw = dict(kw); select = kw.pop('_select', 'best')
            with last_epoch_kept() if select == 'last' else nullcontext():
                r = RL.run_ours(f"v{i}", workdir, arch='densenet121', pretrained=False, size=args.size, epochs=args.epochs,
                                bs=args.bs, **kw)
            hist = __import__('pandas').read_csv(Path(r['out'])/'history.csv')
            r['log'] = [{'epoch': int(e), 'train_loss': float(t), 'valid_auroc': float(v)} for e, t, v in
                        zip(hist['epoch'], hist['train_loss'], hist['nanmean_auroc'])]
            probs = RL.ours_probs(Path(r.pop('out'))).reindex(test_df['file']).to_numpy()
        done[name] = {'kind': kind, 'change': what, 'reference': ref, 'seconds': r['seconds'], 'valid_best': r['valid_best'],
                      'images_per_s': r['n_train'] * r['epochs'] / r['seconds'], 'config': r['config'], 'log': r.get('log'),
                      'probs': probs.round(5).tolist()}
        s = RL.patient_bootstrap({name: probs}, truth, test_df['patient'].to_numpy(), NIH_OBSERVATIONS, 200)[name]
        done[name].update(mean=s['mean'], mean_ci_200=s['mean_ci'])
        print(f"   test mean AUROC {s['mean']:.3f} [{s['mean_ci'][0]:.3f}, {s['mean_ci'][1]:.3f}], valid best "
              f"{r['valid_best']:.3f}, {r['seconds']:.0f} s", flush=True)
        out.write_text(json.dumps(doc, default=float))
    table(doc[key], truth, test_df, NIH_OBSERVATIONS, args.n_boot)
    out.write_text(json.dumps(doc, default=float))
    return 0


def table(entry:dict, truth, test_df, observations, n_boot:int):
    "Every variant's mean AUROC with its interval, and its paired difference from its reference (same resamples)."
    import numpy as np
    v = entry['variants']
    probs = {n: np.asarray(d['probs'], dtype=float) for n, d in v.items()}
    scores = RL.patient_bootstrap(probs, truth, test_df['patient'].to_numpy(), observations, n_boot)
    print(f"\n{'variant':<36}{'test mean AUROC [95% CI]':>28}{'vs reference [95% CI]':>30}{'valid':>8}{'s':>6}")
    for n, d in v.items():
        s = scores[n]; d['mean'], d['mean_ci'] = s['mean'], s['mean_ci']
        d['per_observation'] = {o: s['per_observation'][o]['auroc'] for o in observations}
        diff = ''
        if d['reference'] in scores:
            pd_ = RL.paired_difference(scores, n, d['reference']); d['vs_reference'] = pd_
            diff = f"{pd_['diff']:+.3f} [{pd_['ci'][0]:+.3f}, {pd_['ci'][1]:+.3f}]"
        print(f"{n:<36}{s['mean']:.3f} [{s['mean_ci'][0]:.3f}, {s['mean_ci'][1]:.3f}]".ljust(64)
              + f"{diff:>30}{d['valid_best']:8.3f}{d['seconds']:6.0f}")


if __name__ == '__main__': sys.exit(main())
