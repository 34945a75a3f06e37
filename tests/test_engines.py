"""The two inference engines on real X-rays: ONNX Runtime gives torch's probabilities and heatmaps at the bundle's
default size (DenseNet-121, 320 px, random weights), and the ONNX path runs in a process without torch."""
import json, subprocess, sys, textwrap
from pathlib import Path
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip('onnxruntime')


@pytest.fixture(scope='session')
def onnx_bundle(tmp_path_factory):
    "A 320 px DenseNet-121 bundle with random weights and its model.onnx, exported once per session."
    from chexpert_nb.onnx import export_onnx
    from chexpert_nb.testing import tiny_bundle
    d = tiny_bundle(tmp_path_factory.mktemp('models')/'densenet121-320', size=320)
    export_onnx(d)
    return d


@pytest.fixture(scope='session')
def engines(onnx_bundle):
    from chexpert_nb.engines import TorchEngine, OnnxEngine
    return TorchEngine(onnx_bundle, threads=1), OnnxEngine(onnx_bundle, threads=1)


def _compare(engines, files, heatmaps=2):
    "Max |ONNX - torch| of the probabilities of `files` (and of the heatmaps of the first `heatmaps` files)."
    from chexpert_nb.images import load_image, image_batch
    from chexpert_nb.heatmaps import torch_cam, onnx_cam
    torch_engine, onnx_engine = engines
    batch = image_batch([load_image(f) for f in files], onnx_engine.config.size)
    pt, po = torch_engine.probs(batch), onnx_engine.probs(batch)
    assert po.shape == (len(files), 14) and po.dtype == np.float32
    heat = 0.
    for i in range(heatmaps):
        for obs in ('Cardiomegaly', 'Pleural Effusion', 'Edema'):
            ht, ho = torch_cam(torch_engine, batch[i:i + 1], obs), onnx_cam(onnx_engine, batch[i:i + 1], obs)
            assert ho.shape == ht.shape == (10, 10)
            heat = max(heat, float(np.abs(ho - ht).max()))
    return float(np.abs(po - pt).max()), heat


def test_real_xrays(nih_dir, engines):
    "16 real NIH radiographs (JPEG): the same probabilities to 1e-5 and heatmaps to 1e-4."
    files = sorted((nih_dir/'images').glob('*.jpg'))[:16]
    assert len(files) == 16, f"expected at least 16 JPEGs in {nih_dir/'images'}"
    probs, heat = _compare(engines, files)
    print(f"real X-rays: max |ONNX - torch| probabilities {probs:.1e}, heatmaps {heat:.1e}")
    assert probs <= 1e-5 and heat <= 1e-4, (probs, heat)


def test_synthetic_sample(sample_dir, engines):
    "The synthetic sample's JPEGs: the same probabilities to 1e-5 and heatmaps to 1e-4."
    files = sorted(sample_dir.rglob('*.jpg'))[:16]
    assert len(files) == 16, f"expected at least 16 JPEGs under {sample_dir}"
    probs, heat = _compare(engines, files)
    print(f"synthetic sample: max |ONNX - torch| probabilities {probs:.1e}, heatmaps {heat:.1e}")
    assert probs <= 1e-5 and heat <= 1e-4, (probs, heat)


NO_TORCH = textwrap.dedent('''
    import json, sys
    sys.modules['torch'] = None  # any `import torch` from here on raises ImportError
    bundle_dir, image, out = sys.argv[1:4]
    import numpy as np, onnxruntime as ort
    from PIL import Image
    from chexpert_nb.bundle import read_config
    config = read_config(bundle_dir)
    u8 = np.asarray(Image.open(image).convert('L').resize((config.size, config.size), Image.BILINEAR))[None, None]
    session = ort.InferenceSession(f"{bundle_dir}/{config.onnx['file']}", providers=['CPUExecutionProvider'])
    result = {'bundle_and_onnxruntime': session.run(['probs'], {'image': u8})[0].tolist()}
    from chexpert_nb.images import load_image, image_batch
    from chexpert_nb.engines import OnnxEngine
    from chexpert_nb.predict import Predictor
    from chexpert_nb.heatmaps import gradcam, onnx_cam
    engine = OnnxEngine(bundle_dir, threads=1)
    batch = image_batch([load_image(image)], config.size)
    result['engine'] = engine.probs(batch).tolist()
    result['heatmap_shape'] = list(onnx_cam(engine, batch, 'Edema').shape)
    result['predictor'] = Predictor.from_bundle(bundle_dir).predict(image).tolist()
    result['gradcam_shape'] = list(gradcam(Predictor.from_bundle(bundle_dir), image, 'Edema').shape)
    result['torch_imported'] = sys.modules.get('torch') is not None
    json.dump(result, open(out, 'w'))
''')


