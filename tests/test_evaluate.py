"chexpert-evaluate end to end: on the synthetic sample's valid.csv and on the real NIH radiographs in ../shared."
import json, shutil, subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest
from chexpert_nb.data import OBSERVATIONS, COMPETITION_TASKS

BIN = Path(sys.executable).parent


@pytest.fixture(scope='module')
def bundle(trained_models):
    "The session's bundle trained briefly on the synthetic sample (conftest's `trained_models`); tests work on copies."
    return trained_models/'tiny-densenet121'


def _evaluate(*args):
    return subprocess.run([str(BIN/'chexpert-evaluate'), *map(str, args)], capture_output=True, text=True)


def test_evaluate_on_the_sample_writes_table_plots_and_thresholds(bundle, sample_dir, tmp_path):
    model = tmp_path/'m'; shutil.copytree(bundle, model)
    before = json.loads((model/'config.json').read_text())
    r = _evaluate('--model', model, '--csv', sample_dir/'valid.csv', '--n-boot', 200)
    assert r.returncode == 0, r.stderr
    assert 'mean over' in r.stdout and 'competition tasks' in r.stdout
    table = pd.read_csv(model/'evaluation.csv', index_col=0, keep_default_na=False)
    assert table.index.tolist() == OBSERVATIONS
    ev = json.loads((model/'evaluation.json').read_text())
    valid = pd.read_csv(sample_dir/'valid.csv')
    assert ev['n_images'] == len(valid) and ev['n_studies'] == valid.Path.str.extract(r'(patient\d+/study\d+)')[0].nunique()
    assert ev['aggregate'] == 'max' and ev['threshold_method'] == 'youden' and ev['n_boot'] == 200
    scored = [o['observation'] for o in ev['observations'] if not o['unscorable']]
    for o in ev['observations']:
        if o['unscorable']: assert o['auroc'] is None and o['threshold'] is None
        else: assert o['auroc_low'] <= o['auroc'] <= o['auroc_high'] and 0 <= o['sensitivity'] <= 1
    m = ev['competition_mean']
    assert m['tasks'] == [t for t in COMPETITION_TASKS if t in scored]
    assert np.isclose(m['auroc'], np.mean([o['auroc'] for o in ev['observations'] if o['observation'] in m['tasks']]))
    config = json.loads((model/'config.json').read_text())
    assert set(config['thresholds']) == set(scored) | set(before['thresholds'])  # the unscored keep theirs
    for o in scored: assert config['threshold_sources'][o]['method'] == 'youden' and \
                            config['threshold_sources'][o]['csv'] == str(sample_dir/'valid.csv')
    for o in set(before['thresholds']) - set(scored): assert config['thresholds'][o] == before['thresholds'][o]
    keep = lambda c: {k: v for k, v in c.items() if k not in ('thresholds', 'threshold_sources')}
    assert keep(config) == keep(before)  # nothing else in the bundle changed
    assert (model/'roc.png').stat().st_size > 10_000
    preds = pd.read_csv(model/'evaluation_predictions.csv')
    assert len(preds) == len(valid) and set(OBSERVATIONS) <= set(preds.columns)
    from chexpert_nb.infer import Predictor
    assert Predictor.from_bundle(model, device='cpu').thresholds == config['thresholds']


def test_evaluate_on_real_radiographs_lists_unlabelled_observations(bundle, nih_dir, tmp_path):
    "The NIH sample: 228 one-image studies (flat layout found automatically), six observations never labelled."
    model = tmp_path/'m'; shutil.copytree(bundle, model)
    before = json.loads((model/'config.json').read_text())
    r = _evaluate('--model', model, '--csv', nih_dir/'labels.csv', '--n-boot', 100, '--threshold', 'f1')
    assert r.returncode == 0, r.stderr
    ev = json.loads((model/'evaluation.json').read_text())
    assert ev['n_studies'] == ev['n_images'] == 228 and ev['threshold_method'] == 'f1'
    assert set(ev['unscorable']) == {'Enlarged Cardiomediastinum', 'Lung Opacity', 'Lung Lesion', 'Pleural Other',
                                     'Fracture', 'Support Devices'}
    assert ev['competition_mean']['tasks'] == COMPETITION_TASKS and ev['competition_mean']['unscorable'] == []
    assert 'unscorable: Enlarged Cardiomediastinum (no positive study)' in r.stdout
    config = json.loads((model/'config.json').read_text())
    scored = set(OBSERVATIONS) - set(ev['unscorable'])
    assert set(config['thresholds']) == scored | set(before['thresholds'])
    for o in set(ev['unscorable']) & set(before['thresholds']): assert config['thresholds'][o] == before['thresholds'][o]


def test_evaluate_reports_bad_input(bundle, sample_dir, tmp_path):
    model = tmp_path/'m'; shutil.copytree(bundle, model)
    r = _evaluate('--model', model)
    assert r.returncode != 0 and '--model and --csv are required' in r.stderr
    csv = tmp_path/'valid.csv'
    df = pd.read_csv(sample_dir/'valid.csv'); df.loc[0, 'Path'] = df.loc[0, 'Path'].replace('view1', 'view9')
    df.to_csv(csv, index=False)
    r = _evaluate('--model', model, '--csv', csv, '--root', sample_dir, '--n-boot', 10)
    assert r.returncode != 0 and "1 of" in r.stderr and "missing='drop'" in r.stderr, r.stderr
    r = _evaluate('--model', model, '--csv', csv, '--root', sample_dir, '--n-boot', 10, '--missing', 'drop')
    assert r.returncode == 0, r.stderr
    assert json.loads((model/'evaluation.json').read_text())['n_images'] == len(df) - 1
