"chexpert-evaluate end to end: on the synthetic sample's valid.csv and on the real NIH radiographs in ../shared."
import json, shutil
import numpy as np, pandas as pd, pytest
from chexpert_nb.observations import OBSERVATIONS, COMPETITION_TASKS
from chexpert_nb.report import evaluate_cli
from chexpert_nb.testing import run_cli


@pytest.fixture(scope='module')
def bundle(trained_models):
    "The session's bundle trained briefly on the synthetic sample (conftest's `trained_models`); tests work on copies."
    return trained_models/'tiny-densenet121'


class _Run:
    def __init__(self, returncode, stdout, stderr): self.returncode, self.stdout, self.stderr = returncode, stdout, stderr

def _evaluate(*args):
    "`chexpert-evaluate *args` in this process (`testing.run_cli`)."
    return _Run(*run_cli(evaluate_cli, *args))


def test_evaluate_on_the_sample_writes_table_plots_and_thresholds(bundle, sample_dir, tmp_path):
    model = tmp_path/'m'; shutil.copytree(bundle, model)
    before = json.loads((model/'config.json').read_text())
    r = _evaluate('--model', model, '--csv', sample_dir/'valid.csv', '--n-boot', 200)
    assert r.returncode == 0, r.stderr
    assert 'mean over' in r.stdout and 'competition tasks' in r.stdout
    table = pd.read_csv(model/'evaluation.csv', index_col=0, keep_default_na=False)
    assert table.index.tolist() == OBSERVATIONS and 'irvin2019_best_of_5_policies_auroc' in table.columns
    ev = json.loads((model/'evaluation.json').read_text())
    valid = pd.read_csv(sample_dir/'valid.csv')
    assert ev['n_images'] == len(valid) and ev['n_studies'] == valid.Path.str.extract(r'(patient\d+/study\d+)')[0].nunique()
    assert ev['aggregate'] == 'max' and ev['threshold_method'] == 'youden' and ev['n_boot'] == 200
    assert ev['layout'] == 'chexpert' and ev['n_failed_images'] == 0
    assert ev['n_patients'] == valid.Path.str.extract(r'(patient\d+)')[0].nunique()
    assert f"layout chexpert: {ev['n_studies']} studies of {ev['n_patients']} patients, {len(valid)} images" in r.stdout
    assert 'best of 5 uncertainty policies' in r.stdout and 'Pham et al. 2020' in r.stdout
    assert ev['published']['irvin2019_best_of_5_policies_auroc']['Edema'] == 0.941
    assert r.stderr.count('predicted ') <= 3, r.stderr  # not a terminal: a line every few seconds, not a bar
    scored = [o['observation'] for o in ev['observations'] if not o['unscorable']]
    for o in ev['observations']:
        if o['unscorable']: assert o['auroc'] is None and o['threshold'] is None
        else: assert o['auroc_low'] <= o['auroc'] <= o['auroc_high'] and 0 <= o['threshold'] <= 1 and 0 <= o['ece'] <= 1 \
                     and (o['sensitivity_other_half'] is None or 0 <= o['sensitivity_other_half'] <= 1)
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
    assert ev['thresholds']['written'] == scored and f"for {len(scored)} observation(s), written to" in r.stdout
    assert f"kept {len(set(before['thresholds']) - set(scored))} from before: fixed (test) on no recorded CSV" in r.stdout \
        or not set(before['thresholds']) - set(scored)
    assert (model/'roc.png').stat().st_size > 10_000 and (model/'reliability.png').stat().st_size > 10_000
    assert ev['calibration']['bundle'] == (before['calibration'] or None)  # as 12_train left it
    if before['calibration']: assert ev['calibration']['fitted'] is None and "the bundle's temperatures" in r.stdout
    else:
        fitted = ev['calibration']['fitted']
        assert fitted['recorded'] is False and (('not recorded (--calibrate records them)' if fitted['temperatures'] else
                                                 'nothing recorded: no observation has 10 studies of each class here') in r.stdout)
    preds = pd.read_csv(model/'evaluation_predictions.csv')
    assert len(preds) == len(valid) and set(OBSERVATIONS) <= set(preds.columns)
    from chexpert_nb.predict import Predictor
    assert Predictor.from_bundle(model, device='cpu').thresholds == config['thresholds']


