"Inference on real radiographs (the NIH sample in ../shared), the predictor against the fastai learner, and chexpert-predict."
import io, os, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest
from PIL import Image
from chexpert_nb.observations import OBSERVATIONS
from chexpert_nb.data import read_chexpert_csv
from chexpert_nb.images import ImageLoadError, load_image, make_dicom
from chexpert_nb.predict import Predictor
from chexpert_nb.batch import predict_cli
from chexpert_nb.testing import run_cli

BIN = Path(sys.executable).parent


def _bytes(im, fmt, **kw):
    buf = io.BytesIO(); im.save(buf, fmt, **kw); return buf.getvalue()


def test_every_real_png_original_and_jpeg_loads(nih_dir):
    "The 12 full-size PNG originals and the 228 JPEGs load from paths and from bytes, as PIL reads them."
    originals = sorted((nih_dir/'originals').glob('*.png'))
    jpegs = sorted((nih_dir/'images').glob('*.jpg'))
    assert len(originals) == 12 and len(jpegs) == 228
    for f in originals + jpegs:
        img = load_image(f)
        assert img.mode == 'L'
        ref = np.asarray(Image.open(f).convert('L'))
        assert np.array_equal(np.asarray(img), ref), f
    img = load_image(originals[0].read_bytes(), name='upload.png')
    assert img.size == (1024, 1024) and np.array_equal(np.asarray(img), np.asarray(Image.open(originals[0]).convert('L')))


def test_real_radiograph_in_every_container(nih_dir):
    "One real original as 16-bit PNG (16- and 12-bit values), RGBA, palette PNG, DICOM (MONOCHROME1, INVERSE, rescaled, RLE): the same pixels."
    a8 = np.asarray(Image.open(sorted((nih_dir/'originals').glob('*.png'))[0]).convert('L'))
    a12 = np.rint(a8 * (4095 / 255)).astype(np.uint16)
    for deep in (a8.astype(np.uint16) * 257, a12):
        assert np.array_equal(np.asarray(load_image(_bytes(Image.fromarray(deep), 'PNG'))), a8)
    assert np.array_equal(np.asarray(load_image(_bytes(Image.fromarray(a8).convert('RGBA'), 'PNG'))), a8)
    pal = Image.fromarray(a8).convert('P')
    assert np.array_equal(np.asarray(load_image(_bytes(pal, 'PNG'))), np.asarray(pal.convert('L')))
    for data in (make_dicom(a12), make_dicom(4095 - a12, 'MONOCHROME1'), make_dicom(4095 - a12, PresentationLUTShape='INVERSE'),
                 make_dicom(a12, transfer_syntax='1.2.840.10008.1.2.5'), make_dicom(a12, rescale=(0.5, 100.0))):
        assert np.array_equal(np.asarray(load_image(data)), a8)
    marked = a12.copy(); marked[0, 0] = 65535  # a burned-in marker in a 16-bit PNG of 12-bit values
    back = np.asarray(load_image(_bytes(Image.fromarray(marked), 'PNG')))
    assert back[0, 0] == 255 and np.array_equal(back.ravel()[1:], a8.ravel()[1:])
    win = np.asarray(load_image(make_dicom(a12, window=(2048, 1024))))  # [1536, 2560] -> [0, 255]
    assert (win[a12 <= 1536] == 0).all() and (win[a12 >= 2560] == 255).all()


