"The dataset adapters on the real label files inside torchxrayvision, and on the real NIH images in ../shared."
import ast, importlib.util, os, warnings
from pathlib import Path
import numpy as np, pandas as pd, pytest
from PIL import Image
from chexpert_nb.observations import OBSERVATIONS
from chexpert_nb.data import label_counts
from chexpert_nb.datasets import (NIH_FILE, NIH_FINDINGS, NIH_SPLIT_FILES, GOOGLE2019_FILE, GOOGLE2019_FINDINGS,
                                  PADCHEST_FILE, PADCHEST_FINDINGS, MIMIC_FILES, read_dataset)
from chexpert_nb.testing import run_cli
from chexpert_nb.labels import make_targets, patient_split

NIH_LABELLED = ['No Finding', 'Cardiomegaly', 'Lung Lesion', 'Edema', 'Consolidation', 'Pneumonia', 'Atelectasis',
                'Pneumothorax', 'Pleural Effusion']

def _xrv_data() -> Path|None:
    "torchxrayvision's data folder, which ships the real label files (read in place, never copied here)."
    spec = importlib.util.find_spec('torchxrayvision')
    return Path(spec.origin).parent/'data' if spec else None

@pytest.fixture(scope='module')
def xrv():
    d = _xrv_data()
    need = [f"{f}.gz" for f in (NIH_FILE, GOOGLE2019_FILE, PADCHEST_FILE)]
    if d is None or not all((d/f).exists() for f in need): pytest.skip(f"torchxrayvision's label files {need} not found")
    return d

@pytest.fixture(scope='module')
def nih_raw(xrv): return pd.read_csv(xrv/f"{NIH_FILE}.gz")

@pytest.fixture(scope='module')
def nih(xrv): return read_dataset('nih', xrv, images=False)

def _listed(labels:pd.Series, findings:set) -> pd.Series:
    "Whether each label list holds one of `findings` (counted without the adapter's code)."
    return labels.map(lambda ls: any(f in findings for f in ls))

def test_nih_rows_patients_and_label_counts(xrv, nih, nih_raw):
    assert len(nih) == 112_120 and nih.patient.nunique() == 30_805 and nih.study.nunique() == 112_120
    assert nih.attrs['labelled'] == NIH_LABELLED
    lists = nih_raw['Finding Labels'].str.split('|')
    for o in NIH_LABELLED:
        expected = int(_listed(lists, {f for f, t in NIH_FINDINGS.items() if t == o}).sum())
        assert int(nih[o].sum()) == expected, o
        assert set(nih[o].unique()) == {0.0, 1.0}, o  # labelled: an explicit 0 where NIH does not list it
    # the real numbers, from Data_Entry_2017_v2020.csv
    assert nih[NIH_LABELLED].sum().astype(int).to_dict() == {
        'No Finding': 60_361, 'Cardiomegaly': 2_776, 'Lung Lesion': 11_207, 'Edema': 2_303, 'Consolidation': 4_667,
        'Pneumonia': 1_431, 'Atelectasis': 11_559, 'Pneumothorax': 5_302, 'Pleural Effusion': 13_317}
    # Mass (5,782) and Nodule (6,331) overlap on 906 images: Lung Lesion counts images, not mentions
    assert int(_listed(lists, {'Mass'}).sum() + _listed(lists, {'Nodule'}).sum()) - 11_207 == 906
    assert nih[[o for o in OBSERVATIONS if o not in NIH_LABELLED]].isna().all().all()
    assert (nih['Frontal/Lateral'] == 'Frontal').all() and nih['AP/PA'].value_counts().to_dict() == {'PA': 67_310, 'AP': 44_810}
    assert len(read_dataset('nih', xrv, frontal_only=True, images=False)) == 112_120
    assert nih['Sex'].value_counts().to_dict() == {'Male': 63_340, 'Female': 48_780}
    assert (nih['patient'] == nih['study'].str[:8]).all()  # NIH names an image <patient>_<visit>.png

