"""Paired comparisons between arms of different `bench/real_learning.py` runs on the same split, from the held-out
probabilities each run's JSON keeps (no training): mean AUROC over the 8 NIH observations with a 95% interval over
patients, and each difference with its interval over the same patient resamples.

Usage: python bench/real_learning_compare.py RUN.json[:arm[=label]] ... [--pairs 'a - b,c - d']
e.g.   python bench/real_learning_compare.py bench/real_learning/real_learning.json \\
           bench/real_learning/preset_keep_last.json:ours-lite0-preset=ours-lite0-preset-keep-last
"""
import argparse, json, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).parent))
import real_learning as RL


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('runs', nargs='+', help='RUN.json, or RUN.json:arm, or RUN.json:arm=label')
    p.add_argument('--pairs', default='', help="comma-separated 'a - b' (default: every arm against every other)")
    args = p.parse_args(argv)
    if missing := RL.missing_data(): print(f"skipped: the shared NIH X-rays are missing: {missing}"); return 0
    from chexpert_nb.observations import NIH_OBSERVATIONS
    RL.prepare_split()
    _, _, test_df = RL.frames()
    probs = {}
    for spec in args.runs:
        path, _, arm = spec.partition(':')
        arm, _, label = arm.partition('=')
        doc = json.loads(Path(path).read_text())
        for a in ([arm] if arm else list(doc['arms'])):
            key = lambda f: Path(f).parts[-3:]  # set/images/name: runs from other checkouts have other roots
            order = {key(f): i for i, f in enumerate(doc['test_files'])}
            rows = [order[key(f)] for f in test_df['file']]  # the same held-out images, in this run's order
            probs[label or a] = np.asarray(doc['arms'][a]['test_probs'], dtype=float)[rows]
    scores = RL.patient_bootstrap(probs, RL.truth_of(test_df), test_df['patient'].to_numpy(), list(NIH_OBSERVATIONS))
    for a, s in scores.items(): print(f"{a:<34} mean AUROC {s['mean']:.3f} [{s['mean_ci'][0]:.3f}, {s['mean_ci'][1]:.3f}]")
    pairs = [tuple(x.strip() for x in pr.split(' - ')) for pr in args.pairs.split(',') if pr.strip()] or \
            [(a, b) for a in probs for b in probs if a < b]
    for a, b in pairs:
        d = RL.paired_difference(scores, a, b)
        print(f"{a} - {b}: {d['diff']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]")
    return 0


if __name__ == '__main__': sys.exit(main())
