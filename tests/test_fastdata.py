"The `chexpert-cache` command end to end (resuming and refusing other settings are tested in nbs/04_fastdata.ipynb)."
import json, subprocess, sys
from pathlib import Path
import pandas as pd
from PIL import Image
from chexpert_nb.sample import make_sample
from chexpert_nb.data import read_chexpert_csv

BIN = Path(sys.executable).parent


def test_cache_cli(tmp_path):
    src = make_sample(tmp_path/'src', patients=4, seed=5)
    dst = tmp_path/'cache'
    cmd = [str(BIN/'chexpert-cache'), str(src), str(dst), '--size', '48', '--workers', '2']
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"{dst}:" in r.stdout and 'at 48 px' in r.stdout
    info = json.loads((dst/'cache.json').read_text())
    assert info['complete'] and info['written'] == info['images'] > 0
    df = read_chexpert_csv(dst/'train.csv', root=dst)
    pd.testing.assert_frame_equal(df.drop(columns='file'), read_chexpert_csv(src/'train.csv', root=src).drop(columns='file'))
    assert {Image.open(f).size for f in df.file} == {(48, 48)}