def test_nih_unlabelled_observations_are_masked_in_training(nih):
    train, valid = patient_split(nih.head(2000), valid_pct=0.2)
    assert train.attrs['labelled'] == NIH_LABELLED
    y = make_targets(train)  # blank='negative' by default: NIH's unlabelled Fracture must still be masked
    masked = np.isnan(y).all(axis=0)
    assert [o for o, m in zip(OBSERVATIONS, masked) if m] == [o for o in OBSERVATIONS if o not in NIH_LABELLED]
    assert not np.isnan(y[:, [OBSERVATIONS.index(o) for o in NIH_LABELLED]]).any()

@pytest.fixture
def nih_split_root(tmp_path, xrv, nih_raw):
    """A root holding (a link to) the real Data_Entry file and split lists made as NIH made its official ones: by
    patient. The real train_val_list.txt / test_list.txt are not in the wheel, so the lists are ours: 20% of the
    patients, chosen with a fixed seed, go to test."""
    os.symlink(xrv/f"{NIH_FILE}.gz", tmp_path/f"{NIH_FILE}.gz")
    patients = np.sort(nih_raw['Patient ID'].unique())
    test_patients = set(np.random.default_rng(0).permutation(patients)[:len(patients) // 5])
    is_test = nih_raw['Patient ID'].isin(test_patients)
    nih_raw.loc[~is_test, 'Image Index'].to_csv(tmp_path/NIH_SPLIT_FILES['train'], index=False, header=False)
    nih_raw.loc[is_test, 'Image Index'].to_csv(tmp_path/NIH_SPLIT_FILES['test'], index=False, header=False)
    return tmp_path, int(is_test.sum())

def test_nih_official_split_is_read_and_patient_disjoint(nih_split_root):
    root, n_test = nih_split_root
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # a patient-wise split reads without a warning
        train = read_dataset('nih', root, split='train', images=False)
        test = read_dataset('nih', root, split='test', images=False)
    assert len(test) == n_test and len(train) + len(test) == 112_120
    assert set(train.patient).isdisjoint(test.patient)
    assert test.patient.nunique() == 30_805 // 5
    with pytest.raises(ValueError, match=r"nih has the splits \['test', 'train'\], not 'valid'"):
        read_dataset('nih', root, split='valid', images=False)

def test_nih_split_that_leaks_patients_warns(nih_split_root):
    root, _ = nih_split_root
    train_list, test_list = (root/NIH_SPLIT_FILES[s] for s in ('train', 'test'))
    moved = test_list.read_text().splitlines()[0]  # one test image of a test patient listed for training instead
    train_list.write_text(train_list.read_text() + moved + '\n')
    test_list.write_text('\n'.join(test_list.read_text().splitlines()[1:]) + '\n')
    with pytest.warns(UserWarning, match=r"1 patient\(s\) have images in both train_val_list.txt and test_list.txt"):
        read_dataset('nih', root, images=False)
    test_list.unlink()
    with pytest.raises(FileNotFoundError, match="has train_val_list.txt but not test_list.txt"):
        read_dataset('nih', root, images=False)

def test_google_relabels(xrv, nih):
    raw = pd.read_csv(xrv/f"{GOOGLE2019_FILE}.gz")
    g = read_dataset('nih-google', xrv, images=False)
    assert len(g) == 4_376 and g.split.value_counts().to_dict() == {'valid': 2_414, 'test': 1_962}
    assert g.attrs['labelled'] == ['Lung Opacity', 'Lung Lesion', 'Pneumothorax', 'Fracture']
    for column, o in GOOGLE2019_FINDINGS.items(): assert int(g[o].sum()) == int((raw[column] == 'YES').sum()), o
    assert g[g.attrs['labelled']].sum().astype(int).to_dict() == {
        'Lung Opacity': 2_166, 'Lung Lesion': 605, 'Pneumothorax': 238, 'Fracture': 186}
    assert g[[o for o in OBSERVATIONS if o not in g.attrs['labelled']]].isna().all().all()
    assert set(g.study) <= set(nih.study)  # Google relabelled NIH's own images
    test = read_dataset('nih-google', xrv, split='test', images=False)
    assert len(test) == 1_962 and test[g.attrs['labelled']].notna().all().all()

def test_padchest_rows_and_label_counts(xrv):
    raw = pd.read_csv(xrv/f"{PADCHEST_FILE}.gz", usecols=['ImageID', 'Projection', 'Labels', 'PatientID'], dtype=str)
    pc = read_dataset('padchest', xrv, images=False)
    assert len(raw) == 160_861 and raw['Labels'].isna().sum() == 103
    assert len(pc) == 160_758 and pc.attrs['dropped'] == {'no Labels': 103} and pc.attrs['labelled'] == OBSERVATIONS
    raw = raw[raw['Labels'].notna()].reset_index(drop=True)
    lists = raw['Labels'].map(lambda s: [label.strip() for label in ast.literal_eval(s)])  # independent of the regex
    for o in OBSERVATIONS:
        assert int(pc[o].sum()) == int(_listed(lists, {f for f, t in PADCHEST_FINDINGS.items() if t == o}).sum()), o
    assert pc[OBSERVATIONS].sum().astype(int).to_dict() == {
        'No Finding': 50_616, 'Enlarged Cardiomediastinum': 1_116, 'Cardiomegaly': 15_022, 'Lung Opacity': 21_037,
        'Lung Lesion': 5_483, 'Edema': 1_456, 'Consolidation': 2_636, 'Pneumonia': 8_174, 'Atelectasis': 8_961,
        'Pneumothorax': 573, 'Pleural Effusion': 9_989, 'Pleural Other': 5_394, 'Fracture': 4_631, 'Support Devices': 14_176}
    assert pc[OBSERVATIONS].isin([0.0, 1.0]).all().all()
    frontal = int(raw['Projection'].isin(['PA', 'AP', 'AP_horizontal']).sum())
    assert frontal == 110_554 and int((pc['Frontal/Lateral'] == 'Frontal').sum()) == frontal
    assert len(read_dataset('padchest', xrv, frontal_only=True, images=False)) == frontal
    assert (pc['Path'] == pd.Series(pc['Path']).str.split('/').str[0] + '/' + raw['ImageID']).all()

def _write_mimic(root:Path, rng:np.random.Generator, n_studies:int=60) -> pd.DataFrame:
    "MIMIC-CXR-JPG's three CSVs (gzipped, as PhysioNet ships them) for `n_studies` random studies; returns the images."
    studies = pd.DataFrame({'subject_id': rng.choice(np.arange(10_000_000, 19_999_999), n_studies // 3).repeat(3)[:n_studies],
                            'study_id': rng.choice(np.arange(50_000_000, 59_999_999), n_studies, replace=False)})
    for o in OBSERVATIONS: studies[o] = rng.choice([1.0, 0.0, -1.0, np.nan], n_studies)
    images = studies[['subject_id', 'study_id']].loc[studies.index.repeat(rng.integers(1, 4, n_studies))].reset_index(drop=True)
    images['dicom_id'] = [f"{rng.integers(16**8):08x}-{i:04d}" for i in range(len(images))]
    images['split'] = rng.choice(['train', 'validate', 'test'], len(images))
    images['ViewPosition'] = rng.choice(['PA', 'AP', 'LATERAL', 'LL', 'LAO', None], len(images))
    studies.to_csv(root/f"{MIMIC_FILES['labels']}.gz", index=False)
    images[['dicom_id', 'study_id', 'subject_id', 'split']].to_csv(root/f"{MIMIC_FILES['split']}.gz", index=False)
    images[['dicom_id', 'subject_id', 'study_id', 'ViewPosition']].to_csv(root/f"{MIMIC_FILES['metadata']}.gz", index=False)
    return images.merge(studies, on=['subject_id', 'study_id'])

def test_mimic_format_round_trip(tmp_path):
    images = _write_mimic(tmp_path, np.random.default_rng(0))
    for r in images.itertuples():  # a stand-in JPEG where MIMIC puts each image
        f = tmp_path/'files'/f"p{str(r.subject_id)[:2]}"/f"p{r.subject_id}"/f"s{r.study_id}"/f"{r.dicom_id}.jpg"
        f.parent.mkdir(parents=True, exist_ok=True); Image.new('L', (4, 4)).save(f)
    df = read_dataset('mimic', tmp_path)
    assert len(df) == len(images) and df.attrs['labelled'] == OBSERVATIONS and df.attrs['dropped'] == {'no labels row': 0}
    got = df.set_index(df['file'].map(lambda f: Path(f).stem))
    want = images.set_index('dicom_id').loc[got.index]
    np.testing.assert_array_equal(got[OBSERVATIONS].to_numpy(), want[OBSERVATIONS].to_numpy(dtype='float32'))  # NaN == NaN here
    assert (got['study'] == 'p' + want['subject_id'].astype(str) + '/s' + want['study_id'].astype(str)).all()
    assert (got['split'] == want['split'].replace({'validate': 'valid'})).all()
    assert ((got['Frontal/Lateral'] == 'Frontal') == want['ViewPosition'].isin(['PA', 'AP'])).all()
    assert ((got['Frontal/Lateral'] == 'Lateral') == want['ViewPosition'].isin(['LATERAL', 'LL'])).all()
    for s in ('train', 'valid', 'test'):
        assert len(read_dataset('mimic', tmp_path, split=s, images=False)) == int((got['split'] == s).sum())
    frontal = read_dataset('mimic', tmp_path, frontal_only=True)
    assert len(frontal) == int(want['ViewPosition'].isin(['PA', 'AP']).sum()) and frontal['file'].map(os.path.exists).all()

def test_wrong_root_names_the_missing_file(tmp_path, xrv):
    for name, file in [('nih', NIH_FILE), ('nih-google', GOOGLE2019_FILE), ('padchest', PADCHEST_FILE),
                       ('mimic', MIMIC_FILES['labels']), ('chexpert', 'train.csv')]:
        with pytest.raises(FileNotFoundError, match=f"{tmp_path} holds neither {file} nor {file}.gz"):
            read_dataset(name, tmp_path)
    with pytest.raises(FileNotFoundError, match="holds neither mimic-cxr-2.0.0-chexpert.csv"):
        read_dataset('mimic', xrv)  # NIH and PadChest's folder is no MIMIC root

def _nih_download(root:Path, nih_dir:Path, xrv:Path) -> pd.DataFrame:
    """A folder laid out like the NIH download, holding the 228 real images of ../shared (linked, never copied): every
    image under images/ as <original stem>.jpg, the 12 full-size originals as images_001/images/<original name>.png,
    and a Data_Entry file with the real rows of those images (returned)."""
    meta = pd.read_csv(nih_dir/'meta.csv')
    (root/'images').mkdir(parents=True); (root/'images_001'/'images').mkdir(parents=True)
    for rel, name in zip(meta['Path'], meta['Image Index']):
        os.symlink(nih_dir/rel, root/'images'/(Path(name).stem + '.jpg'))
    for p in (nih_dir/'originals').glob('*.png'): os.symlink(p, root/'images_001'/'images'/p.name)
    raw = pd.read_csv(xrv/f"{NIH_FILE}.gz")
    rows = raw[raw['Image Index'].isin(meta['Image Index'])]
    rows.to_csv(root/NIH_FILE, index=False)
    return rows

@pytest.fixture(scope='module')
def nih_download(tmp_path_factory, nih_dir, xrv):
    root = tmp_path_factory.mktemp('nih')/'NIH'
    _nih_download(root, nih_dir, xrv)
    return root

def test_nih_real_images_end_to_end(tmp_path, nih_dir, xrv):
    rows = _nih_download(tmp_path, nih_dir, xrv)
    assert len(rows) == 228
    meta = pd.read_csv(nih_dir/'meta.csv')
    originals = sorted(p.name for p in (nih_dir/'originals').glob('*.png'))

    df = read_dataset('nih', tmp_path)
    assert len(df) == 228 and df.attrs['missing_files'] == [] and df['file'].map(os.path.exists).all()
    df = df.set_index(df['study'])
    meta = meta.set_index(meta['Image Index'].str.replace('.png', '', regex=False))
    assert len(originals) == 12
    for stem in df.index:  # the original PNG where there is one (found by name), else the JPEG (found by stem)
        want = f"images_001/images/{stem}.png" if f"{stem}.png" in originals else f"images/{stem}.jpg"
        assert df.loc[stem, 'Path'] == want and df.loc[stem, 'file'] == str(tmp_path/want)
    assert (df['patient'] == meta.loc[df.index, 'Patient ID'].map('{:08d}'.format)).all()
    assert (rows.set_index(rows['Image Index'].str[:-4]).loc[df.index, 'Finding Labels'] == meta.loc[df.index, 'NIH Finding Labels']).all()
    # the labels agree with the sample's own CheXpert-format labels.csv ...
    sample = pd.read_csv(nih_dir/'labels.csv')
    sample = sample.set_index(sample['Path'].str.replace(r'^images/|\.jpg$', '', regex=True)).loc[df.index]
    same = [o for o in NIH_LABELLED if o != 'Lung Lesion']  # the sample leaves Lung Lesion blank
    np.testing.assert_array_equal(df[same].to_numpy(), sample[same].to_numpy(dtype='float32'))
    # ... and with meta.csv's NIH label strings for Lung Lesion (Mass or Nodule)
    lesion = meta.loc[df.index, 'NIH Finding Labels'].str.split('|').map(lambda ls: 'Mass' in ls or 'Nodule' in ls)
    assert (df['Lung Lesion'] == lesion.astype('float32')).all()
    counts = label_counts(df.reset_index(drop=True))['positive']
    assert counts[['Pleural Effusion', 'No Finding', 'Atelectasis', 'Cardiomegaly', 'Consolidation', 'Pneumothorax', 'Edema',
                   'Pneumonia']].tolist() == [35, 34, 33, 28, 23, 20, 9, 9]
    for f in df['file']:
        with Image.open(f) as im: im.load()


BIN = Path(__file__).resolve().parents[1]/'.venv'/'bin'

def test_evaluate_cli_on_a_dataset_download(nih_download, trained_models, tmp_path):
    "`chexpert-evaluate --dataset nih --root DIR` reads NIH's own files, scores what NIH labels, and writes its report."
    import json, shutil
    model = tmp_path/'m'; shutil.copytree(trained_models/'tiny-densenet121', model)
    before = (model/'config.json').read_text()
    from chexpert_nb.report import evaluate_cli
    code, stdout, stderr = run_cli(evaluate_cli, '--model', model, '--dataset', 'nih', '--root', nih_download, '--n-boot', 50,
                                   '--no-save-thresholds')
    assert code == 0, stderr
    assert 'layout nih: 228 studies of 228 patients' in stdout, stdout
    ev = json.loads((model/'evaluation.json').read_text())
    assert ev['layout'] == 'nih' and ev['n_images'] == 228 and ev['csv'].startswith('nih (all images) in ')
    assert {'Enlarged Cardiomediastinum', 'Lung Opacity', 'Pleural Other', 'Fracture', 'Support Devices'} <= set(ev['unscorable'])
    assert 'Lung Lesion' not in ev['unscorable']
    assert ev['competition_mean']['tasks'] == ['Atelectasis', 'Cardiomegaly', 'Consolidation', 'Edema', 'Pleural Effusion']
    assert (model/'config.json').read_text() == before  # --no-save-thresholds
    code, _, stderr = run_cli(evaluate_cli, '--model', model, '--dataset', 'nih', '--root', tmp_path)
    assert code != 0 and NIH_FILE in stderr and 'Traceback' not in stderr


def test_train_cli_on_a_dataset_download(nih_download, tmp_path):
    "`chexpert-train --dataset nih --data DIR` trains on NIH's own files; the bundle says which dataset it saw."
    import json
    out = tmp_path/'nih-model'
    from chexpert_nb.train import train_cli
    code, _, stderr = run_cli(train_cli, '--dataset', 'nih', '--data', nih_download, '--out', out, '--no-pretrained', '--size', 32,
                              '--epochs', 1, '--bs', 16, '--num-workers', 0, '--quiet', '--valid-pct', 0.25, '--no-onnx')
    assert code == 0, stderr[-2000:]
    config = json.loads((out/'config.json').read_text())
    assert config['data']['dataset'] == 'nih' and config['data']['synthetic'] is False
    assert config['data']['n_train'] + config['data']['n_valid'] == 228
