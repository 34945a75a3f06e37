"The 16-bit PNG rules of the image reader: sBIT scaled or not, burned-in marker blocks, 16-bit colour PNGs."
import io, struct, zlib
import numpy as np, pytest
from PIL import Image
from chexpert_nb.images import ImageLoadError, load_image
from chexpert_nb.sample import draw_synthetic

MAGIC = b'\x89PNG\r\n\x1a\n'


def _chunk(kind, data): return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))


def _png(arr):
    "A PNG of `arr` written by Pillow (uint8: 8-bit gray, uint16 2-D: 16-bit gray)."
    buf = io.BytesIO(); Image.fromarray(arr).save(buf, 'PNG'); return buf.getvalue()


def _raw_png(a, colour):
    "A 16-bit PNG of `a` (rows, cols, samples) in PNG colour type `colour` (2 RGB, 4 gray + alpha, 6 RGBA), written by hand."
    h, w = a.shape[:2]
    raw = b''.join(b'\0' + r.tobytes() for r in a.reshape(h, -1).astype('>u2'))
    return (MAGIC + _chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 16, colour, 0, 0, 0))
            + _chunk(b'IDAT', zlib.compress(raw)) + _chunk(b'IEND', b''))


def _with_sbit(png, *bits):
    "`png` with an sBIT chunk of `bits` (one per sample kind) before its image data."
    i = png.index(b'IDAT') - 4
    return png[:i] + _chunk(b'sBIT', bytes(bits)) + png[i:]


@pytest.fixture(scope='module')
def a8():
    "A 512 x 512 chest-like 8-bit image (the tester's size)."
    return draw_synthetic({'Cardiomegaly': 1}, np.random.default_rng(0), w=512, h=512)


def _mad(png, ref8, mask=None):
    "Mean absolute difference, in gray levels, between the loaded `png` and `ref8` saved as an 8-bit gray PNG and loaded."
    got, ref = np.asarray(load_image(png), float), np.asarray(load_image(_png(ref8)), float)
    assert got.shape == ref.shape
    d = np.abs(got - ref)
    return float(d[mask].mean() if mask is not None else d.mean())


def _deep(a8, bits): return np.rint(a8 * ((2 ** bits - 1) / 255)).astype(np.uint16)


@pytest.mark.parametrize('bits', [10, 12, 14])
def test_sbit_scaled_to_full_depth(a8, bits):
    "sBIT b with values scaled to 16 bits (value << (16 - b), the PNG spec): range [0, 65535], not clipped to white."
    png = _with_sbit(_png(_deep(a8, bits) << (16 - bits)), bits)
    assert _mad(png, a8) <= 1


@pytest.mark.parametrize('bits', [10, 12, 14])
def test_sbit_unscaled(a8, bits):
    "sBIT b with unscaled values (0 .. 2**b - 1, as hospital exports write them): range [0, 2**b - 1]."
    assert _mad(_with_sbit(_png(_deep(a8, bits)), bits), a8) <= 1


def test_sbit_dark_unscaled_image_keeps_its_darkness():
    "sBIT 10, values far below 1023: read as 10-bit values (not brightened to 8 bits)."
    ten = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 253)
    back = np.asarray(load_image(_with_sbit(_png(ten), 10)))
    assert np.array_equal(back, np.rint(ten * (255 / 1023)).astype(np.uint8))


@pytest.mark.parametrize('sbit', [None, 12])
@pytest.mark.parametrize('side', [1, 20, 36])  # one pixel, 0.15% and 0.49% of the pixels
def test_marker_block_moves_nothing(a8, sbit, side):
    "A burned-in block of 65535 on a 12-bit image (up to 0.5% of the pixels) changes nothing but itself, with or without sBIT 12."
    marked = _deep(a8, 12); marked[:side, :side] = 65535
    png = _png(marked) if sbit is None else _with_sbit(_png(marked), sbit)
    outside = np.ones(a8.shape, bool); outside[:side, :side] = False
    assert _mad(png, a8, outside) <= 1
    assert np.asarray(load_image(png))[:side, :side].min() == 255


def test_marker_block_on_scaled_sbit_image(a8):
    "A marker block on a spec-scaled 12-bit image (sBIT 12, value << 4): still the full 16-bit range."
    marked = _deep(a8, 12) << 4; marked[:20, :20] = 65535
    outside = np.ones(a8.shape, bool); outside[:20, :20] = False
    assert _mad(_with_sbit(_png(marked), 12), a8, outside) <= 1