def test_evaluate_on_real_radiographs_lists_unlabelled_observations(bundle, nih_dir, tmp_path):
    "The NIH sample: 228 one-image studies (flat layout found automatically), six observations never labelled."
    model = tmp_path/'m'; shutil.copytree(bundle, model)
    before = json.loads((model/'config.json').read_text())
    r = _evaluate('--model', model, '--csv', nih_dir/'labels.csv', '--n-boot', 100, '--threshold', 'f1')
    assert r.returncode == 0, r.stderr
    ev = json.loads((model/'evaluation.json').read_text())
    assert ev['n_studies'] == ev['n_images'] == 228 and ev['threshold_method'] == 'f1' and ev['layout'] == 'flat'
    assert 'layout flat: 228 studies' in r.stdout
    assert set(ev['unscorable']) == {'Enlarged Cardiomediastinum', 'Lung Opacity', 'Lung Lesion', 'Pleural Other',
                                     'Fracture', 'Support Devices'}
    assert ev['competition_mean']['tasks'] == COMPETITION_TASKS and ev['competition_mean']['unscorable'] == []
    assert 'unscorable: Enlarged Cardiomediastinum (no study with a 0/1 label)' in r.stdout, r.stdout
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


def _chexpert_csv_with(sample_dir, tmp_path, line, path):
    "The sample's valid.csv with the Path on CSV line `line` (2 = first data row) replaced."
    df = pd.read_csv(sample_dir/'valid.csv'); df.loc[line - 2, 'Path'] = path
    csv = tmp_path/'valid.csv'; df.to_csv(csv, index=False)
    return csv


def test_a_csv_mixing_layouts_is_an_error_naming_the_line(bundle, sample_dir, tmp_path):
    "One absolute path in a CheXpert CSV used to turn the whole CSV flat (26 studies -> 2, AUROC 0.000, exit 0)."
    model = tmp_path/'m'; shutil.copytree(bundle, model)
    config = (model/'config.json').read_bytes()
    odd = str(sample_dir/pd.read_csv(sample_dir/'valid.csv').Path[3])  # an absolute path to a real image
    r = _evaluate('--model', model, '--csv', _chexpert_csv_with(sample_dir, tmp_path, 5, odd), '--root', sample_dir)
    assert r.returncode != 0 and f"line 5: Path '{odd}' does not fit the CheXpert pattern" in r.stderr, r.stderr
    assert '--layout flat' in r.stderr and 'Traceback' not in r.stderr and 'predicted' not in r.stderr
    assert (model/'config.json').read_bytes() == config and not (model/'evaluation.json').exists()


def test_options_and_the_bundle_are_checked_before_any_image(bundle, sample_dir, tmp_path):
    model = tmp_path/'m'; shutil.copytree(bundle, model)
    for args, says in [(('--threshold', 'best'), "invalid choice: 'best'"),
                       (('--aggregate', 'median'), "invalid choice: 'median'"),
                       (('--n-boot', 0), "--n-boot 0: it must be a whole number, at least 1"),
                       (('--layout', 'nih', '--batch-size', 0), "invalid choice: 'nih'")]:
        r = _evaluate('--model', model, '--csv', sample_dir/'valid.csv', *args)
        assert r.returncode != 0 and says in r.stderr and 'predicted' not in r.stderr + r.stdout, r.stderr
    config = json.loads((model/'config.json').read_text()); config['n_outputs'] = 99
    (model/'config.json').write_text(json.dumps(config))
    r = _evaluate('--model', model, '--csv', sample_dir/'valid.csv')
    assert r.returncode != 0 and "n_outputs" in r.stderr and 'Traceback' not in r.stderr, r.stderr
    assert not (model/'evaluation.json').exists()


