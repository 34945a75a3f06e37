"""The out-of-distribution score (09_ood) on real images: a bundle fitted on the synthetic sample flags real NIH
X-rays and photographs, passes new synthetic images at about its quantile, and scores the ONNX engine's features
as it scores torch's."""
import numpy as np
import pytest
from PIL import Image
from chexpert_nb.bundle import BundleError, load_bundle, save_bundle, OOD_FILE
from chexpert_nb.model import preprocess
from chexpert_nb.ood import fit_ood, in_distribution, load_ood, ood_scores, pooled_features, save_ood
from chexpert_nb.sample import make_sample
from chexpert_nb.testing import tiny_bundle


def _images(folder, split):
    return [Image.open(f).convert('L') for f in sorted((folder/split).rglob('*.jpg'))]


@pytest.fixture(scope='module')
def fitted(tmp_path_factory):
    """A 64 px DenseNet-121 bundle (random weights, BatchNorm statistics of the sample) with OOD statistics fitted on a
    synthetic sample's train images and thresholded on its valid images; plus a fresh sample (another seed)."""
    import torch
    from torch import nn
    tmp = tmp_path_factory.mktemp('ood')
    sample, fresh = make_sample(tmp/'sample', patients=48, seed=0), make_sample(tmp/'fresh', patients=16, seed=1)
    model, config = load_bundle(tiny_bundle(tmp/'bundle', size=64))
    train_imgs, valid_imgs = _images(sample, 'train'), _images(sample, 'valid')
    with torch.no_grad():  # as training leaves them: BatchNorm statistics of the training images
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)): m.reset_running_stats(); m.momentum = None
        model.train(); model(torch.stack([preprocess(i, config) for i in train_imgs[:64]])); model.eval()
    save_bundle(model, config, tmp/'bundle')
    f_fit, f_valid = pooled_features(model, train_imgs, config), pooled_features(model, valid_imgs, config)
    save_ood(tmp/'bundle', *fit_ood(f_fit, f_valid))
    fresh_imgs = _images(fresh, 'train') + _images(fresh, 'valid')
    return {'dir': tmp/'bundle', 'model': model, 'config': config, 'f_fit': f_fit, 'f_valid': f_valid,
            'f_fresh': pooled_features(model, fresh_imgs, config)}


def _flagged(fitted, images) -> float:
    arrays, info = load_ood(fitted['dir'])
    return 1 - in_distribution(ood_scores(pooled_features(fitted['model'], images, fitted['config']), arrays, info), info).mean()


def test_flags_real_xrays(fitted, nih_dir):
    files = sorted((nih_dir/'images').glob('*.jpg'))[:40]
    assert len(files) == 40
    flagged = _flagged(fitted, [Image.open(f).convert('L') for f in files])
    assert flagged >= 0.95, f"a synthetic-trained bundle flags only {flagged:.0%} of 40 real X-rays"


def test_flags_photographs(fitted):
    from sklearn.datasets import load_sample_images
    from matplotlib.cbook import get_sample_data
    photos = [Image.fromarray(a).convert('L') for a in load_sample_images().images]
    photos.append(Image.open(get_sample_data('grace_hopper.jpg')).convert('L'))
    crops = [p.crop((x, y, x + 200, y + 200)) for p in photos for x, y in ((0, 0), (150, 100), (250, 180))]
    flagged = _flagged(fitted, photos + crops)
    assert flagged >= 0.9, f"only {flagged:.0%} of {len(photos + crops)} photographs flagged"


@pytest.mark.parametrize('quantile', [0.9, 0.99])
def test_new_in_distribution_images_pass_near_the_quantile(fitted, quantile):
    arrays, info = fit_ood(fitted['f_fit'], fitted['f_valid'], quantile)
    passed = in_distribution(ood_scores(fitted['f_fresh'], arrays, info), info).mean()
    n = len(fitted['f_fresh'])
    tolerance = 3 * np.sqrt(quantile * (1 - quantile) / info['n_holdout']) + 1 / n  # the threshold's sampling error
    assert n >= 30 and abs(passed - quantile) <= max(tolerance, 0.05), (passed, quantile, info['n_holdout'], n)


def test_onnx_features_score_as_torch(fitted, tmp_path):
    "The ONNX engine's `features` output, pooled in numpy, gives torch's scores."
    import shutil
    pytest.importorskip('onnxruntime'); pytest.importorskip('onnxscript')
    import onnxruntime as ort
    from chexpert_nb.onnx import export_onnx
    d = tmp_path/'b'; shutil.copytree(fitted['dir'], d)
    path = export_onnx(d)
    imgs = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (80, 70), dtype=np.uint8)) for i in range(3)]
    u8 = np.stack([np.array(i.resize((64, 64), Image.BILINEAR)) for i in imgs])[:, None]
    features = ort.InferenceSession(str(path), providers=['CPUExecutionProvider']).run(['features'], {'image': u8})[0]
    arrays, info = load_ood(d)
    np.testing.assert_allclose(ood_scores(features.mean((2, 3)), arrays, info),
                               ood_scores(pooled_features(fitted['model'], imgs, fitted['config']), arrays, info), rtol=1e-3)


def test_damaged_file_refused(fitted, tmp_path):
    import shutil
    d = tmp_path/'b'; shutil.copytree(fitted['dir'], d)
    (d/OOD_FILE).write_bytes((d/OOD_FILE).read_bytes()[:-10])
    with pytest.raises(BundleError, match=OOD_FILE): load_ood(d)