def test_damaged_real_files_fail_with_their_name(nih_dir, tmp_path):
    "Real files cut short or overwritten raise ImageLoadError naming the file; nothing else escapes."
    png = sorted((nih_dir/'originals').glob('*.png'))[1].read_bytes()
    jpg = sorted((nih_dir/'images').glob('*.jpg'))[1].read_bytes()
    cases = {'cut.png': png[:len(png) // 3], 'cut.jpg': jpg[:len(jpg) // 2], 'header.png': png[:40],
             'zeros.png': png[:2000] + bytes(len(png) - 2000), 'empty.jpg': b'',
             'text.png': b'this is not an image', 'multi.dcm': make_dicom(np.zeros((2, 8, 8), np.uint16)),
             'nopixels.dcm': make_dicom(None)}
    for name, data in cases.items():
        (tmp_path/name).write_bytes(data)
        with pytest.raises(ImageLoadError) as e: load_image(tmp_path/name)
        assert str(e.value).startswith(str(tmp_path/name)), str(e.value)


@pytest.fixture(scope='module')
def mc_bundle():
    "`cached_bundle` with 3 input channels (64 px, Atelectasis U-MultiClass): trained once, cached on disk."
    from chexpert_nb.train import cached_bundle
    return cached_bundle(n_in=3)


def _learner(model_dir, frame):
    "A fastai learner over the bundle's weights, fed `frame` through the training DataLoaders' validation path."
    from dataclasses import replace
    from chexpert_nb.bundle import load_bundle
    from chexpert_nb.train import chexpert_dls, chexpert_learner
    model, c = load_bundle(model_dir)
    dls = chexpert_dls(frame, frame, size=c.size, bs=8, policy=c.policy, n_in=c.n_in, augment=False, num_workers=0, device='cpu')
    learn = chexpert_learner(dls, replace(c, pretrained=False))
    learn.model.load_state_dict(model.state_dict())
    return learn


def test_predictor_equals_the_trained_learner(mc_bundle, sample_dir):
    "The learner over a trained bundle and the predictor give the same probabilities on its validation images."
    from chexpert_nb.bundle import read_config
    pred = Predictor.from_bundle(mc_bundle, device='cpu', calibrated=False)
    assert pred.config.n_in == 3 and pred.config.n_outputs == 16
    root = Path(read_config(mc_bundle).data['root'])
    valid = read_chexpert_csv(root/'valid.csv', root=root)
    learn = _learner(mc_bundle, valid)
    with learn.no_bar(): ref = learn.get_preds(dl=learn.dls.valid)[0].numpy()
    ours = pred.predict([Path(f).read_bytes() for f in valid.file])
    assert ours.shape == ref.shape == (len(valid), 14)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_training_and_serving_read_every_container_alike(mc_bundle, sample_dir, tmp_path):
    "A 16-bit PNG of 12-bit values, an RGBA PNG and a DICOM: the learner's validation path and the predictor agree."
    from chexpert_nb.bundle import read_config
    root = Path(read_config(mc_bundle).data['root'])
    valid = read_chexpert_csv(root/'valid.csv', root=root).head(3).copy()
    a8 = [np.asarray(Image.open(f).convert('L')) for f in valid.file]
    deep = np.rint(a8[0] * (4095 / 255)).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path/'sixteen.png')
    Image.fromarray(a8[1]).convert('RGBA').save(tmp_path/'rgba.png')
    (tmp_path/'x.dcm').write_bytes(make_dicom(np.rint(a8[2] * (4095 / 255)).astype(np.uint16)))
    valid['file'] = [str(tmp_path/n) for n in ('sixteen.png', 'rgba.png', 'x.dcm')]
    learn = _learner(mc_bundle, valid)
    with learn.no_bar(): ref = learn.get_preds(dl=learn.dls.valid)[0].numpy()
    ours = Predictor.from_bundle(mc_bundle, device='cpu', calibrated=False).predict(list(valid.file))
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(ours, Predictor.from_bundle(mc_bundle, device='cpu', calibrated=False).predict(
        [Image.fromarray(a) for a in a8]), atol=2e-3)  # the 8-bit originals: the same up to JPEG's rounding


def test_gradcam_on_a_real_radiograph(mc_bundle, nih_dir):
    from chexpert_nb.heatmaps import gradcam
    pred = Predictor.from_bundle(mc_bundle, device='cpu')
    png = sorted((nih_dir/'originals').glob('*.png'))[0]
    for obs in ('Atelectasis', 'Edema'):  # U-MultiClass and binary
        h = gradcam(pred, png, obs)
        assert h.shape == (1024, 1024) and np.isfinite(h).all() and 0 <= h.min() <= h.max() <= 1


class _Run:
    "What a command printed and its exit status (`testing.run_cli`: in this process, no fresh torch import per call)."
    def __init__(self, returncode, stdout, stderr): self.returncode, self.stdout, self.stderr = returncode, stdout, stderr

def _predict(*args): return _Run(*run_cli(predict_cli, *args))


