"""The one image reader and learning: planted signs learned from JPEGs and from the same images as 16-bit PNGs."""
import json
from pathlib import Path
import numpy as np, pandas as pd
from PIL import Image

from chexpert_nb.sample import make_sample
from chexpert_nb.train import TrainConfig, train

from train_helpers import PLANTED, bundle_auroc

# ---- one reader, and learning ----

def _as_16_bit_pngs(src:Path, dst:Path) -> Path:
    "The sample `src` with every JPEG re-saved as a 16-bit PNG of 12-bit values (as a 12-bit detector writes them)."
    import shutil
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns('*.jpg'))
    for f in src.rglob('*.jpg'):
        v = np.asarray(Image.open(f).convert('L')).astype(np.uint32)
        Image.fromarray((v * 4095 // 255).astype(np.uint16)).save(dst/f.relative_to(src).with_suffix('.png'))
    for csv in ('train.csv', 'valid.csv'):
        df = pd.read_csv(dst/csv); df['Path'] = df['Path'].str.replace('.jpg', '.png'); df.to_csv(dst/csv, index=False)
    return dst

def test_learns_the_planted_signs_from_jpegs_and_from_16_bit_pngs(tmp_path):
    """A short run on a synthetic sample reaches a mean AUROC >= 0.85 over the observations with planted signs, and the
    same run on the same images as 16-bit PNGs of 12-bit values learns the same (within 0.03): one reader for both
    (PIL's convert('L') once clipped such PNGs to white, which trains a model that reads nothing)."""
    jpegs = make_sample(tmp_path/'jpeg'/'CheXpert-SYNTHETIC-sample', patients=120, seed=0)
    pngs = _as_16_bit_pngs(jpegs, tmp_path/'png'/'CheXpert-SYNTHETIC-sample')
    assert Image.open(next(pngs.rglob('*.png'))).mode.startswith('I')  # really 16-bit
    best = {}
    for name, root in (('jpeg', jpegs), ('png', pngs)):
        cfg = TrainConfig(data=str(root), out=str(tmp_path/name/'m'), pretrained=False, size=64, epochs=5, bs=16, lr=3e-3,
                          frontal_only=True, valid='official', tasks=PLANTED, num_workers=0, checkpoint_every=10_000,
                          onnx=False, calibrate=False, ood=False)
        train(cfg, quiet=True)
        best[name] = json.loads((tmp_path/name/'m'/'config.json').read_text())['metrics']['nanmean_auroc']
    print(best)
    assert best['jpeg'] >= 0.85 and best['png'] >= 0.85, best
    assert abs(best['jpeg'] - best['png']) <= 0.03, best
    assert np.isclose(bundle_auroc(tmp_path/'png'/'m'), best['png'], atol=1e-4)
