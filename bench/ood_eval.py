"""Out-of-distribution score, the evidence: does the model's own feature statistics tell a chest X-ray from what is not one?

Trains a DenseNet-121 from scratch on the 228 real NIH images of ../shared/data/nih-cxr14-sample (128 px, patient
split 70/30), fits the OOD statistics (`chexpert_nb.ood.fit_ood`) on its training images and the threshold on
held-out NIH images, then scores held-out NIH X-rays (in) against images that are not chest radiographs (out):
photograph crops, pydicom's CT/MR/NM/ultrasound test files, rendered text documents, noise and the synthetic shapes.
Four scores are compared on the same features and logits: Mahalanobis (Ledoit-Wolf) of the square-rooted features
(what the bundle stores), of the raw features, the feature norm, and the energy of the logits.
Then the same for a model trained on the synthetic shapes (64 px): real X-rays must be flagged.

    python bench/ood_eval.py            # trains the two models once into data/bench/ood (about 4 minutes on 2 cores)

Prints `RATIO ood_auroc` (target >= 0.95) and `RATIO ood_heldout_pass` (target >= 0.98); exits 1 if one is missed.
"""
from __future__ import annotations
import sys
from pathlib import Path
import numpy as np
from PIL import Image
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_DATA, ROOT, header, verdict, run_quiet

NIH = ROOT.parent/'shared'/'data'/'nih-cxr14-sample'
OUT = BENCH_DATA/'ood'
def train_models():
    "The NIH model (128 px) and the shapes model (64 px), trained once, from scratch, on the CPU."
    from chexpert_nb.train import TrainConfig, train
    from chexpert_nb.sample import make_sample
    from chexpert_nb.bundle import is_bundle
    nih = TrainConfig(data=str(NIH), csv='labels.csv', layout='flat', out=str(OUT/'nih-128'), pretrained=False, size=128,
                      epochs=4, bs=16, lr=1e-3, valid_pct=0.3, num_workers=0, seed=0)
    shapes = TrainConfig(data=str(OUT/'shapes-data'), out=str(OUT/'shapes-64'), pretrained=False, size=64, epochs=3,
                         bs=16, lr=1e-3, num_workers=0, seed=0)
    if not is_bundle(nih.out): train(nih, quiet=True)
    if not (OUT/'shapes-data'/'valid.csv').exists(): make_sample(OUT/'shapes-data', patients=60, seed=0)
    if not is_bundle(shapes.out): train(shapes, quiet=True)
    return nih, shapes


def split_frames(cfg):
    "The run's own patient split: (training rows, held-out rows)."
    from chexpert_nb.data import read_chexpert_csv
    from chexpert_nb.labels import patient_split
    df = read_chexpert_csv(Path(cfg.data)/cfg.csv, root=cfg.data, layout=cfg.layout, patient=cfg.patient_column)
    return patient_split(df, cfg.valid_pct, cfg.seed)


def out_of_distribution_images(shapes_root: Path) -> dict:
    "Category -> list of grayscale images that are not chest radiographs (`testing.not_radiographs` + synthetic shapes)."
    from chexpert_nb.testing import not_radiographs
    from chexpert_nb.images import load_image
    shapes = sorted((shapes_root/'valid').rglob('*.jpg'))[:24]
    return {**not_radiographs(seed=0), 'synthetic shapes': [load_image(f) for f in shapes]}


def features_and_logits(model, images, config) -> tuple[np.ndarray, np.ndarray]:
    "Pooled features (the API under test) and the model's logits (for the energy score)."
    import torch
    from chexpert_nb.ood import pooled_features
    from chexpert_nb.model import preprocess
    with torch.inference_mode():
        logits = np.concatenate([model(torch.stack([preprocess(i, config) for i in images[k:k + 16]])).numpy()
                                 for k in range(0, len(images), 16)])
    return pooled_features(model, images, config), logits


