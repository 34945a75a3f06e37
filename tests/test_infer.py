"Inference on real radiographs (the NIH sample in ../shared), the predictor against the fastai learner, and chexpert-predict."
import io, os, subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest
from PIL import Image
from chexpert_nb.data import OBSERVATIONS, read_chexpert_csv
from chexpert_nb.infer import ImageLoadError, load_image, make_dicom, Predictor, predict_files

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
