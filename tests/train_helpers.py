"""What the training tests share: the tiny command-line options, the planted observations, the files of a bundle
without extras, and a bundle's AUROC recomputed from its weights."""
import json
from pathlib import Path
import torch

from chexpert_nb.observations import OBSERVATIONS
from chexpert_nb.sample import PATHOLOGIES
from chexpert_nb.labels import to_probs
from chexpert_nb.train import TrainConfig, load_frames, chexpert_dls
from chexpert_nb.metrics import auroc_table, nanmean
from chexpert_nb.bundle import load_bundle


TINY = ['--no-pretrained', '--size', '32', '--bs', '4', '--num-workers', '0', '--quiet', '--seed', '1']
NO_EXTRAS = ['--no-onnx', '--no-calibrate', '--no-ood']  # the ONNX export alone adds ~11 s to a tiny run: on only where tested
PLANTED = PATHOLOGIES + ['Support Devices']  # every observation with a drawn sign (No Finding is their absence)
BUNDLE_FILES = ['MODEL_CARD.md', 'checkpoints', 'config.json', 'history.csv', 'model.safetensors', 'validation.json']  # a run without --onnx etc.

def bundle_auroc(out:Path) -> float:
    "nanmean AUROC of the bundle in `out`, recomputed from its weights on its run's validation frame."
    model, config = load_bundle(out)
    cfg = TrainConfig(**json.loads((out/'checkpoints'/'train_config.json').read_text()))
    train_df, valid_df = load_frames(cfg, Path(cfg.data))
    dls = chexpert_dls(train_df, valid_df, cfg.size, cfg.bs, cfg.policy, cfg.blank, cfg.n_in, num_workers=0, device='cpu')
    probs, targs = [], []
    with torch.no_grad():
        for x, y in dls.valid: probs.append(to_probs(model(x), config.policy)); targs.append(y)
    idx = [OBSERVATIONS.index(t) for t in cfg.tasks]
    return nanmean(auroc_table(torch.cat(probs).numpy()[:, idx], torch.cat(targs).numpy()[:, idx], cfg.tasks))
