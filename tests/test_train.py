"Training end to end: chexpert-train, interruption and --resume, two processes under accelerate, the learning test."
import json, os, signal, socket, subprocess, sys, time
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch

from chexpert_nb.data import PATHOLOGIES, make_sample
from chexpert_nb.labels import to_probs
from chexpert_nb.train import TrainConfig, train, load_frames, chexpert_dls, auroc_table, nanmean
from chexpert_nb.bundle import load_bundle

BIN = Path(sys.executable).parent
TINY = ['--no-pretrained', '--size', '32', '--bs', '4', '--num-workers', '0', '--quiet', '--seed', '1']
NO_EXTRAS = ['--no-onnx', '--no-calibrate', '--no-ood']  # the ONNX export alone adds ~11 s to a tiny run: on only where tested
PLANTED = PATHOLOGIES + ['Support Devices']  # every observation with a drawn sign (No Finding is their absence)

def _run(args, **kw):
    return subprocess.run([str(BIN/'chexpert-train'), *map(str, args)], capture_output=True, text=True, **kw)

def _bundle_auroc(out:Path) -> float:
    "nanmean AUROC of the bundle in `out`, recomputed from its weights on its run's validation frame."
    model, config = load_bundle(out)
    cfg = TrainConfig(**json.loads((out/'checkpoints'/'train_config.json').read_text()))
    train_df, valid_df = load_frames(cfg, Path(cfg.data))
    dls = chexpert_dls(train_df, valid_df, cfg.size, cfg.bs, cfg.policy, cfg.blank, cfg.n_in, num_workers=0, device='cpu')
    probs, targs = [], []
    with torch.no_grad():
        for x, y in dls.valid: probs.append(to_probs(model(x), config.policy)); targs.append(y)
    from chexpert_nb.data import OBSERVATIONS
    idx = [OBSERVATIONS.index(t) for t in cfg.tasks]
    return nanmean(auroc_table(torch.cat(probs).numpy()[:, idx], torch.cat(targs).numpy()[:, idx], cfg.tasks))

def test_pretrained_without_weights_fails_loudly(sample_dir, tmp_path, monkeypatch):
    "The ImageNet download fails (injected, so the test holds with or without internet): a loud error, nothing left behind."
    import chexpert_nb.train as module
    def no_internet(arch): raise OSError("download.pytorch.org unreachable (a test)")
    monkeypatch.setattr(module, 'imagenet_weights', no_internet)
    with pytest.raises(SystemExit) as e:
        module.train_cli(['--data', str(sample_dir), '--out', str(tmp_path/'m'), '--size', '32', '--epochs', '1', '--quiet',
                          '--num-workers', '0'])
    assert 'could not load the ImageNet weights' in str(e.value) and '--no-pretrained' in str(e.value), str(e.value)
    assert not (tmp_path/'m').exists()  # the corrected command (--no-pretrained) is not told the folder holds a run

def test_help_lists_every_field_with_its_default():
    from dataclasses import fields
    r = subprocess.run([str(BIN/'chexpert-train'), '--help'], capture_output=True, text=True, env={**os.environ, 'COLUMNS': '200'})
    assert r.returncode == 0, r.stderr
    text = ' '.join(r.stdout.split())
    for f in fields(TrainConfig):
        flag = '--' + f.name.replace('_', '-')
        assert flag in text, flag
    for shown in ['--size SIZE images are squished to size x size (default: 320)', '--no-pretrained', '(default: True)',
                  '--tasks TASKS', '(default: Atelectasis,Cardiomegaly,Consolidation,Edema,Pleural Effusion)',
                  '--layout {chexpert,flat}', '--resume', '--quiet']:
        assert shown in text, shown

def test_permission_denied_names_the_path(sample_dir, tmp_path, monkeypatch):
    import chexpert_nb.train as module
    locked = sample_dir/'train.csv'
    def denied(path, **kw): raise PermissionError(13, 'Permission denied', str(locked))
    monkeypatch.setattr(module, 'read_chexpert_csv', denied)  # root reads everything: the refusal is injected
    with pytest.raises(SystemExit) as e:
        module.train_cli(['--data', str(sample_dir), '--out', str(tmp_path/'m'), *TINY])
    assert f'permission denied: {locked}' in str(e.value), str(e.value)
    assert not (tmp_path/'m').exists()