def test_onnx_path_without_torch(onnx_bundle, engines, sample_dir, tmp_path):
    "A fresh process where torch cannot be imported reads the bundle and gets the probabilities with ONNX Runtime."
    from chexpert_nb.images import image_batch, load_image
    image = sorted(sample_dir.rglob('*.jpg'))[0]
    out = tmp_path/'result.json'
    run = subprocess.run([sys.executable, '-c', NO_TORCH, str(onnx_bundle), str(image), str(out)],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert not result['torch_imported']
    expected = engines[0].probs(image_batch([load_image(image)], engines[0].config.size))
    np.testing.assert_allclose(result['bundle_and_onnxruntime'], expected, atol=1e-5)
    np.testing.assert_allclose(result['engine'], expected, atol=1e-5)
    np.testing.assert_allclose(result['predictor'], expected, atol=1e-5)
    assert result['heatmap_shape'] == [10, 10] and result['gradcam_shape'] == list(load_image(image).size[::-1])


class _Run:
    def __init__(self, returncode, stdout, stderr): self.returncode, self.stdout, self.stderr = returncode, stdout, stderr

def _cli(*args):
    "`chexpert-predict *args` in this process (`testing.run_cli`); the first check below runs in a fresh one."
    from chexpert_nb.batch import predict_cli
    from chexpert_nb.testing import run_cli
    return _Run(*run_cli(predict_cli, *args))


def test_self_check_on_both_engines_in_a_fresh_process(onnx_bundle, sample_dir, tmp_path):
    """`chexpert-predict --self-check`: an untouched bundle matches on torch and ONNX (exit 0); a stale model.onnx
    (the weights saved again since its export) DIFFERs on ONNX only (exit 1); predicting with it falls back to torch
    and says why; the thresholds line names the CSV that chose them."""
    import shutil
    from dataclasses import replace
    import torch
    from chexpert_nb.bundle import load_bundle, save_bundle, read_config, write_config, set_thresholds
    r = subprocess.run([str(Path(sys.executable).parent/'chexpert-predict'), 'x', '--model', str(onnx_bundle), '--self-check'],
                       capture_output=True, text=True)  # in a fresh process
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and all('reference outputs match' in l for l in lines), r.stdout
    assert 'torch (model.safetensors)' in lines[0] and 'onnx (model.onnx)' in lines[1]

    stale = tmp_path/'stale'; shutil.copytree(onnx_bundle, stale)
    record = read_config(stale).onnx
    model, config = load_bundle(stale)
    with torch.no_grad(): model[1][-1].weight.mul_(3)  # other weights: the probabilities move
    save_bundle(model, config, stale)
    write_config(replace(read_config(stale), onnx=record), stale)  # the old graph still recorded
    r = _cli('x', '--model', stale, '--self-check')
    assert r.returncode == 1, r.stdout + r.stderr
    torch_line, onnx_line = r.stdout.splitlines()
    assert 'match' in torch_line and 'DIFFER' in onnx_line and 'stale' in onnx_line and 'chexpert-export-onnx' in onnx_line

    image = sorted(sample_dir.rglob('*.jpg'))[0]
    set_thresholds(stale, {'Edema': 0.4}, 'youden', '/data/hospital/valid.csv', {'Edema': 31})
    r = _cli(image, '--model', stale, '--out', tmp_path/'p.csv')
    assert r.returncode == 0, r.stderr
    assert 'using the torch engine' in r.stderr and 'stale' in r.stderr and 'engine: torch' in r.stderr
    assert 'thresholds saved for 1 of 14 observations, chosen by youden on valid.csv (31 studies' in r.stderr, r.stderr
    r = _cli(image, '--model', stale, '--out', tmp_path/'p.csv', '--engine', 'onnx')
    assert r.returncode == 1 and 'self-check failed' in r.stderr and 'Traceback' not in r.stderr, r.stderr
    r = _cli(image, '--model', stale, '--out', tmp_path/'p.csv', '--engine', 'onnx', '--check', 'warn')
    assert r.returncode == 0 and 'engine: onnx' in r.stderr and 'self-check failed' in r.stderr, r.stderr
    assert 'warning: ' in r.stderr and '.py:' not in r.stderr  # a sentence, not Python's file:line

    gone = tmp_path/'gone'; shutil.copytree(onnx_bundle, gone); (gone/'model.onnx').unlink()
    r = _cli('x', '--model', gone, '--self-check')  # a graph the config records but the folder lacks: not a pass
    assert r.returncode == 1 and 'is missing although the config records it' in r.stdout, r.stdout
    r = _cli('x', '--model', onnx_bundle, '--self-check', '--check', 'bogus')
    assert r.returncode != 0 and "invalid choice: 'bogus'" in r.stderr and 'Traceback' not in r.stderr, r.stderr


def test_a_huge_graph_file_is_refused_before_it_is_read(onnx_bundle, tmp_path):
    "A model.onnx larger than any graph (a sparse 5 GB file here) is refused by its size, naming the limit, unread."
    import shutil
    from chexpert_nb.bundle import BundleError, WEIGHTS_MAX_MB
    from chexpert_nb.engines import OnnxEngine
    d = Path(shutil.copytree(onnx_bundle, tmp_path/'huge'))
    with open(d/'model.onnx', 'r+b') as f: f.truncate((WEIGHTS_MAX_MB + 1024) * 2**20)  # sparse: no disk used
    with pytest.raises(BundleError, match=f"more than the {WEIGHTS_MAX_MB:,} MB a graph"):
        OnnxEngine(d, threads=1)
