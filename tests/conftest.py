"""Shared pytest fixtures: the project root, the real NIH X-rays in ../shared, a small synthetic sample and a small
trained model. A test that needs ../shared skips, visibly, where it is absent (a user's machine); under CI with
../shared present no such test may skip (the run fails, naming them)."""
import os
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent/'shared'/'data'
NIH = SHARED/'nih-cxr14-sample'
NIH_MORE = SHARED/'nih-cxr14-more'
SHARED_SKIP = 'real NIH X-rays not found at'  # the start of every skip reason of a test that needs ../shared

def _shared(folder:Path) -> Path:
    if not (folder/'labels.csv').exists(): pytest.skip(f"{SHARED_SKIP} {folder}")
    return folder

@pytest.fixture(scope='session')
def nih_dir():
    "The 228 real NIH chest X-rays in CheXpert columns; skips where ../shared is absent (a user's machine)."
    return _shared(NIH)

@pytest.fixture(scope='session')
def nih_more_dir():
    "The 973 more real NIH chest X-rays (patients repeat; `meta.csv` names them); skips where ../shared is absent."
    return _shared(NIH_MORE)

@pytest.fixture(scope='session')
def sample_dir(tmp_path_factory):
    "A small synthetic CheXpert-layout sample written once per test session."
    from chexpert_nb.sample import make_sample
    return make_sample(tmp_path_factory.mktemp('data')/'CheXpert-SYNTHETIC-sample', patients=24, seed=0)

@pytest.fixture(scope='session')
def trained_models(tmp_path_factory):
    "A models folder holding a copy of `cached_bundle` (64 px, trained once and cached on disk), with thresholds for half."
    from chexpert_nb.train import cached_bundle
    from chexpert_nb.bundle import set_thresholds
    from chexpert_nb.observations import OBSERVATIONS
    models = tmp_path_factory.mktemp('models')
    out = cached_bundle(models/'tiny-densenet121')
    set_thresholds(out, {o: 0.5 for o in OBSERVATIONS[::2]}, 'fixed (test)')  # as chexpert-evaluate saves them, for half
    return models

_skipped_shared = []

def pytest_runtest_logreport(report):
    if report.skipped and SHARED_SKIP in str(report.longrepr): _skipped_shared.append(report.nodeid)

def pytest_sessionfinish(session, exitstatus):
    "Under CI, with ../shared present, a test that skipped for want of it is a failure: its path is wrong somewhere."
    if os.environ.get('CI') and (NIH/'labels.csv').exists() and _skipped_shared:
        print(f"\nCI: ../shared is present, yet {len(_skipped_shared)} test(s) skipped for want of it: {_skipped_shared}")
        session.exitstatus = 1
