"""Every architecture of the model table through training, the bundle and both engines (tiny sizes); the default bundle's
extras (ONNX, calibration, OOD, model card)."""
import json
from pathlib import Path
import numpy as np, pytest, torch

from chexpert_nb.observations import OBSERVATIONS
from chexpert_nb.labels import to_probs, make_targets
from chexpert_nb.model import ARCHS, to_model_input
from chexpert_nb.train import TrainConfig, train_cli, load_frames, cached_bundle
from chexpert_nb.bundle import load_bundle, read_config
from chexpert_nb.calibration import MIN_PER_CLASS
from chexpert_nb.testing import run_cli

from train_helpers import TINY

# ---- the bundle a run writes, for every architecture ----

def test_the_default_bundle_carries_onnx_calibration_ood_and_a_card():
    "By default a run's bundle has model.onnx (equal to the weights), temperatures where enough labels allow, OOD statistics."
    import onnxruntime as ort
    from chexpert_nb.ood import load_ood
    on = cached_bundle()
    config = read_config(on)
    assert (on/'model.onnx').exists() and config.onnx['file'] == 'model.onnx'
    x = torch.randint(0, 256, (3, 1, 64, 64), dtype=torch.uint8)
    onnx_probs = ort.InferenceSession(str(on/'model.onnx'), providers=['CPUExecutionProvider']).run(['probs'], {'image': x.numpy()})[0]
    model, _ = load_bundle(on)
    with torch.no_grad(): ref = to_probs(model(to_model_input(x, **config.normalize)), config.policy).numpy()
    assert np.abs(onnx_probs - ref).max() <= 1e-5
    cfg = TrainConfig(**json.loads((on/'checkpoints'/'train_config.json').read_text()))
    y = make_targets(load_frames(cfg, Path(cfg.data))[1], 'U-Ignore')
    enough = {o for j, o in enumerate(OBSERVATIONS) if min((y[:, j] == 1).sum(), (y[:, j] == 0).sum()) >= MIN_PER_CLASS}
    assert enough and set(config.calibration['temperatures']) == enough, (config.calibration, enough)
    assert config.calibration['fitted_on']['n_images'] == {o: int(np.isin(y[:, OBSERVATIONS.index(o)], (0, 1)).sum()) for o in enough}
    arrays, info = load_ood(on)
    assert info['n_fit'] == config.data['n_train'] and arrays['precision'].shape == (1024, 1024)
    card = (on/'MODEL_CARD.md').read_text()
    assert 'synthetic' in card and 'not a medical device' in card

def _engines_agree(bundle:Path, image:Path):
    "The torch and ONNX engines give the same probabilities for one image of the bundle's own data."
    from chexpert_nb.predict import Predictor
    a, b = (Predictor.from_bundle(bundle, engine=e).predict(image) for e in ('torch', 'onnx'))
    assert a.shape == (1, 14) and np.abs(a - b).max() <= 1e-4, (a, b)

def test_resnet_trains_from_weights_on_disk_and_serves_in_both_engines(sample_dir, tmp_path):
    "--weights PATH (an air-gapped machine): a saved torchvision state dict is loaded, checked, trained from, served."
    import torchvision
    weights = tmp_path/'resnet18-imagenet.pth'
    torch.manual_seed(0); torch.save(torchvision.models.resnet18().state_dict(), weights)  # a stand-in with the right shapes
    out = tmp_path/'r18'
    code, _, stderr = run_cli(train_cli, '--data', sample_dir, '--out', out, '--arch', 'resnet18', '--weights', weights,
                              *TINY[1:], '--no-calibrate', '--no-ood')
    assert code == 0, stderr[-2000:]
    config = read_config(out)
    assert config.arch == 'resnet18' and config.pretrained and config.training['weights'] == str(weights)
    _engines_agree(out, next(sample_dir.rglob('*.jpg')))

def test_efficientnet_lite0_trains_offline_from_imagenet_and_serves_in_both_engines(sample_dir, tmp_path):
    "The pretrained Lite0 of the installed package, with the linear head: no download, ONNX equal to torch, the card says which head."
    out = tmp_path/'lite'
    code, _, stderr = run_cli(train_cli, '--data', sample_dir, '--out', out, '--arch', 'efficientnet_lite0', '--head', 'linear',
                              *TINY[1:], '--no-calibrate', '--no-ood')
    assert code == 0, stderr[-2000:]
    config = read_config(out)
    assert config.arch == 'efficientnet_lite0' and config.pretrained and config.normalize['mean'] != [0.485]
    model, _ = load_bundle(out)
    assert config.head == 'linear' and [type(m).__name__ for m in model[1]] == ['AdaptiveAvgPool2d', 'Flatten', 'Linear']
    assert "efficientnet_lite0` with a linear head" in (out/'MODEL_CARD.md').read_text()
    _engines_agree(out, next(sample_dir.rglob('*.jpg')))

@pytest.mark.parametrize('arch', list(ARCHS))
def test_every_arch_of_the_table_builds_for_one_gray_channel(arch):
    "Every row of the table builds from its torchvision or package name, takes one channel, and its head fits its body."
    from chexpert_nb.model import build_model
    model = build_model(arch, n_in=1, n_outputs=14, size=32).eval()
    with torch.no_grad(): features = model[0](torch.zeros(2, 1, 32, 32))
    with torch.no_grad(): assert features.ndim == 4 and model[1](features).shape == (2, 14)

_FIRST = {}
for _a, _row in ARCHS.items(): _FIRST.setdefault(_row.family, _a)
FAMILIES = list(_FIRST.values())  # the first row of each way of building and cutting (04_model's `Arch.family`): a new family is included

@pytest.mark.parametrize('arch', FAMILIES)
def test_one_arch_per_family_round_trips_a_bundle(arch, tmp_path):
    "A row of each family builds, saves a self-checked bundle, loads it with equal outputs, and runs in the torch engine."
    from chexpert_nb.testing import tiny_bundle
    from chexpert_nb.engines import TorchEngine
    out = tiny_bundle(tmp_path/arch, size=32, arch=arch)
    model, config = load_bundle(out)
    assert config.arch == arch
    x = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    with torch.no_grad(): ref = to_probs(model(to_model_input(x, **config.normalize)), config.policy).numpy()
    assert np.allclose(TorchEngine(out).probs(x.numpy()), ref, atol=1e-5)

@pytest.mark.slow
@pytest.mark.parametrize('arch', [a for a in ARCHS if a not in FAMILIES])
def test_every_arch_of_the_table_exports_to_onnx(arch, tmp_path):
    "Every other row through a self-checked bundle, ONNX and both engines (make test-slow, ~3 min; make test: a row per family)."
    from chexpert_nb.testing import tiny_bundle
    from chexpert_nb.onnx import export_onnx
    from chexpert_nb.engines import OnnxEngine, TorchEngine
    out = tiny_bundle(tmp_path/arch, size=32, arch=arch)
    export_onnx(out)
    x = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    assert np.abs(OnnxEngine(out).probs(x.numpy()) - TorchEngine(out).probs(x.numpy())).max() <= 1e-4
