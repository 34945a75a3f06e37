"""Calibration, the evidence: does temperature scaling lower the ECE on data it was not fitted on?

Two models, each measured on studies that played no part in fitting its temperatures:

- **sample**: a DenseNet-121 trained from scratch on a synthetic CheXpert-layout sample (300 training patients,
  64 px, 4 epochs). Training fits one temperature per observation on its validation split (the patients held out of
  train.csv), as every training run does. Measured on the sample's `valid.csv`: other patients, never seen by the
  training or by the temperatures. Before = the bundle without its temperatures, after = with them.
- **NIH**: the DenseNet-121 of `bench/ood_eval.py` (trained from scratch on 160 of the 228 real NIH X-rays in
  ../shared, 128 px). Its temperatures were fitted on the 68 held-out images at the end of training, so on those
  images they are in-sample; the honest figure is `crossfit_calibration`: temperatures fitted on one half of the
  held-out patients calibrate the other half, both ways (with at least 5 studies of each class per observation, not
  the default 10: the halves hold 34 studies).

For both, AUROC must be identical before and after (temperature scaling is monotone). On NIH, Platt scaling (a bias
beside each temperature: `chexpert-evaluate --calibration platt`) is measured the same way.

    python bench/calibration_eval.py   # trains what is missing into data/bench/ (about 6 minutes on 2 cores)

Prints `RATIO ece_after_over_before_sample` (the bundle's temperatures), `..._nih` (Platt scaling, the default of
`chexpert-evaluate --calibrate`; temperatures alone are printed beside it) (targets <= 1.0) and
`RATIO auroc_max_change_sample` (target <= 1e-12).
"""
from __future__ import annotations
import sys
from pathlib import Path
import numpy as np
import pandas as pd
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_DATA, header, verdict, run_quiet

OUT = BENCH_DATA/'calibration'


def sample_model():
    "The synthetic-sample model and its sample (made and trained once)."
    from chexpert_nb.sample import make_sample
    from chexpert_nb.train import TrainConfig, train
    from chexpert_nb.bundle import is_bundle
    data = OUT/'sample-300'
    if not (data/'valid.csv').exists(): make_sample(data, patients=300, seed=1)
    cfg = TrainConfig(data=str(data), out=str(OUT/'sample-64'), pretrained=False, size=64, epochs=4, bs=16, lr=3e-3,
                      valid_pct=0.2, num_workers=0, seed=0, onnx=False, ood=False)
    if not is_bundle(cfg.out): train(cfg, quiet=True)
    return Path(cfg.out), data


def nih_model():
    "The NIH model of bench/ood_eval.py (trained there if missing) and a CSV of its held-out images."
    import ood_eval
    if not ood_eval.NIH.exists(): return None, None
    nih, _ = ood_eval.train_models()
    _, hold = ood_eval.split_frames(nih)
    labels = pd.read_csv(ood_eval.NIH/'labels.csv')
    held = labels[labels['Path'].isin(set(hold['Path']))]
    csv = OUT/'nih-heldout.csv'; OUT.mkdir(parents=True, exist_ok=True); held.to_csv(csv, index=False)
    return Path(nih.out), csv


def mean_ratio(name: str, table: pd.DataFrame, before: str, after: str, label: str) -> float:
    "Print the table and the mean ECE before and after over its scorable observations; return after / before."
    scored = table[table[before].notna() & table[after].notna()]
    print(scored.round(3).to_string())
    b, a = scored[before].mean(), scored[after].mean()
    print(f"{name}: mean ECE over {len(scored)} scorable observations {b:.3f} before, {a:.3f} {label}")
    return a / b