def test_thresholds_are_written_only_when_scored_and_asked(bundle, sample_dir, tmp_path):
    "Unscorable observations keep their thresholds; nothing scorable or --no-save-thresholds: config.json unchanged."
    model = tmp_path/'m'; shutil.copytree(bundle, model)
    before = json.loads((model/'config.json').read_text()); o = sorted(before['thresholds'])[0]
    df = pd.read_csv(sample_dir/'valid.csv'); df[o] = 0.0; one = tmp_path/'one_unscorable.csv'; df.to_csv(one, index=False)
    r = _evaluate('--model', model, '--csv', one, '--root', sample_dir, '--n-boot', 10)
    assert r.returncode == 0, r.stderr
    config = json.loads((model/'config.json').read_text())
    assert config['thresholds'][o] == before['thresholds'][o] and config['threshold_sources'][o] == before['threshold_sources'][o]
    assert o in json.loads((model/'evaluation.json').read_text())['unscorable']
    written = (model/'config.json').read_bytes()
    df[OBSERVATIONS] = 0.0; none = tmp_path/'none_scorable.csv'; df.to_csv(none, index=False)
    r = _evaluate('--model', model, '--csv', none, '--root', sample_dir, '--n-boot', 10)
    assert r.returncode == 0 and 'thresholds: none written to the bundle' in r.stdout, r.stderr
    assert (model/'config.json').read_bytes() == written and json.loads(written)['thresholds']
    r = _evaluate('--model', model, '--csv', sample_dir/'valid.csv', '--n-boot', 10, '--no-save-thresholds')
    assert r.returncode == 0 and 'thresholds: none written to the bundle' in r.stdout, r.stderr
    assert (model/'config.json').read_bytes() == written
    assert json.loads((model/'evaluation.json').read_text())['thresholds']['written'] == []
    files = {f.name: f.stat().st_mtime_ns for f in model.iterdir()}
    r = _evaluate('--model', model, '--csv', sample_dir/'valid.csv', '--n-boot', 10, '--no-save')
    assert r.returncode == 0 and 'wrote nothing (--no-save)' in r.stdout, r.stderr
    assert {f.name: f.stat().st_mtime_ns for f in model.iterdir()} == files


def _table(model): return pd.read_csv(model/'evaluation.csv', index_col=0)


def _plain_copy(bundle, model):
    "A copy of the bundle without temperatures or OOD statistics (12_train fits both unless told not to)."
    shutil.copytree(bundle, model)
    config = json.loads((model/'config.json').read_text()); config['calibration'], config['ood'] = {}, {}
    (model/'config.json').write_text(json.dumps(config)); (model/'ood.safetensors').unlink(missing_ok=True)
    return model


