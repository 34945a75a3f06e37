"The app's callbacks with a real trained bundle and real X-rays, driven from Python as a browser upload would be; the wheel."
import io
from datetime import datetime
from pathlib import Path
import numpy as np
import pytest
from PIL import Image
from chexpert_nb.observations import OBSERVATIONS
from chexpert_nb.app import ChexpertApp, MAX_FILE_MB
from chexpert_nb.images import make_dicom


def _file(name, content, size=None):
    "One entry of an ipywidgets 8 `FileUpload.value`, as the browser sends it."
    return {'name': name, 'type': '', 'size': len(content) if size is None else size,
            'content': memoryview(content), 'last_modified': datetime.now()}

def two_images(sample_dir) -> list:
    "Two real chest X-rays (a 320 px JPEG and a 1024 px PNG, as a user would upload them), or two synthetic views."
    from conftest import NIH
    if (NIH/'labels.csv').exists():
        paths = [sorted((NIH/'images').glob('*.jpg'))[0], sorted((NIH/'originals').glob('*.png'))[0]]
    else:  # two views of one synthetic study (two patients' view1_frontal.jpg would share a name)
        study = sorted(p.parent for p in (sample_dir/'train').glob('patient*/study1/view2_*.jpg'))[0]
        paths = sorted(study.glob('view*.jpg'))[:2]
    return [(p.name, p.read_bytes()) for p in paths]

def photograph() -> tuple[str, bytes]:
    "A photograph of a person (matplotlib's sample `grace_hopper.jpg`): not a chest X-ray."
    from matplotlib.cbook import get_sample_data
    with get_sample_data('grace_hopper.jpg') as f: return 'grace_hopper.jpg', f.read()

def _xray_files(sample_dir) -> list:
    "The X-rays the uploads come from: the real NIH images where ../shared has them, else the synthetic sample's."
    from conftest import NIH
    if (NIH/'labels.csv').exists(): return sorted((NIH/'images').glob('*.jpg')) + sorted((NIH/'originals').glob('*.png'))
    return sorted(sample_dir.rglob('*.jpg'))

@pytest.fixture(scope='module')
def ood_models(tmp_path_factory):
    """A bundle with model.onnx, thresholds for half the observations and out-of-distribution statistics fitted on the
    X-rays the uploads come from; its threshold lies halfway between the highest score of those X-rays (the uploaded
    ones among them) and the photograph's, so that the uploaded X-rays pass and the photograph is flagged, each with a
    margin. Its weights are random (seeded), at 128 px: the features of the 64 px model trained on synthetic shapes
    do not tell a photograph from an X-ray (a model property, not the app's; real training fits on real X-rays)."""
    from chexpert_nb.bundle import load_bundle
    from chexpert_nb.onnx import export_onnx
    from chexpert_nb.ood import fit_ood, ood_scores, pooled_features, save_ood
    from chexpert_nb.images import load_image
    from chexpert_nb.testing import tiny_bundle
    from chexpert_nb.sample import make_sample
    models = tmp_path_factory.mktemp('ood-models')
    sample = make_sample(models.parent/'ood-sample'/'CheXpert-SYNTHETIC-sample', patients=8, seed=0)
    out = tiny_bundle(models/'tiny-densenet121', size=128, seed=0, thresholds={o: 0.5 for o in OBSERVATIONS[::2]})
    export_onnx(out)
    model, config = load_bundle(out, 'cpu')
    xrays = [load_image(p) for p in _xray_files(sample)]
    uploads = [load_image(data, name) for name, data in two_images(sample)]
    fit, held = pooled_features(model, xrays[::2], config), pooled_features(model, xrays[1::2] + uploads, config)
    arrays, info = fit_ood(fit, held, quantile=1.0)
    highest = float(ood_scores(held, arrays, info).max())
    photo = float(ood_scores(pooled_features(model, [load_image(photograph()[1])], config), arrays, info)[0])
    assert photo > 1.2 * highest, f"the photograph scores {photo:.2f}, the X-rays up to {highest:.2f}: no margin to test"
    save_ood(out, arrays, info | {'threshold': (highest + photo) / 2})
    return models

@pytest.fixture(scope='module')
def xrays(sample_dir): return two_images(sample_dir)

@pytest.fixture(scope='module')
def app(trained_models):
    "One app for the module, as one browser session: every upload is a new study."
    return ChexpertApp(trained_models)

def _study(app):
    t = app.table
    assert list(t.index) == OBSERVATIONS
    assert t['study'].between(0, 1).all()
    return t

def test_one_xray(app, xrays):
    assert app.model_dir.name == 'tiny-densenet121' and app.model_picker.disabled  # one model: nothing to choose
    name, data = xrays[0]
    app.upload.value = [_file(name, data)]
    _study(app)
    assert list(app.images) == [name] and app.errors == {}
    assert app.table_html.value.count('class="study-prob') == 14  # greyed ('study-prob from-flagged') where flagged
    assert app.chart.value[:8] == b'\x89PNG\r\n\x1a\n'
    assert len(app.cams.children) == 1                       # the Grad-CAM overlay of the top observation