def test_chexpert_predict_end_to_end(mc_bundle, sample_dir, nih_dir, tmp_path):
    "Folders of real PNG originals and of a CheXpert-layout study tree plus a broken file: rows, study rows, exit 1."
    from types import SimpleNamespace
    cfg = SimpleNamespace(out=mc_bundle)
    (tmp_path/'broken.png').write_bytes(sorted((nih_dir/'originals').glob('*.png'))[0].read_bytes()[:5000])
    out = tmp_path/'predictions.csv'
    r = _predict(nih_dir/'originals', sample_dir/'valid', tmp_path/'broken.png', '--model', cfg.out, '--out', out, '--batch-size', 5)
    assert r.returncode == 1, r.stderr
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df.columns) == ['path', 'level', 'study', *OBSERVATIONS, 'error', 'ood_score', 'in_distribution', 'notes']
    images, studies = df[df.level == 'image'], df[df.level == 'study']
    valid = read_chexpert_csv(sample_dir/'valid.csv', root=sample_dir)
    assert len(images) == 12 + len(valid) + 1
    bad = images[images.path.str.endswith('broken.png')].iloc[0]
    assert 'broken.png is truncated or corrupt' in bad.error and bad['Edema'] == ''
    assert (images.error != '').sum() == 1
    multi = valid.groupby('study').size()
    assert len(studies) == (multi > 1).sum() and (studies.error == '').all()  # folders of 2..6 views
    assert not studies.path.str.endswith('originals').any()  # 12 patients in one folder: not a study
    s = multi.idxmax()  # a study with several views: its row is the maximum over them
    row = studies[studies.path.str.endswith(s)].iloc[0]
    views = images[images.path.str.contains(s + '/', regex=False)]
    assert np.isclose(float(row['Cardiomegaly']), views['Cardiomegaly'].astype(float).max())
    pred = Predictor.from_bundle(cfg.out, device='cpu')
    originals = images[images.path.str.contains('originals')]
    np.testing.assert_allclose(originals[OBSERVATIONS].astype(float).to_numpy(), pred.predict(list(originals.path)), atol=2e-6)
    r = _predict(nih_dir/'originals', '--model', cfg.out, '--out', tmp_path/'ok.csv')
    assert r.returncode == 0 and '12 images (0 failed)' in r.stderr, r.stderr


def test_chexpert_predict_usage_errors(tmp_path):
    r = _predict(tmp_path)
    assert r.returncode != 0 and '--model is required' in r.stderr
    r = _predict(tmp_path, '--model', tmp_path)
    assert r.returncode != 0 and 'no config.json' in r.stderr
    r = _predict(tmp_path, '--model', tmp_path, '--out', tmp_path/'no'/'such'/'p.csv')
    assert r.returncode != 0 and 'its folder does not exist' in r.stderr


@pytest.fixture(scope='module')
def tiny_model(tmp_path_factory):
    "A DenseNet-121 bundle with random weights at 32 px (no training): enough to exercise chexpert-predict."
    from chexpert_nb.testing import tiny_bundle
    return tiny_bundle(tmp_path_factory.mktemp('models')/'tiny', size=32)


def _unwritable(folder) -> bool:
    import tempfile
    try: os.close((t := tempfile.mkstemp(dir=folder))[0]); os.unlink(t[1]); return False
    except OSError: return True


def test_chexpert_predict_checks_arguments_before_reading_images(tiny_model, tmp_path):
    "Bad --batch-size, --max-views, --device, --engine and --out: a sentence (no traceback), no CSV, the image untouched."
    img = tmp_path/'x.jpg'; Image.new('L', (64, 64), 128).save(img); before = img.read_bytes()
    cases = {('--batch-size', 0): '--batch-size 0: it is the number of images per forward pass, at least 1',
             ('--max-views', -1): '--max-views -1: it is at least 0', ('--device', 'tpu0'): "--device 'tpu0' is not a device",
             ('--out', img): f'--out {img} is one of the inputs', ('--out', tmp_path): f'--out {tmp_path} is a folder',
             ('--out', tmp_path/'no'/'p.csv'): 'its folder does not exist', ('--engine', 'gpu'): "invalid choice: 'gpu'",
             ('--check', 'ignore'): "invalid choice: 'ignore'"}
    import torch
    if not torch.cuda.is_available(): cases[('--device', 'cuda')] = '--device cuda: no CUDA GPU is available here'
    if Path('/sys').is_dir() and _unwritable('/sys'): cases[('--out', '/sys/p.csv')] = '--out /sys/p.csv: cannot write in /sys'
    for (flag, value), msg in cases.items():
        args = ['--out', tmp_path/'p.csv', flag, value] if flag != '--out' else [flag, value]
        r = _predict(img, '--model', tiny_model, *args)
        assert r.returncode != 0 and msg in r.stderr and 'Traceback' not in r.stderr, (flag, value, r.stderr)
        assert not (tmp_path/'p.csv').exists() and img.read_bytes() == before
    assert img.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ['x.jpg']


