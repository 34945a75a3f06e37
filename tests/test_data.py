"The data layer on real images and through its command line."
import subprocess, sys
from pathlib import Path
import numpy as np
from PIL import Image
from chexpert_nb.observations import OBSERVATIONS
from chexpert_nb.data import read_chexpert_csv, label_counts

def test_nih_sample_reads_and_every_image_opens(nih_dir):
    df = read_chexpert_csv(nih_dir/'labels.csv', root=nih_dir, layout='flat')
    assert len(df) == 228 and df.patient.nunique() == 228 and df.study.nunique() == 228
    for f in df.file:
        with Image.open(f) as im: im.load(); assert im.size == (320, 320)
    counts = label_counts(df)
    assert counts.loc['Pleural Effusion', 'positive'] == 35 and counts.loc['No Finding', 'positive'] == 34
    assert (df[['Lung Opacity', 'Fracture']].isna()).all().all()  # unlabelled observations stay blank

def test_nih_originals_need_flat_layout(nih_dir):
    import pytest
    from chexpert_nb.data import CheXpertCSVError
    with pytest.raises(CheXpertCSVError, match=r"labels_originals.csv, line 2: Path 'originals/.*layout='flat'"):
        read_chexpert_csv(nih_dir/'labels_originals.csv')
    df = read_chexpert_csv(nih_dir/'labels_originals.csv', root=nih_dir, layout='flat')
    assert len(df) == 12 and all(Image.open(f).size == (1024, 1024) for f in df.file)

def test_sample_cli_writes_a_readable_dataset(tmp_path):
    out = tmp_path/'sample'
    r = subprocess.run([str(Path(sys.executable).parent/'chexpert-sample'), str(out), '--patients', '6', '--seed', '3'],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert 'SYNTHETIC' in r.stdout and 'SYNTHETIC' in (out/'README.md').read_text()
    train = read_chexpert_csv(out/'train.csv', root=out)
    valid = read_chexpert_csv(out/'valid.csv', root=out)
    assert train.patient.nunique() == 6 and valid.patient.nunique() == 8
    assert set(np.unique(valid[OBSERVATIONS].to_numpy())) <= {0.0, 1.0}