def test_calibrate_records_temperatures_changes_ece_and_keeps_auroc(bundle, sample_dir, tmp_path):
    "--calibrate fits a temperature per observation on the CSV's studies and records them with the CSV; AUROC stays."
    model = _plain_copy(bundle, tmp_path/'m')
    csv = sample_dir/'valid.csv'
    few = ('--min-per-class', 2)  # the sample's 14 studies: too few for the default 10 of each class
    r = _evaluate('--model', model, '--csv', csv, '--n-boot', 50, '--no-save-thresholds', '--calibrate')
    assert r.returncode == 0 and 'nothing recorded: no observation has 10 studies of each class here' in r.stdout, r.stdout
    assert not json.loads((model/'config.json').read_text()).get('calibration')
    r = _evaluate('--model', model, '--csv', csv, '--n-boot', 50, '--no-save-thresholds', '--calibrate', '--no-save', *few)
    assert r.returncode == 0 and 'wrote nothing (--no-save)' in r.stdout, r.stderr
    assert 'calibration' not in json.loads((model/'config.json').read_text()) or \
        not json.loads((model/'config.json').read_text())['calibration']  # --no-save: not recorded
    r = _evaluate('--model', model, '--csv', csv, '--n-boot', 50, '--no-save-thresholds', '--calibrate', *few)
    assert r.returncode == 0 and f"recorded in {model/'config.json'}" in r.stdout, r.stderr
    first_stdout = r.stdout
    first, ev = _table(model), json.loads((model/'evaluation.json').read_text())
    calibration = json.loads((model/'config.json').read_text())['calibration']
    assert calibration['fitted_on']['csv'] == str(csv) and calibration['method'] == 'platt'  # the default for a user's CSV
    assert set(calibration['biases']) == set(calibration['temperatures'])
    scored = first.index[first.unscorable.isna()].tolist()
    enough = first.index[(first.n_positive >= 2) & (first.n_studies - first.n_positive >= 2)].tolist()
    assert sorted(calibration['temperatures']) == sorted(enough) and set(enough) <= set(scored)
    scored = enough  # the observations with a temperature
    assert calibration['fitted_on']['n_studies'] == {o: int(first.loc[o, 'n_studies']) for o in scored}
    assert np.allclose([calibration['temperatures'][o] for o in scored], first.loc[scored, 'temperature'], atol=1e-6)
    before, after = ev['calibration']['fitted']['ece_mean_before'], ev['calibration']['fitted']['ece_mean_after']
    assert after < before, (before, after)
    measured = ev['calibration']['fitted']['measured_other_half']  # temperatures of one patient half on the other
    held = first['ece_fitted_other_half']
    assert set(measured) <= set(scored) and held[~held.index.isin(measured)].isna().all()  # no half-calibrated figure
    assert held[measured].between(0, 1).all()
    assert ('on the other half of the patients (held out' if measured else 'not measured on the other half') in r.stdout, r.stdout
    # the next evaluation gets the calibrated probabilities: ECE as fitted, AUROC and its interval to the last digit
    r = _evaluate('--model', model, '--csv', csv, '--n-boot', 50, '--no-save-thresholds')
    assert r.returncode == 0 and "the bundle's temperatures (fitted on " + str(csv) in r.stdout, r.stderr
    assert f"{before:.3f} without them" in r.stdout, r.stdout  # before and after, on the same studies
    again = _table(model)
    cols = ['auroc', 'auroc_low', 'auroc_high']
    assert (again[cols].fillna(-1) == first[cols].fillna(-1)).all().all()
    assert np.allclose(again.loc[scored, 'ece'], first.loc[scored, 'ece_fitted'], atol=1e-4)
    assert not np.allclose(again.loc[scored, 'ece'], first.loc[scored, 'ece'])
    assert 'temperature' not in again.columns  # a calibrated bundle is not refitted unless asked
    preds = pd.read_csv(model/'evaluation_predictions.csv')
    assert preds[scored].max().max() <= 1 and np.isclose(json.loads((model/'evaluation.json').read_text())['calibration']['ece_mean'], after)
    assert 'temperatures and biases (Platt scaling) fitted' in first_stdout, first_stdout
    r = _evaluate('--model', model, '--csv', csv, '--n-boot', 50, '--no-save-thresholds', '--calibrate', *few, '--calibration', 'temperature')
    assert r.returncode == 0 and '  temperatures fitted on these studies' in r.stdout, r.stdout + r.stderr
    temps_only = json.loads((model/'config.json').read_text())['calibration']
    assert temps_only['method'] == 'temperature' and 'biases' not in temps_only and set(temps_only['temperatures']) == set(scored)
    assert (_table(model)[cols].fillna(-1) == first[cols].fillna(-1)).all().all()  # still monotone: AUROC unchanged
    for bad, msg in ((('--calibration', 'isotonic'), "invalid choice: 'isotonic'"), (('--min-per-class', 0), 'at least 1')):
        r = _evaluate('--model', model, '--csv', csv, '--n-boot', 50, '--calibrate', *bad)
        assert r.returncode != 0 and msg in r.stderr and 'Traceback' not in r.stderr, r.stderr