def test_chexpert_predict_reports_what_it_skips_and_keeps_odd_names(tiny_model, tmp_path):
    "A folder with non-images: counted on stderr by kind; a non-UTF-8 file name keeps its row; few progress lines."
    d = tmp_path/'in'; d.mkdir()
    for i in range(30): Image.new('L', (40, 40), 8 * i).save(d/f'{i:02d}.png')
    (d/'a.gif').write_bytes(b'GIF89a'); (d/'b.gif').write_bytes(b'GIF89a'); (d/'r.pdf').write_bytes(b'%PDF-1.4')
    Image.new('L', (40, 40), 77).save(d/os.fsdecode(b'caf\xe9.png'))
    r = _predict(d, '--model', tiny_model, '--out', tmp_path/'p.csv', '--batch-size', 4)
    assert r.returncode == 0, r.stderr
    assert '3 skipped: 2 .gif, 1 .pdf (only JPEG, PNG and DICOM files are read)' in r.stderr, r.stderr
    assert 'processed 31/31 images' in r.stderr and r.stderr.count('processed ') <= 2, r.stderr  # not a line per image
    df = pd.read_csv(tmp_path/'p.csv', keep_default_na=False)
    assert len(df) == 31 and (df.error == '').all() and df.path.str.endswith('caf\\xe9.png').sum() == 1
    assert not list(tmp_path.glob('*.partial'))
    pred = Predictor.from_bundle(tiny_model, device='cpu')
    row = df[df.path.str.endswith('caf\\xe9.png')].iloc[0]
    np.testing.assert_allclose(row[OBSERVATIONS].astype(float).to_numpy(), pred.predict(Image.new('L', (40, 40), 77))[0], atol=1e-6)


def test_one_bad_dicom_costs_a_study_nothing(tiny_model):
    "The app's case: a good image and a DICOM whose pixel data is longer than Rows x Columns, in one study."
    import pydicom
    ds = pydicom.dcmread(io.BytesIO(make_dicom(np.arange(64, dtype=np.uint16).reshape(8, 8))))
    ds.PixelData = ds.PixelData * 3
    buf = io.BytesIO(); ds.save_as(buf, enforce_file_format=True)
    good = _bytes(Image.new('L', (64, 64), 200), 'PNG')
    pred = Predictor.from_bundle(tiny_model, device='cpu')
    r = pred.predict_study([('good.png', good), ('long.dcm', buf.getvalue())])
    assert list(r.errors) == ['long.dcm'] and 'long.dcm: its pixel data decodes to shape (3, 8, 8)' in r.errors['long.dcm']
    np.testing.assert_allclose(r.study.to_numpy(), pred.predict(good)[0], atol=1e-6)


def test_find_images_counts_an_unreadable_folder(tmp_path, monkeypatch):
    "A folder that cannot be listed is counted, not ignored (simulated: as root, permissions do not stop a listing)."
    from collections import Counter
    from chexpert_nb.batch import find_images, skipped_text
    (tmp_path/'ok').mkdir(); (tmp_path/'locked').mkdir()
    Image.new('L', (8, 8)).save(tmp_path/'ok'/'a.png'); (tmp_path/'ok'/'b.gif').write_bytes(b'GIF89a')
    scandir = os.scandir
    def guarded(path='.'):
        if str(path).endswith('locked'): raise PermissionError(13, 'Permission denied', str(path))
        return scandir(path)
    monkeypatch.setattr(os, 'scandir', guarded)
    skipped = Counter()
    assert list(find_images([tmp_path], skipped)) == [str(tmp_path/'ok'/'a.png')]
    assert skipped_text(skipped) == '1 skipped: 1 .gif; 1 unreadable folder'
