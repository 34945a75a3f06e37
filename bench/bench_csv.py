"""CSV: read and validate the real CheXpert train.csv (223,414 rows) with `read_chexpert_csv`.

Baseline, in the same run: a plain `pandas.read_csv` of the same file (no validation, no parsed ids).
Peak memory: the growth of the peak resident set of a fresh process doing one read.
Target: under 3 s. Last line: `RATIO csv_seconds_over_target: seconds / 3 (target < 1)`.
Usage: python bench/bench_csv.py [--reps 5]
"""
import argparse, json, subprocess, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
from common import header, interleaved, med, spread, verdict, run_quiet

TARGET_S = 3.0


def _peak_mb(kind: str) -> dict:
    "Run one read in a fresh process; its peak RSS growth (MB) and the DataFrame's own size (MB)."
    code = f"""
import json, pandas as pd
from chexpert_nb.data import read_chexpert_csv, real_train_csv
def hwm(): return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))  # peak RSS, kB
before = hwm()  # (ru_maxrss would carry the parent's peak over the fork)
df = read_chexpert_csv(real_train_csv()) if {kind!r} == 'read_chexpert_csv' else pd.read_csv(real_train_csv())
print(json.dumps({{'peak_growth_mb': (hwm() - before) / 1024, 'frame_mb': df.memory_usage(deep=True).sum() / 2**20}}))
"""
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(reps: int = 5) -> int:
    run_quiet()
    import pandas as pd
    from chexpert_nb.data import read_chexpert_csv, real_train_csv
    header('CSV: read_chexpert_csv(real_train_csv()) vs plain pandas.read_csv')
    csv = real_train_csv()
    rows = {}
    times = interleaved({'pandas.read_csv (baseline)': lambda: rows.__setitem__('base', len(pd.read_csv(csv))),
                         'read_chexpert_csv': lambda: rows.__setitem__('ours', len(read_chexpert_csv(csv)))}, reps=reps)
    assert rows['base'] == rows['ours'] == 223_414, rows
    for k, v in times.items(): print(f"   {k:28s} {spread(v)}")
    for k in ('read_csv', 'read_chexpert_csv'):
        m = _peak_mb(k)
        print(f"   {k:28s} peak RSS growth {m['peak_growth_mb']:.0f} MB, DataFrame {m['frame_mb']:.0f} MB")
    base, ours = med(times['pandas.read_csv (baseline)']), med(times['read_chexpert_csv'])
    print(f"   validation + ids cost {ours / base:.2f}x a plain read_csv; {223_414 / ours:,.0f} rows/s")
    return verdict('csv_seconds_over_target', ours / TARGET_S, 1.0, '<')


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--reps', type=int, default=5)
    sys.exit(main(ap.parse_args().reps))