def energy(logits: np.ndarray) -> np.ndarray:
    "Negative multi-label joint energy (Wang et al. 2021): higher = less confident about anything = more OOD."
    return -np.logaddexp(0, logits.astype(np.float64)).sum(1)


def scorers(f_fit, f_hold, l_hold, quantile=0.99) -> dict:
    "Score name -> (function of (features, logits) -> scores, threshold at `quantile` of the held-out images)."
    from chexpert_nb.ood import fit_ood, ood_scores
    out = {}
    for name, method, transform in (('mahalanobis', 'mahalanobis', 'sqrt'), ('maha-raw', 'mahalanobis', 'none'),
                                    ('norm', 'norm', 'sqrt')):
        arrays, info = fit_ood(f_fit, f_hold, quantile, method, transform)
        out[name] = (lambda f, l, a=arrays, i=info: ood_scores(f, a, i), info['threshold'])
    out['energy'] = (lambda f, l: energy(l), float(np.quantile(energy(l_hold), quantile)))
    return out


def plot_scores(scores: dict, threshold: float, title: str, path: Path = ROOT/'bench'/'ood_scores.png'):
    "Histograms of log10 OOD scores per category, with the stored threshold: the picture in bench/RESULTS.md."
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    logs = {k: np.log10(v) for k, v in scores.items()}
    bins = np.histogram_bin_edges(np.concatenate(list(logs.values())), 40)
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for k, v in logs.items():
        ax.hist(v, bins, alpha=.55, label=f"{k} ({len(v)}): {(v > np.log10(threshold)).mean():.0%} flagged")
    ax.axvline(np.log10(threshold), color='k', ls='--', lw=1, label='stored threshold (99% of held-out X-rays pass)')
    ax.set_xlabel('log10 OOD score (Mahalanobis distance of the square-rooted pooled features)'); ax.set_ylabel('images')
    ax.set_title(title, fontsize=10); ax.legend(fontsize=7, loc='upper right')
    fig.tight_layout(); fig.savefig(path, dpi=80); plt.close(fig)
    print(f"wrote {path.relative_to(ROOT)}")