def test_threshold_sensitivity_is_measured_on_the_other_half(bundle, sample_dir, tmp_path):
    "Chosen on one half of the patients, sensitivity/specificity on the other: recomputed here from the predictions."
    from chexpert_nb.evaluate import choose_threshold, study_truth
    from chexpert_nb.data import read_chexpert_csv
    from chexpert_nb.labels import patient_split
    model = tmp_path/'m'; shutil.copytree(bundle, model)
    r = _evaluate('--model', model, '--csv', sample_dir/'valid.csv', '--n-boot', 20, '--seed', 3)
    assert r.returncode == 0, r.stderr
    ev, table = json.loads((model/'evaluation.json').read_text()), _table(model)
    labels = read_chexpert_csv(sample_dir/'valid.csv', root=sample_dir)
    a, b = (set(h['study']) for h in patient_split(labels.drop_duplicates('study'), 0.5, seed=3))
    assert ev['threshold_split']['n_studies'] == [len(a), len(b)] and len(a) + len(b) == ev['n_studies']
    assert f"threshold chosen on {len(a)} studies, sensitivity/specificity on the other {len(b)}" in r.stdout
    probs = pd.read_csv(model/'evaluation_predictions.csv').groupby('study')[OBSERVATIONS].max()
    truth = study_truth(labels).loc[probs.index]
    checked = 0
    for o in OBSERVATIONS:
        y, p = truth[o], probs[o]
        on, off = y.index.isin(list(a)) & y.notna(), y.index.isin(list(b)) & y.notna()
        if not (0 < y[on].sum() < on.sum() and 0 < y[off].sum() < off.sum()):
            assert np.isnan(table.loc[o, 'threshold_a']); continue
        t = choose_threshold(y[on].to_numpy(), p[on].to_numpy())['threshold']
        assert np.isclose(table.loc[o, 'threshold_a'], t)
        assert np.isclose(table.loc[o, 'sensitivity_b'], (p[off & (y == 1)] >= t).mean())
        assert np.isclose(table.loc[o, 'specificity_b'], (p[off & (y == 0)] < t).mean())
        checked += 1
    assert checked >= 1
    config = json.loads((model/'config.json').read_text())  # the bundle's threshold: chosen on all the studies
    for o in table.index[table.threshold.notna()]: assert np.isclose(config['thresholds'][o], table.loc[o, 'threshold'])
    assert ev['threshold_chosen_on'] == f"all {ev['n_studies']} studies with a prediction"


def test_the_share_out_of_distribution_is_reported(bundle, sample_dir, tmp_path):
    "No statistics: said so; with statistics fitted on the training images: the flagged images, as their scores say."
    from PIL import Image
    from chexpert_nb.bundle import load_bundle
    from chexpert_nb.ood import fit_ood, pooled_features, save_ood
    model = _plain_copy(bundle, tmp_path/'m')
    r = _evaluate('--model', model, '--csv', sample_dir/'valid.csv', '--n-boot', 10, '--no-save-thresholds')
    assert r.returncode == 0 and 'out of distribution: no OOD statistics in this bundle' in r.stdout, r.stderr
    assert json.loads((model/'evaluation.json').read_text())['ood'] == {'statistics': False, 'note': 'no OOD statistics in this bundle'}
    net, config = load_bundle(model, 'cpu')
    train = pd.read_csv(sample_dir/'train.csv').Path
    imgs = [Image.open(sample_dir/p).convert('L') for p in train[:40]]
    feats = pooled_features(net, imgs, config)
    save_ood(model, *fit_ood(feats[:30], feats[30:], quantile=0.5))  # a strict threshold: some valid images are flagged
    r = _evaluate('--model', model, '--csv', sample_dir/'valid.csv', '--n-boot', 10, '--no-save-thresholds')
    assert r.returncode == 0, r.stderr
    ood = json.loads((model/'evaluation.json').read_text())['ood']
    preds = pd.read_csv(model/'evaluation_predictions.csv')
    above = preds.ood_score > ood['threshold']
    assert ood['statistics'] and ood['n_scored'] == len(preds) and ood['n_flagged'] == int(above.sum())
    assert ood['flagged'] == preds.file[above].tolist() and np.isclose(ood['share_flagged'], above.mean())
    assert f"out of distribution: {ood['n_flagged']} of {len(preds)} images" in r.stdout


def test_a_full_disk_is_one_line_and_leaves_each_file_whole(bundle, sample_dir, tmp_path, monkeypatch):
    "The disk fills while evaluation writes its files: one line naming the folder, no traceback, no half-written file."
    import errno
    import chexpert_nb.files as files
    model = tmp_path/'m'; shutil.copytree(bundle, model)
    before = (model/'config.json').read_text()
    real = files.os.replace
    def full(src, dst):
        if str(dst).endswith('evaluation.json'): raise OSError(errno.ENOSPC, 'No space left on device')
        return real(src, dst)
    monkeypatch.setattr(files.os, 'replace', full)
    r = _evaluate('--model', model, '--csv', sample_dir/'valid.csv', '--n-boot', 20, '--no-progress')
    assert r.returncode == 1 and f'no space left on the disk of {model}' in r.stderr and 'Traceback' not in r.stderr, r.stderr
    assert not (model/'evaluation.json').exists() and not list(model.glob('.*.tmp'))
    assert json.loads((model/'config.json').read_text()).keys() == json.loads(before).keys()
