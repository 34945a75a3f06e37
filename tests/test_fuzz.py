"""Fuzzing inference: real DICOM headers and image bytes, mutated (seeded), through `predict_to_csv` and `predict_study`.

Whatever a file holds, nothing but a row with its error comes out of it: no exception escapes, every input gets its
row, and every file gets in a batch exactly what it gets alone (a bad neighbour costs a good file nothing)."""
import io, os
from pathlib import Path
import numpy as np, pandas as pd, pytest
from PIL import Image
from chexpert_nb.observations import OBSERVATIONS
from chexpert_nb.sample import draw_synthetic
from chexpert_nb.images import make_dicom
from chexpert_nb.predict import Predictor
from chexpert_nb.batch import predict_files, predict_to_csv
from chexpert_nb.testing import tiny_bundle
from conftest import NIH

pytestmark = pytest.mark.filterwarnings('ignore')  # pydicom warns about every damaged file: the errors are the point

SEED, MUTANTS = 0, 16  # mutants per source file
PYDICOM_FILES = ['CT_small.dcm', 'MR_small.dcm', 'MR_small_RLE.dcm', 'MR_small_bigendian.dcm', 'SC_rgb.dcm',
                 'SC_rgb_16bit.dcm', 'SC_rgb_rle_16bit.dcm', 'SC_rgb_jpeg.dcm', 'SC_rgb_small_odd.dcm', 'JPEG2000.dcm',
                 'rtdose_1frame.dcm', 'image_dfl.dcm', 'badVR.dcm', 'MR_truncated.dcm', 'rtplan.dcm']


def _jpeg(arr, **kw):
    buf = io.BytesIO(); Image.fromarray(arr).save(buf, 'JPEG', **kw); return buf.getvalue()


def _sources() -> dict:
    "name -> bytes: DICOMs from make_dicom and pydicom's bundled test files, JPEG/PNG from the NIH sample (or synthetic)."
    rng = np.random.default_rng(SEED)
    a12 = rng.integers(0, 4096, (48, 40)).astype(np.uint16)
    src = {'mono2.dcm': make_dicom(a12), 'mono1.dcm': make_dicom(4095 - a12, 'MONOCHROME1'),
           'u8.dcm': make_dicom(a12.astype(np.uint8)), 'window.dcm': make_dicom(a12, window=(2048, 1024)),
           'rescale.dcm': make_dicom(a12, rescale=(0.5, -100.0)),
           'rle.dcm': make_dicom(a12, transfer_syntax='1.2.840.10008.1.2.5')}
    try:
        from pydicom.data import get_testdata_file
        for f in PYDICOM_FILES:
            p = get_testdata_file(f, download=False)  # bundled with pydicom: never downloaded
            if p and Path(p).is_file(): src['pydicom_' + f] = Path(p).read_bytes()
    except Exception: pass  # an older pydicom without these files: make_dicom's are enough
    if (NIH/'images').is_dir():
        for f in sorted((NIH/'images').glob('*.jpg'))[:5]: src['nih_' + f.name] = f.read_bytes()
        png = sorted((NIH/'originals').glob('*.png'))[:1]
        if png:  # a real 1024 x 1024 original, downscaled to keep the test fast, as PNG
            buf = io.BytesIO(); Image.open(png[0]).convert('L').resize((256, 256)).save(buf, 'PNG'); src['nih_original.png'] = buf.getvalue()
    else:
        for i in range(5): src[f'synthetic{i}.jpg'] = _jpeg(draw_synthetic({}, np.random.default_rng(i)), quality=90)
        buf = io.BytesIO(); Image.fromarray(draw_synthetic({}, rng)).save(buf, 'PNG'); src['synthetic.png'] = buf.getvalue()
    return src