def main() -> int:
    run_quiet()
    from chexpert_nb.evaluate import EvalConfig, evaluate

    def run(model, csv, **kw):  # `(table, summary)` of a study-level evaluation; nothing is written
        ev = evaluate(EvalConfig(str(model), str(csv), save=False, progress=False, **kw))
        return ev.table, ev.summary
    header('Calibration: ECE before and after temperature scaling, on held-out data (bench/calibration_eval.py)')
    rc = 0
    model, data = sample_model()
    # the bundle's temperatures (fitted on the training run's validation split) on other patients: valid.csv
    with_t, s_with = run(model, data/'valid.csv', n_boot=200)
    cal = s_with['calibration']
    print(f"sample model: temperatures for {len(cal['bundle']['temperatures'])} observations, fitted on "
          f"{cal['bundle']['fitted_on']['data']}; measured on valid.csv ({s_with['n_studies']} studies of other patients)")
    # the same bundle without its temperatures (a copy whose config has none): the "before", and the AUROC to compare
    from chexpert_nb.bundle import read_config, write_config
    import shutil, dataclasses
    plain = OUT/'sample-64-uncalibrated'; shutil.rmtree(plain, ignore_errors=True); shutil.copytree(model, plain)
    write_config(dataclasses.replace(read_config(plain), calibration={}), plain)
    raw, _ = run(plain, data/'valid.csv', n_boot=200)
    t = pd.DataFrame({'n_studies': with_t['n_studies'], 'n_positive': with_t['n_positive'], 'auroc': with_t['auroc'],
                      'temperature': pd.Series(cal['bundle']['temperatures']), 'ece_before': raw['ece'],
                      'ece_after': with_t['ece'], 'brier_before': raw['brier'], 'brier_after': with_t['brier']})
    t = t[t['temperature'].notna()]  # the observations the bundle calibrates
    ratio = mean_ratio('sample', t, 'ece_before', 'ece_after', "with the bundle's temperatures")
    cols = ['auroc', 'auroc_low', 'auroc_high']
    auroc_change = float(np.nanmax(np.abs(with_t[cols].to_numpy(float) - raw[cols].to_numpy(float))))
    print(f"max |AUROC (and its interval) with - without temperatures| over 14 observations: {auroc_change:.1e}")
    rc |= verdict('ece_after_over_before_sample (held-out patients, the bundle\'s temperatures)', ratio, 1.0)
    rc |= verdict('auroc_max_change_sample', auroc_change, 1e-12)
    # refitted on valid.csv itself (what `chexpert-evaluate --calibrate` does with a user's CSV), measured held out
    for method in ('temperature', 'platt'):
        tab, s = run(model, data/'valid.csv', n_boot=50, calibrate=True, calibration=method)
        f = s['calibration']['fitted']
        t = tab[tab['ece_fitted_other_half'].notna()]
        print(f"sample, --calibrate on valid.csv, {method}: held out (cross-fitted halves of {f['split']['n_studies']} studies, "
              f"{len(t)} observations fitted on both): mean ECE {t['ece_uncalibrated'].mean():.3f} before, "
              f"{t['ece_fitted_other_half'].mean():.3f} after; in-sample {t['ece_fitted'].mean():.3f}")

    nih, csv = nih_model()
    if nih is None: print('no NIH images in ../shared: the real-X-ray half is skipped'); return rc
    import ood_eval
    # 68 studies: a half of 34 holds fewer than the default 10 studies of each class for most observations, so 5 here
    ratios = {}
    for method in ('temperature', 'platt'):
        tab, s = run(nih, csv, root=str(ood_eval.NIH), n_boot=200, calibrate=True, min_per_class=5, calibration=method)
        f = s['calibration']['fitted']
        print(f"\nNIH model, {method}: {s['n_studies']} held-out X-rays of {s['n_patients']} patients; fitted for "
              f"{len(f['temperatures'])} observations (at least {f['min_per_class']} studies of each class); cross-fitted "
              f"halves of {f['split']['n_studies']} studies")
        cols = ['n_studies', 'n_positive', 'auroc', 'temperature', *(['bias'] if method == 'platt' else []), 'ece_uncalibrated',
                'ece_fitted', 'ece_fitted_other_half', 'brier_uncalibrated', 'brier_fitted_other_half']
        t = tab[tab['temperature'].notna()][cols]
        print(f"in-sample (fitted and measured on the same {s['n_studies']} studies): mean ECE "
              f"{t['ece_uncalibrated'].mean():.3f} before, {t['ece_fitted'].mean():.3f} after")
        ratios[method] = mean_ratio(f'NIH, {method}', t, 'ece_uncalibrated', 'ece_fitted_other_half',
                                    'after on the other half of the patients')
    print(f"temperature only (what training fits; not the --calibrate default): {ratios['temperature']:.3f} of the ECE "
          "before, held out")
    rc |= verdict('ece_after_over_before_nih (platt, the --calibrate default; held out: the other half of the patients)',
                  ratios['platt'], 1.0)
    return rc


if __name__ == '__main__':
    sys.exit(main())
