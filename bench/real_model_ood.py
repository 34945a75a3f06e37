"""Out-of-distribution evidence of the model that read real X-rays: the CPU recipe's bundle (EfficientNet-Lite0 from
ImageNet weights, 128 px, trained by `bench/real_learning.py` on 812 NIH X-rays of the shared split). Its OOD
statistics are fitted as training fits them (`fit_ood` on the pooled features of the training images, the threshold
passing 99% of the 84 validation images), then scored on the 305 held-out NIH X-rays of other patients (in) and on
images that are not chest radiographs (out): photograph crops, pydicom's CT/MR/NM/US files, text pages, noise, and
the synthetic shapes.

    python bench/real_model_ood.py MODEL_DIR   # e.g. the ours-lite0-preset folder of a real_learning.py run

Prints the share flagged per group and the AUROC of the score between held-out X-rays and the rest.
"""
import sys
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).parent))
from common import header, run_quiet
import real_learning as RL


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1: print(__doc__); return 2
    if missing := RL.missing_data(): print(f"skipped: the shared NIH X-rays are missing: {missing}"); return 0
    run_quiet()
    from sklearn.metrics import roc_auc_score
    from chexpert_nb.bundle import load_bundle
    from chexpert_nb.images import load_image
    from chexpert_nb.ood import pooled_features, fit_ood, ood_scores
    from chexpert_nb.sample import make_sample
    from chexpert_nb.testing import not_radiographs
    header('OOD of the model trained on real X-rays (held-out NIH patients vs not chest radiographs)')
    model, config = load_bundle(argv[0])
    RL.prepare_split()
    train_df, valid_df, test_df = RL.frames()
    feats = lambda images: pooled_features(model, images, config)
    files = lambda df: [load_image(f) for f in df['file']]
    arrays, info = fit_ood(feats(files(train_df)), feats(files(valid_df)))
    shapes = make_sample(RL.BENCH_DATA/'ood-shapes', patients=12, seed=0)
    groups = {'held-out NIH X-rays': files(test_df), 'synthetic shapes': [load_image(f) for f in sorted(shapes.rglob('*.jpg'))[:40]],
              **not_radiographs()}
    scores = {k: ood_scores(feats(v), arrays, info) for k, v in groups.items()}
    print(f"statistics: {info['n_fit']} training images; threshold {info['threshold']:.3f} passes 99% of {info['n_holdout']} validation images")
    for k, s in scores.items(): print(f"  {k:<24} {len(s):>4} images  flagged {np.mean(s > info['threshold']):6.1%}")
    inside = scores['held-out NIH X-rays']
    outside = np.concatenate([s for k, s in scores.items() if k != 'held-out NIH X-rays'])
    auroc = roc_auc_score(np.r_[np.zeros(len(inside)), np.ones(len(outside))], np.r_[inside, outside])
    print(f"AUROC of the score, held-out NIH X-rays vs the {len(outside)} others: {auroc:.3f}")
    return 0


if __name__ == '__main__': sys.exit(main())