def _mutate(data:bytes, rng) -> tuple[str, bytes]:
    "One seeded mutation of `data`: bytes overwritten (in a DICOM's header, mostly), cut, inserted, deleted or repeated."
    b = bytearray(data)
    pix = data.find(b'\xe0\x7f\x10\x00')  # the DICOM pixel data tag (7FE0,0010), little endian
    kind = rng.choice(['header', 'header', 'header', 'flip', 'cut', 'insert', 'delete', 'repeat'])
    if kind == 'header' and pix > 132:  # 1-4 bytes of the elements between the preamble and the pixel data
        for _ in range(rng.integers(1, 5)): b[rng.integers(132, pix + 12)] = rng.integers(0, 256)
    elif kind in ('header', 'flip'):
        kind = 'flip'
        for _ in range(rng.integers(1, 9)): b[rng.integers(0, len(b))] = rng.integers(0, 256)
    elif kind == 'cut': b = b[:rng.integers(0, len(b))]
    elif kind == 'insert': i = rng.integers(0, len(b)); b[i:i] = rng.integers(0, 256, rng.integers(1, 64)).astype(np.uint8).tobytes()
    elif kind == 'delete': i = rng.integers(0, len(b)); del b[i:i + rng.integers(1, 64)]
    else: b += b[-rng.integers(1, max(2, len(b) // 2)):]  # e.g. pixel data longer than Rows x Columns
    return kind, bytes(b)


@pytest.fixture(scope='module')
def fuzz_dir(tmp_path_factory):
    "A folder of the sources and their mutants; a few names are not valid UTF-8."
    d = tmp_path_factory.mktemp('fuzz')
    rng = np.random.default_rng(SEED)
    for name, data in _sources().items():
        stem, ext = os.path.splitext(name)
        (d/name).write_bytes(data)
        for k in range(MUTANTS):
            kind, mutant = _mutate(data, rng)
            fname = f"{stem}_{k:02d}_{kind}{ext}"
            if k == 0: fname = os.fsdecode(b'\xff') + fname  # undecodable byte in the name
            (d/fname).write_bytes(mutant)
    return d


@pytest.fixture(scope='module')
def predictor(tmp_path_factory):
    "A DenseNet-121 bundle with random weights at 32 px: real preprocessing and model, in milliseconds per image."
    return Predictor.from_bundle(tiny_bundle(tmp_path_factory.mktemp('models')/'tiny', size=32), device='cpu')


def _alone(predictor, paths) -> dict:
    "path -> (probabilities or None, error) of each file predicted on its own."
    return {r.path: (r.probs, r.error) for path in paths for r in predict_files(predictor, [path], batch_size=1)}


def _escaped(p:str) -> str:
    return p.encode('utf-8', 'surrogateescape').decode('utf-8', 'backslashreplace')


def test_fuzz_predict_to_csv(predictor, fuzz_dir, tmp_path):
    "Hundreds of mutants in one folder: one row each, with its error or exactly the probabilities it gets alone."
    paths = sorted(str(p) for p in fuzz_dir.iterdir())
    assert len(paths) >= 300, len(paths)
    alone = _alone(predictor, paths)
    n_bad = sum(err != '' for _, err in alone.values())
    assert 0.2 * len(paths) < n_bad < 0.95 * len(paths), n_bad  # the mutants do break files, not all of them
    for p, (probs, err) in alone.items():
        assert (probs is None) == (err != '') and (not err or p in err), (p, err)  # an error names its file
    out = tmp_path/'fuzz.csv'
    counts = predict_to_csv(predictor, [fuzz_dir], out, batch_size=7, show_progress=False, max_views=0)
    assert counts['images'] == len(paths) and counts['failed'] == n_bad and counts['skipped'] == {}
    df = pd.read_csv(out, keep_default_na=False).set_index('path')
    assert len(df) == len(paths) and (df.level == 'image').all()
    for p, (probs, err) in alone.items():
        row = df.loc[_escaped(p)]
        assert row.error == _escaped(err), p
        if probs is None: assert (row[OBSERVATIONS] == '').all(), p
        else: np.testing.assert_allclose(row[OBSERVATIONS].astype(float).to_numpy(), probs, atol=1e-6, err_msg=p)


def test_fuzz_predict_study(predictor, fuzz_dir):
    "Studies of five files mixing good and broken ones: every view gets its own result, the study their maximum."
    paths = sorted(fuzz_dir.iterdir())
    alone = _alone(predictor, [str(p) for p in paths])
    order = np.random.default_rng(SEED + 1).permutation(len(paths))
    for i in range(0, len(paths) - 4, 5):
        views = [paths[j] for j in order[i:i + 5]]
        r = predictor.predict_study([(p.name, p.read_bytes()) for p in views])
        assert len(r.per_image) == 5
        for k, p in enumerate(views):
            probs, err = alone[str(p)]
            assert (r.per_image.error[k] != '') == (err != ''), (p, r.per_image.error[k], err)
            if probs is not None: np.testing.assert_allclose(r.per_image.loc[k, OBSERVATIONS].to_numpy(float), probs, atol=1e-6)
        good = [alone[str(p)][0] for p in views if alone[str(p)][0] is not None]
        if good: np.testing.assert_allclose(r.study.to_numpy(), np.max(good, axis=0), atol=1e-6)
        else: assert r.study.isna().all()
