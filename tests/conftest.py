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