def main() -> int:
    run_quiet()
    import torch
    from sklearn.metrics import roc_auc_score
    from chexpert_nb.bundle import load_bundle
    from chexpert_nb.ood import fit_ood, save_ood, load_ood, ood_scores, in_distribution
    from chexpert_nb.testing import NOT_RADIOGRAPH_DICOMS
    torch.set_num_threads(1)
    header('OOD score: the model\'s pooled-feature statistics (bench/ood_eval.py)')
    nih_cfg, shapes_cfg = train_models()
    model, config = load_bundle(nih_cfg.out)
    train_df, hold_df = split_frames(nih_cfg)
    load = lambda df: [Image.open(f).convert('L') for f in df['file']]
    f_fit, l_fit = features_and_logits(model, load(train_df), config)
    f_hold, l_hold = features_and_logits(model, load(hold_df), config)
    ood = out_of_distribution_images(Path(shapes_cfg.data))
    ood_fl = {k: features_and_logits(model, v, config) for k, v in ood.items()}
    print(f"NIH model {config.size} px, valid AUROC {config.metrics.get('nanmean_auroc', float('nan')):.3f}; statistics "
          f"on {len(f_fit)} training X-rays, threshold on held-out X-rays ({len(f_hold)}); out: " +
          ', '.join(f"{k} {len(v)}" for k, v in ood.items()))
    # pass rate on images that did not choose the threshold: two halves of the held-out patients, each thresholding the other
    half = np.random.default_rng(1).permutation(len(f_hold)) < len(f_hold) // 2
    f_out = np.concatenate([f for f, _ in ood_fl.values()]); l_out = np.concatenate([l for _, l in ood_fl.values()])
    results = {}
    print(f"{'score':12s} {'AUROC all':>9s} " + ' '.join(f"{k[:12]:>12s}" for k in ood) +
          f" {'flagged':>8s} {'pass(held)':>10s} {'pass(cross)':>11s}")
    for name in ('mahalanobis', 'maha-raw', 'norm', 'energy'):
        score, threshold = scorers(f_fit, f_hold, l_hold)[name]
        s_in, s_out = score(f_hold, l_hold), score(f_out, l_out)
        y = np.r_[np.zeros(len(s_in)), np.ones(len(s_out))]
        auroc = roc_auc_score(y, np.r_[s_in, s_out])
        per = [roc_auc_score(np.r_[np.zeros(len(s_in)), np.ones(len(f))], np.r_[s_in, score(f, l)]) for f, l in ood_fl.values()]
        cross = []
        for a, b in ((half, ~half), (~half, half)):
            sc, t = scorers(f_fit, f_hold[a], l_hold[a])[name]
            cross.append((sc(f_hold[b], l_hold[b]) <= t).mean())
        results[name] = (auroc, float(np.mean(cross)))
        print(f"{name:12s} {auroc:9.3f} " + ' '.join(f"{p:12.3f}" for p in per) + f" {(s_out > threshold).mean():8.1%} "
              f"{(s_in <= threshold).mean():10.1%} {np.mean(cross):11.1%}")
    # the bundle keeps Mahalanobis, thresholded on all held-out X-rays
    arrays, info = fit_ood(f_fit, f_hold)
    save_ood(nih_cfg.out, arrays, info)
    arrays, info = load_ood(nih_cfg.out)
    flagged = {k: 1 - in_distribution(ood_scores(f, arrays, info), info).mean() for k, (f, _) in ood_fl.items()}
    print(f"stored: {info['method']} ({info['transform']}), threshold {info['threshold']:.2f} (quantile {info['quantile']}, shrinkage "
          f"{info['shrinkage']:.3f}); flagged at it: " + ', '.join(f"{k} {v:.0%}" for k, v in flagged.items()))
    plot_scores({'held-out NIH chest X-rays (in)': ood_scores(f_hold, arrays, info),
                 **{k: ood_scores(f, arrays, info) for k, (f, _) in ood_fl.items()}}, info['threshold'],
                f"NIH model ({config.size} px): OOD score of held-out X-rays and of images that are not chest radiographs")
    passed = ~(ood_scores(ood_fl['CT/MR/NM/US DICOM'][0], arrays, info) > info['threshold'])
    print(f"DICOM files passing as chest X-rays: {[f for f, p in zip(NOT_RADIOGRAPH_DICOMS, passed) if p]}")
    # a model trained on the synthetic shapes, shown real X-rays
    smodel, sconfig = load_bundle(shapes_cfg.out)
    s_train, s_hold = split_frames(shapes_cfg)
    sf_fit = features_and_logits(smodel, load(s_train), sconfig)
    sf_hold = features_and_logits(smodel, load(s_hold), sconfig)
    nih_all = load(train_df) + load(hold_df)
    sf_nih = features_and_logits(smodel, nih_all, sconfig)
    shares = {}
    for name, (score, threshold) in scorers(sf_fit[0], sf_hold[0], sf_hold[1]).items():
        shares[name] = (score(*sf_nih) > threshold).mean()
    print(f"shapes model {sconfig.size} px (statistics on {len(sf_fit[0])} shapes images, threshold on {len(sf_hold[0])}): "
          f"real NIH X-rays flagged ({len(nih_all)}): " + ', '.join(f"{k} {v:.1%}" for k, v in shares.items()))
    rc = verdict('ood_auroc (mahalanobis, held-out NIH vs not chest radiographs)', results['mahalanobis'][0], 0.95, '>=')
    rc |= verdict('ood_heldout_pass (mahalanobis, cross-fitted halves)', results['mahalanobis'][1], 0.98, '>=')
    rc |= verdict('ood_shapes_model_flags_xrays (mahalanobis)', shares['mahalanobis'], 0.95, '>=')
    return rc


if __name__ == '__main__':
    sys.exit(main())