def test_failed_start_then_a_log_file_with_one_line_per_epoch(sample_dir, tmp_path):
    "An unreadable CSV fails cleanly; the corrected command into the same --out runs, and its log file has a line per epoch."
    out, broken = tmp_path/'m', tmp_path/'broken'
    broken.mkdir(); (broken/'train.csv').write_text('not,a\nCheXpert,csv\n')
    r = _run(['--data', broken, '--out', out, *TINY, *NO_EXTRAS])
    assert r.returncode != 0 and 'train.csv' in r.stderr and 'Traceback' not in r.stderr, r.stderr[-2000:]
    assert not out.exists()
    log = tmp_path/'train.log'
    args = [a for a in TINY if a != '--quiet'] + NO_EXTRAS  # progress as a user sees it, written to a file
    with open(log, 'w') as f:
        r = subprocess.run([str(BIN/'chexpert-train'), '--data', str(sample_dir), '--out', str(out), '--epochs', '2', *args],
                           stdout=f, stderr=subprocess.PIPE, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = log.read_text().splitlines()
    assert [l.split()[:2] for l in lines if l.startswith('epoch')] == [['epoch', '0'], ['epoch', '1']], lines
    assert len(lines) == 3 and lines[-1] == f'wrote the model bundle to {out}', lines
    assert json.loads((out/'config.json').read_text())['data']['synthetic'] is True  # the sample's marker file

def test_interrupted_run_resumes_from_its_last_checkpoint(sample_dir, tmp_path):
    out = tmp_path/'m'
    args = ['--data', sample_dir, '--out', out, '--epochs', '2', '--checkpoint-every', '3', *TINY, *NO_EXTRAS]
    p = subprocess.Popen([str(BIN/'chexpert-train'), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    last, t0 = out/'checkpoints'/'last.json', time.time()
    try:
        while time.time() - t0 < 300:  # wait for a checkpoint in the middle of the second epoch, then kill -9
            if last.exists() and json.loads(last.read_text())['epoch'] == 1 and json.loads(last.read_text())['batch'] > 0: break
            assert p.poll() is None, p.stdout.read().decode()[-2000:]
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL); p.wait()
    finally:
        if p.poll() is None: p.kill()
    state = json.loads(last.read_text())
    assert state['epoch'] == 1 and state['batch'] in (3, 6, 9) and not (out/'model.safetensors').exists()
    assert (out/'checkpoints'/f"{state['file']}.pth").exists()
    lock = out/'checkpoints'/'run.lock'
    assert json.loads(lock.read_text())['pid'] == p.pid  # killed: its lock is left behind, stale
    sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:  # while a live process holds the folder, a second run is refused
        lock.write_text(json.dumps({'pid': sleeper.pid, 'host': socket.gethostname()}))
        r = _run(['--out', out, '--resume', '--quiet'])
        assert r.returncode != 0 and f'another training run (PID {sleeper.pid}' in r.stderr, r.stderr[-2000:]
    finally: sleeper.kill(); sleeper.wait()
    r = _run(['--out', out, '--resume', '--quiet'])
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'taking over the stale lock' in r.stdout and not lock.exists()
    assert f"resuming {out} at stage 1, epoch 1, batch {state['batch']}" in r.stdout
    end = json.loads(last.read_text())
    n = end['batches_per_epoch']
    assert end['epoch'] == 2 and end['batch'] == 0
    assert end['batches_run'] == n - state['batch']  # nothing before the checkpoint was trained again (epoch 0 skipped)
    history = pd.read_csv(out/'history.csv')
    assert history['epoch'].tolist() == [0, 1]  # one row per epoch across both runs: none for the skipped epoch 0
    assert r.stdout.count('epoch 1 train_loss') == 1 and 'epoch 0 train_loss' not in r.stdout
    assert (out/'model.safetensors').exists() and json.loads((out/'config.json').read_text())['pretrained'] is False
    r = _run(['--out', out, '--data', sample_dir, *TINY, *NO_EXTRAS])
    assert r.returncode != 0 and '--resume' in r.stderr  # never overwrites a run silently

def test_two_processes_with_accelerate_gather_the_validation_set(sample_dir, tmp_path):
    out = tmp_path/'ddp'
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    r = subprocess.run([str(BIN/'accelerate'), 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
                        '--mixed_precision', 'no', '--dynamo_backend', 'no', '-m', 'chexpert_nb.train',
                        '--data', str(sample_dir), '--out', str(out), '--epochs', '1', '--valid-pct', '0.3',
                        '--tasks', ','.join(PLANTED), *TINY, '--no-onnx'], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    assert 'distributed: 2 processes' in r.stdout and r.stdout.count('wrote the model bundle') == 1, r.stdout
    history = pd.read_csv(out/'history.csv')
    assert len(history) == 1
    # the AUROC logged during training is the one over the whole validation set (both processes' halves)
    assert np.isclose(history['nanmean_auroc'][0], _bundle_auroc(out), atol=1e-4)
    assert json.loads((out/'config.json').read_text())['ood']['n_fit'] > 0  # process 0 alone fits it; the other waits

def test_learns_the_planted_signs(tmp_path):
    "A short run on a synthetic sample reaches a mean AUROC >= 0.85 over the observations with planted signs."
    root = make_sample(tmp_path/'CheXpert-SYNTHETIC-sample', patients=150, seed=0)
    cfg = TrainConfig(data=str(root), out=str(tmp_path/'m'), pretrained=False, size=64, epochs=6, bs=16, lr=3e-3,
                      frontal_only=True, valid='official', tasks=PLANTED, num_workers=0, checkpoint_every=10_000,
                      onnx=False, calibrate=False, ood=False)
    train(cfg, quiet=True)
    best = json.loads((tmp_path/'m'/'config.json').read_text())['metrics']
    print({k: round(v, 3) for k, v in best.items() if v is not None})
    assert best['nanmean_auroc'] >= 0.85
    assert np.isclose(_bundle_auroc(tmp_path/'m'), best['nanmean_auroc'], atol=1e-4)

def test_self_trained_and_multiclass_policies_train_end_to_end(sample_dir, tmp_path):
    "U-SelfTrained trains twice (the second time on relabelled uncertain labels); U-MultiClass gets 3 outputs."
    policy = {'Edema': 'U-SelfTrained', 'Cardiomegaly': 'U-MultiClass'}
    cfg = TrainConfig(data=str(sample_dir), out=str(tmp_path/'m'), pretrained=False, size=32, epochs=1, bs=4,
                      policy=policy, num_workers=0, seed=1, onnx=False, calibrate=False, ood=False)
    learn = train(cfg, quiet=True)
    out = tmp_path/'m'
    assert pd.read_csv(out/'history.csv')['epoch'].tolist() == [0, 0]  # one epoch per stage
    relabel = np.load(out/'checkpoints'/'relabel.npy')
    train_df, _ = load_frames(cfg, sample_dir)
    assert relabel.shape == (len(train_df), 14) and ((relabel >= 0) & (relabel <= 1)).all()
    from chexpert_nb.data import OBSERVATIONS
    j = OBSERVATIONS.index('Edema')
    unc = (train_df['Edema'] == -1).to_numpy()
    assert unc.any()
    y = torch.stack(list(learn.dls.train_ds.tls[1])).numpy()  # the stage-2 targets, read without the images
    assert np.allclose(y[unc, j], relabel[unc, j]) and set(np.unique(y[~unc, j])) <= {0.0, 1.0}
    model, config = load_bundle(out)
    assert config.n_outputs == 16 and config.policy['Cardiomegaly'] == 'U-MultiClass'
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 16)

def test_the_bundle_carries_onnx_calibration_and_ood_unless_switched_off(tmp_path):
    "By default a run's bundle has model.onnx, temperatures and out-of-distribution statistics; --no-* writes none of them."
    import onnxruntime as ort
    from chexpert_nb.bundle import read_config, load_ood, to_model_input
    from chexpert_nb.train import MIN_PER_CLASS
    from chexpert_nb.labels import make_targets
    from chexpert_nb.data import OBSERVATIONS
    root = make_sample(tmp_path/'CheXpert-SYNTHETIC-sample', patients=48, seed=0)  # 40% held out: some observations calibrate
    args = ['--data', root, '--epochs', '1', '--valid-pct', '0.4', '--ood-images', '30', *TINY]
    r = _run(['--out', tmp_path/'on', *args])
    assert r.returncode == 0, r.stderr[-3000:]
    on = tmp_path/'on'
    config = read_config(on)
    assert (on/'model.onnx').exists() and config.onnx['file'] == 'model.onnx'
    x = torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8)
    onnx_probs = ort.InferenceSession(str(on/'model.onnx'), providers=['CPUExecutionProvider']).run(['probs'], {'image': x.numpy()})[0]
    model, _ = load_bundle(on)
    with torch.no_grad(): ref = to_probs(model(to_model_input(x, **config.normalize)), config.policy).numpy()
    assert np.abs(onnx_probs - ref).max() <= 1e-5
    cfg = TrainConfig(**json.loads((on/'checkpoints'/'train_config.json').read_text()))
    y = make_targets(load_frames(cfg, root)[1], 'U-Ignore')
    enough = {o for j, o in enumerate(OBSERVATIONS) if min((y[:, j] == 1).sum(), (y[:, j] == 0).sum()) >= MIN_PER_CLASS}
    assert enough and set(config.calibration['temperatures']) == enough, (config.calibration, enough)
    assert config.calibration['fitted_on']['n_images'] == {o: int(np.isin(y[:, OBSERVATIONS.index(o)], (0, 1)).sum()) for o in enough}
    arrays, info = load_ood(on)
    assert info['n_fit'] == 30 and info['n_holdout'] == 30 and arrays['precision'].shape == (1024, 1024)
    assert 'calibrated' in r.stdout and 'out-of-distribution statistics from 30 training images' in r.stdout, r.stdout
    r = _run(['--out', tmp_path/'off', *args, *NO_EXTRAS])
    assert r.returncode == 0, r.stderr[-3000:]
    off = read_config(tmp_path/'off')
    assert not off.onnx and not off.calibration and not off.ood
    assert sorted(p.name for p in (tmp_path/'off').iterdir()) == ['checkpoints', 'config.json', 'history.csv', 'model.safetensors']
