"Shared pytest fixtures: the project root, the real NIH sample in ../shared, and a small synthetic sample."
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
NIH = ROOT.parent/'shared'/'data'/'nih-cxr14-sample'

@pytest.fixture(scope='session')
def nih_dir():
    "The 228 real NIH chest X-rays in CheXpert columns; skips where ../shared is absent (a user's machine)."
    if not (NIH/'labels.csv').exists(): pytest.skip(f"real-image sample not found at {NIH}")
    return NIH

@pytest.fixture(scope='session')
def sample_dir(tmp_path_factory):
    "A small synthetic CheXpert-layout sample written once per test session."
    from chexpert_nb.data import make_sample
    return make_sample(tmp_path_factory.mktemp('data')/'CheXpert-SYNTHETIC-sample', patients=24, seed=0)

@pytest.fixture(scope='session')
def trained_models(tmp_path_factory, sample_dir):
    "A models folder with one bundle trained briefly on the synthetic sample (64 px, 1 epoch, CPU), with thresholds."
    from chexpert_nb.train import TrainConfig, train
    models = tmp_path_factory.mktemp('models')
    out = models/'tiny-densenet121'
    train(TrainConfig(data=str(sample_dir), out=str(out), pretrained=False, size=64, epochs=1, bs=16, augment=False,
                      num_workers=0, checkpoint_every=10**6), quiet=True)
    from chexpert_nb.bundle import set_thresholds
    from chexpert_nb.data import OBSERVATIONS
    set_thresholds(out, {o: 0.5 for o in OBSERVATIONS[::2]}, 'fixed (test)')  # as 07_evaluate saves them, for half
    return models