def test_two_views_and_a_dicom(app, xrays):
    arr = np.asarray(Image.open(io.BytesIO(xrays[0][1])).convert('L'), dtype=np.uint16) * 16  # 12-bit
    dcm = make_dicom(arr)
    app.upload.value = [_file(n, d) for n, d in xrays] + [_file('view3.dcm', dcm)]
    t = _study(app)
    views = [xrays[0][0], xrays[1][0], 'view3.dcm']
    assert list(t.columns) == ['study', *views, 'threshold', 'decision']
    np.testing.assert_allclose(t['study'], t[views].max(axis=1), rtol=1e-6)  # study level = max over views
    th = app.predictor.thresholds
    for obs in OBSERVATIONS:
        want = None if obs not in th else ('positive' if t.loc[obs, 'study'] >= th[obs] else 'negative')
        assert t.loc[obs, 'decision'] == want
    assert len(app.cams.children) == 3
    app.cam_picker.value = 'Cardiomegaly'
    assert all('Cardiomegaly' in c.children[1].value for c in app.cams.children)

def test_bad_files_beside_good_ones(app, xrays):
    name, data = xrays[0]
    app.upload.value = [_file('corrupt.jpg', data[:len(data) // 2]), _file(name, data),  # a half-copied JPEG
                        _file('huge.png', b'', size=(MAX_FILE_MB + 1) * 2**20)]
    assert set(app.errors) == {'corrupt.jpg', 'huge.png'} and list(app.images) == [name]
    assert 'corrupt.jpg' in app.files.children[0].children[-1].value
    assert 'file-error' in app.files.children[0].children[-1].value
    assert f'up to {MAX_FILE_MB} MB' in app.files.children[2].children[-1].value
    _study(app)
    assert 'could not be read' in app.status.value
    app.upload.value = [_file('corrupt.jpg', b'garbage')]     # only a bad file: no results, the app still works
    assert app.table is None and app.results.layout.display == 'none'
    before = app.study_count
    app.upload.value = [_file(name, data)]
    _study(app)
    assert app.study_count == before + 1 and app.errors == {} and list(app.images) == [name]

def test_uploads_are_not_written(app, xrays, tmp_path, monkeypatch):
    import tempfile
    monkeypatch.chdir(tmp_path); monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
    app.upload.value = [_file(n, d) for n, d in xrays]
    _study(app)
    assert list(tmp_path.iterdir()) == []

def test_a_photograph_is_flagged_an_xray_is_not(ood_models, xrays):
    "With the bundle's out-of-distribution statistics: the warning beside the photograph only, its numbers greyed."
    from chexpert_nb.app import OOD_WARNING, NO_OOD
    app = ChexpertApp(ood_models)
    assert 'out-of-distribution check: mahalanobis' in app.model_info.value and NO_OOD not in app.model_info.value
    assert app.predictor.engine.name == 'onnx' and 'runs on ONNX Runtime' in app.model_info.value  # the default: auto
    name, data = xrays[0]
    app.upload.value = [_file(name, data), _file(*photograph())]
    _study(app)
    assert app.checks[name]['in_distribution'] is True and app.checks['grace_hopper.jpg']['in_distribution'] is False
    xray_card, photo_card = [c.children[-1].value for c in app.files.children]
    assert OOD_WARNING in photo_card and OOD_WARNING not in xray_card
    assert app.table_html.value.count('<td class="image-prob ood-flagged">') == 14
    assert '1 of 2 view(s) do not look like the chest X-rays' in app.status.value

def test_dicom_notes_beside_the_image(app, xrays):
    "A CT's DICOM tags give plain-language notes on its card; the X-ray's card has none."
    arr = np.asarray(Image.open(io.BytesIO(xrays[0][1])).convert('L'), dtype=np.uint16) * 16
    app.upload.value = [_file(*xrays[0]), _file('head-ct.dcm', make_dicom(arr, Modality='CT', BodyPartExamined='HEAD'))]
    xray_card, ct_card = [c.children[-1].value for c in app.files.children]
    assert 'CT, not a radiograph' in ct_card and 'body part: HEAD, not chest' in ct_card and 'dicom-notes' not in xray_card

def test_no_ood_statistics(trained_models, tmp_path):
    "A bundle without statistics (training fits them: removed here): nothing said per image, the model line says there is no check."
    import shutil
    from chexpert_nb.app import OOD_WARNING, NO_OOD
    from chexpert_nb.bundle import read_config, write_config, OOD_FILE
    out = Path(shutil.copytree(trained_models/'tiny-densenet121', tmp_path/'tiny-densenet121'))
    config = read_config(out); config.ood = {}; write_config(config, out); (out/OOD_FILE).unlink(missing_ok=True)
    app = ChexpertApp(tmp_path)
    assert NO_OOD in app.model_info.value and 'thresholds saved for 7 of 14 observations, chosen by fixed (test)' in app.model_info.value
    app.upload.value = [_file(*photograph())]
    assert OOD_WARNING not in app.files.children[0].children[-1].value and 'ood-flagged' not in app.table_html.value

def test_no_model(tmp_path):
    app = ChexpertApp(tmp_path)
    assert app.upload.disabled and 'make demo' in app.status.value and app.predictor is None

def test_the_page_ships_in_the_wheel(tmp_path):
    "A non-editable wheel holds the page `chexpert-app` serves (built from a copy, so the checkout gets no build/)."
    import shutil, subprocess, sys, zipfile
    from conftest import ROOT
    src = tmp_path/'src'
    shutil.copytree(ROOT/'chexpert_nb', src/'chexpert_nb', ignore=shutil.ignore_patterns('__pycache__'))
    for f in ('pyproject.toml', 'README.md'): shutil.copy(ROOT/f, src/f)
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', str(src), '--no-deps', '--no-build-isolation', '-q',
                    '-w', str(tmp_path/'dist')], check=True, timeout=300)
    names = zipfile.ZipFile(next((tmp_path/'dist').glob('chexpert_nb-*.whl'))).namelist()
    assert 'chexpert_nb/app_page.ipynb' in names and 'chexpert_nb/app.py' in names
