"Inference on real radiographs (the NIH sample in ../shared), the predictor against the fastai learner, and chexpert-predict."
import io, os, subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest
from PIL import Image
from chexpert_nb.data import OBSERVATIONS, read_chexpert_csv
from chexpert_nb.infer import ImageLoadError, load_image, Predictor
from chexpert_nb.testing import make_dicom

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
    "One real original as 16-bit PNG, RGBA, palette PNG, DICOM (MONOCHROME1, windowed, RLE): the same picture."
    a8 = np.asarray(Image.open(sorted((nih_dir/'originals').glob('*.png'))[0]).convert('L'))
    stretched = (a8.astype(float) - a8.min()) * 255 / (a8.max() - a8.min())
    a16 = a8.astype(np.uint16) * 257
    assert np.abs(np.asarray(load_image(_bytes(Image.fromarray(a16), 'PNG')), float) - stretched).max() <= 1
    assert np.array_equal(np.asarray(load_image(_bytes(Image.fromarray(a8).convert('RGBA'), 'PNG'))), a8)
    pal = Image.fromarray(a8).convert('P')
    assert np.array_equal(np.asarray(load_image(_bytes(pal, 'PNG'))), np.asarray(pal.convert('L')))
    a12 = a8.astype(np.uint16) * 16
    for data in (make_dicom(a12), make_dicom(4080 - a12, 'MONOCHROME1'), make_dicom(a12, transfer_syntax='1.2.840.10008.1.2.5'),
                 make_dicom(a12, rescale=(0.5, 100.0))):
        assert np.abs(np.asarray(load_image(data), float) - stretched).max() <= 1
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
def mc_run(sample_dir, tmp_path_factory):
    "A bundle trained briefly (64 px, 1 epoch, 3 input channels, Atelectasis U-MultiClass) and its learner."
    from chexpert_nb.labels import DEFAULT_POLICY
    from chexpert_nb.train import TrainConfig, train
    cfg = TrainConfig(data=str(sample_dir), out=str(tmp_path_factory.mktemp('models')/'mc'), pretrained=False, size=64,
                      n_in=3, epochs=1, bs=16, lr=2e-3, num_workers=0, checkpoint_every=10**6, augment=False,
                      policy=DEFAULT_POLICY | {'Atelectasis': 'U-MultiClass'})
    learn = train(cfg, quiet=True)
    return cfg, learn


def test_predictor_equals_the_trained_learner(mc_run, sample_dir):
    "The learner train() returns and the predictor over its bundle give the same probabilities on its validation images."
    from chexpert_nb.train import load_frames
    cfg, learn = mc_run
    pred = Predictor.from_bundle(cfg.out, device='cpu')
    assert pred.config.n_in == 3 and pred.config.n_outputs == 16
    _, valid = load_frames(cfg, sample_dir)
    with learn.no_bar(): ref = learn.get_preds(dl=learn.dls.valid)[0].numpy()
    ours = pred.predict([Path(f).read_bytes() for f in valid.file])
    assert ours.shape == ref.shape == (len(valid), 14)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_gradcam_on_a_real_radiograph(mc_run, nih_dir):
    cfg, _ = mc_run
    pred = Predictor.from_bundle(cfg.out, device='cpu')
    png = sorted((nih_dir/'originals').glob('*.png'))[0]
    for obs in ('Atelectasis', 'Edema'):  # U-MultiClass and binary
        h = pred.gradcam(png, obs)
        assert h.shape == (1024, 1024) and np.isfinite(h).all() and 0 <= h.min() <= h.max() <= 1


def _predict(*args):
    return subprocess.run([str(BIN/'chexpert-predict'), *map(str, args)], capture_output=True, text=True)


def test_chexpert_predict_end_to_end(mc_run, sample_dir, nih_dir, tmp_path):
    "Folders of real PNG originals and of a CheXpert-layout study tree plus a broken file: rows, study rows, exit 1."
    cfg, _ = mc_run
    (tmp_path/'broken.png').write_bytes(sorted((nih_dir/'originals').glob('*.png'))[0].read_bytes()[:5000])
    out = tmp_path/'predictions.csv'
    r = _predict(nih_dir/'originals', sample_dir/'valid', tmp_path/'broken.png', '--model', cfg.out, '--out', out, '--batch-size', 5)
    assert r.returncode == 1, r.stderr
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df.columns) == ['path', 'level', *OBSERVATIONS, 'error', 'ood_score', 'in_distribution']
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
    "Bad --batch-size, --max-views, --device and --out: a sentence (no traceback), no CSV, the image untouched."
    from fastcore.script import CliError
    from chexpert_nb.infer import predict_cli
    img = tmp_path/'x.jpg'; Image.new('L', (64, 64), 128).save(img); before = img.read_bytes()
    cases = {('batch_size', 0): '--batch-size 0: it is the number of images per forward pass, at least 1',
             ('max_views', -1): '--max-views -1: it is at least 0', ('device', 'tpu0'): "--device 'tpu0' is not a device",
             ('out', img): f'--out {img} is one of the inputs', ('out', tmp_path): f'--out {tmp_path} is a folder',
             ('out', tmp_path/'no'/'p.csv'): 'its folder does not exist'}
    import torch
    if not torch.cuda.is_available(): cases[('device', 'cuda')] = '--device cuda: no CUDA GPU is available here'
    if Path('/sys').is_dir() and _unwritable('/sys'): cases[('out', '/sys/p.csv')] = '--out /sys/p.csv: cannot write in /sys'
    for (arg, value), msg in cases.items():
        kw = {'out': str(tmp_path/'p.csv'), arg: str(value) if arg == 'out' else value}
        with pytest.raises(CliError) as e: predict_cli([str(img)], model=str(tiny_model), **kw)
        assert msg in str(e.value), (arg, value, str(e.value))
        assert not (tmp_path/'p.csv').exists() and img.read_bytes() == before
    for args, msg in ((('--batch-size', 0), 'at least 1'), (('--out', img), 'is one of the inputs')):  # as a command
        r = _predict(img, '--model', tiny_model, *args)
        assert r.returncode == 1 and msg in r.stderr and 'Traceback' not in r.stderr, r.stderr
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
    assert 'predicted 31/31 images' in r.stderr and r.stderr.count('predicted ') <= 2, r.stderr  # not a line per image
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
    from chexpert_nb.infer import find_images, skipped_text
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