def _colour_pngs(g16):
    "The gray 16-bit image `g16` as 16-bit RGB, RGBA (opaque) and gray + alpha (opaque) PNGs."
    opaque = np.full_like(g16, 65535)
    return {'RGB': _raw_png(np.stack([g16] * 3, -1), 2), 'RGBA': _raw_png(np.stack([g16] * 3 + [opaque], -1), 6),
            'LA': _raw_png(np.stack([g16, opaque], -1), 4)}


@pytest.mark.parametrize('bits', [12, 16])
@pytest.mark.parametrize('kind', ['RGB', 'RGBA', 'LA'])
def test_16bit_colour_png_is_not_dark(a8, bits, kind):
    "A 16-bit RGB, RGBA or gray + alpha PNG of 12- or 16-bit gray values reads back as the 8-bit image (PIL alone: almost black)."
    png = _colour_pngs(_deep(a8, bits))[kind]
    assert _mad(png, a8) <= 1
    if bits == 12: assert np.asarray(Image.open(io.BytesIO(png)).convert('L')).max() <= 16  # what PIL alone makes of it


def test_16bit_colour_png_with_sbit(a8):
    "sBIT on a 16-bit RGB PNG follows the gray rule: scaled (value << 4) and unscaled 12-bit values both read back."
    g12 = _deep(a8, 12)
    for g in (g12, g12 << 4):
        assert _mad(_with_sbit(_raw_png(np.stack([g] * 3, -1), 2), 12, 12, 12), a8) <= 1


def test_16bit_colour_luminance_and_alpha_as_8bit():
    "Colour and partial alpha at 16 bits give the 8-bit reader's gray (luminance, alpha composited onto black) within a level."
    rng = np.random.default_rng(1)
    rgba8 = rng.integers(0, 256, (64, 64, 4)).astype(np.uint8); rgba8[..., 3] = np.maximum(rgba8[..., 3], 1)
    rgba8[0, 0] = (255, 255, 255, 255)  # the 16-bit file's top value is 16-bit
    ref = np.asarray(load_image(Image.fromarray(rgba8, 'RGBA')), float)
    got = np.asarray(load_image(_raw_png(rgba8.astype(np.uint16) * 257, 6)), float)
    assert np.abs(got - ref).mean() <= 1 and np.abs(got - ref).max() <= 2
    rgb12 = np.rint(rgba8[..., :3] * (4095 / 255)).astype(np.uint16)  # 12-bit colour values, no alpha
    got = np.asarray(load_image(_raw_png(rgb12, 2)), float)
    assert np.abs(got - np.asarray(load_image(Image.fromarray(rgba8[..., :3])), float)).mean() <= 1


def test_16bit_colour_png_undecodable_is_refused(a8, monkeypatch):
    "Where OpenCV cannot decode a 16-bit colour PNG, an ImageLoadError names it and says to convert it, never a dark image."
    import cv2
    monkeypatch.setattr(cv2, 'imdecode', lambda *a, **k: None)
    with pytest.raises(ImageLoadError, match=r'scan\.png is a 16-bit colour PNG .* convert it to a 16-bit grayscale PNG'):
        load_image(_colour_pngs(_deep(a8, 12))['RGB'], name='scan.png')


def test_8bit_and_gray16_unchanged(a8):
    "8-bit gray and RGB PNGs, and 16-bit gray PNGs of 12- and 16-bit values without sBIT, read as before."
    assert np.array_equal(np.asarray(load_image(_png(a8))), a8)
    assert np.array_equal(np.asarray(load_image(_png(np.stack([a8] * 3, -1)))), a8)
    for bits in (12, 16): assert np.array_equal(np.asarray(load_image(_png(_deep(a8, bits)))), a8)


def test_16bit_colour_png_exif_orientation(a8):
    "An EXIF orientation (eXIf chunk) rotates a 16-bit colour PNG as it does an 8-bit one."
    exif = Image.Exif(); exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    def rotated(png): i = png.index(b'IDAT') - 4; return png[:i] + _chunk(b'eXIf', exif.tobytes()[6:]) + png[i:]
    g = a8[:, :300]
    ref = np.asarray(load_image(rotated(_png(np.stack([g] * 3, -1)))))  # an 8-bit RGB PNG with the same eXIf chunk
    assert ref.shape == (300, 512)  # the 8-bit reader applies it
    got = np.asarray(load_image(rotated(_raw_png(np.stack([_deep(g, 12)] * 3, -1), 2))))
    assert got.shape == ref.shape and np.abs(got.astype(int) - ref).mean() <= 1
