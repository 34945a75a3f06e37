"""The app in a real browser: `chexpert-app`, started outside the project, serves the package's page on a free port;
Playwright drives Debian's Chromium.

Timeouts are generous: on a busy 2-core machine the preheated kernel (torch, fastai, the model) takes a while."""
import os, re, signal, subprocess, sys, time
from pathlib import Path
import pytest
from conftest import ROOT
import test_app
from test_app import two_images, photograph
from chexpert_nb.testing import free_port, listening

ood_models = test_app.ood_models  # the fixture: the trained bundle with model.onnx and OOD statistics
CHROMIUM = Path('/usr/bin/chromium')
ARGS = ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-extensions']
ARTIFACTS = ROOT/'artifacts'
SLOW = 240_000  # ms: the longest wait for the page or for one study's results

if not CHROMIUM.exists():
    if os.environ.get('CI'): raise RuntimeError(f"{CHROMIUM} is missing: .ci/run installs it (apt-get install chromium)")
    pytest.skip(f"the browser test needs Debian's Chromium at {CHROMIUM}: apt-get install chromium",
                allow_module_level=True)


@pytest.fixture(scope='module')
def server(ood_models, tmp_path_factory):
    """`(url, log)` of `chexpert-app --models ood_models` (the trained bundle with model.onnx and out-of-distribution
    statistics), run from a folder outside the project, stopped by its PID."""
    env = {k: v for k, v in os.environ.items() if k != 'IN_TEST'}
    log = tmp_path_factory.mktemp('voila')/'voila.log'
    elsewhere = tmp_path_factory.mktemp('elsewhere')  # neither the project nor nbs/: the page comes from the package
    for attempt in range(3):  # another process may take the free port before Voila does
        port = free_port()
        proc = subprocess.Popen([str(Path(sys.executable).parent/'chexpert-app'), '--models', str(ood_models),
                                 '--port', str(port)], cwd=elsewhere, env=env, stdout=log.open('w'),
                                stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while proc.poll() is None and not listening(port) and time.time() < deadline: time.sleep(0.5)
        if proc.poll() is None and listening(port): break
        proc.kill(); proc.wait(30)
    else: pytest.fail(f"Voila did not start; its log:\n{log.read_text()[-3000:]}")
    yield f'http://127.0.0.1:{port}/', log, proc
    proc.send_signal(signal.SIGTERM)  # Voila shuts its kernels down on SIGTERM
    try: proc.wait(60)
    except subprocess.TimeoutExpired: proc.kill(); proc.wait(30)

@pytest.fixture(scope='module')
def page(server):
    from playwright.sync_api import sync_playwright
    url, log, _ = server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, timeout=120_000)
        page = browser.new_page(viewport={'width': 1280, 'height': 2000})
        page.set_default_timeout(SLOW)
        page.goto(url, timeout=SLOW)
        try: page.wait_for_selector('.chexpert-status[data-state="ready"]', timeout=SLOW)
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True); page.screenshot(path=str(ARTIFACTS/'app-not-ready.png'), full_page=True)
            raise AssertionError(f"the app did not get ready; Voila's log:\n{log.read_text()[-3000:]}")
        yield page
        browser.close()

def upload(page, files:list, study:int, state='done'):
    "Upload `files` (paths) with the app's button and wait for study number `study` to finish."
    with page.expect_file_chooser() as chooser:
        page.locator('.chexpert-app button.widget-upload').click()
    chooser.value.set_files([str(f) for f in files])
    want = f'.chexpert-status[data-state="{state}"]'
    if state == 'done': page.wait_for_selector(f'{want}:has-text("Study {study}:")')
    else: page.wait_for_selector(want)
    page.wait_for_function('document.querySelectorAll(".chexpert-status[data-state=busy]").length == 0')

def probabilities(page, cls='study-prob') -> list[float]:
    return [float(t) for t in page.locator(f'table.chexpert-table td.{cls}').all_inner_texts()]

@pytest.fixture(scope='module')
def files(sample_dir, tmp_path_factory):
    """Two views of one study (real X-rays where ../shared has them), a corrupt JPEG, a file over Voila's message
    limit, a 45 MB DICOM, a photograph."""
    from chexpert_nb.app import WEBSOCKET_MAX_BYTES
    d = tmp_path_factory.mktemp('uploads')
    (n1, b1), (n2, b2) = two_images(sample_dir)
    (d/n1).write_bytes(b1); (d/n2).write_bytes(b2)
    (d/'corrupt.jpg').write_bytes(b1[:len(b1) // 2])
    with open(d/'huge.dcm', 'wb') as f: f.truncate(WEBSOCKET_MAX_BYTES + 2**20)  # sparse; too large for one message
    import io, numpy as np
    from PIL import Image
    from chexpert_nb.images import make_dicom
    (d/'grace_hopper.jpg').write_bytes(photograph()[1])
    big = Image.open(io.BytesIO(b2)).convert('L').resize((4750, 4750))  # 12-bit, 45 MB: a large detector's DICOM
    (d/'large.dcm').write_bytes(make_dicom(np.asarray(big, dtype=np.uint16) * 16))
    return {'view1': d/n1, 'view2': d/n2, 'corrupt': d/'corrupt.jpg', 'huge': d/'huge.dcm', 'large': d/'large.dcm',
            'photo': d/'grace_hopper.jpg'}

def test_banner_and_model(page):
    assert 'not a medical device' in page.locator('.chexpert-banner').inner_text()
    assert 'tiny-densenet121' in page.locator('.chexpert-app select').first.inner_text()
    assert page.locator('#rendered_cells .jp-MarkdownCell').count() == 0  # the one-cell page, not the notebook

def test_one_xray(page, files):
    upload(page, [files['view1']], study=1)
    probs = probabilities(page)
    assert len(probs) == 14 and all(0 <= p <= 1 for p in probs)
    assert page.locator('.chexpert-card.card-ok').count() == 1
    page.wait_for_function('document.querySelectorAll(".chexpert-app .widget-image").length >= 3')  # thumb, chart, CAM

def test_two_views_study_level(page, files):
    upload(page, [files['view1'], files['view2']], study=2)
    assert page.locator('table.chexpert-table th.image-col').all_inner_texts() == [files['view1'].name, files['view2'].name]
    study = probabilities(page)
    views = probabilities(page, 'image-prob')
    assert len(study) == 14 and len(views) == 28
    for i, s in enumerate(study): assert s == max(views[2 * i], views[2 * i + 1])  # the study value is the max
    decisions = page.locator('table.chexpert-table td.decision').all_inner_texts()
    assert set(decisions) <= {'positive', 'negative', 'no threshold'} and 'no threshold' in decisions
    assert len(set(decisions)) > 1  # the bundle has thresholds for half of the observations
    assert '2 image(s) read' in page.locator('.chexpert-status').inner_text()
    page.wait_for_function('document.querySelectorAll(".chexpert-app .chexpert-card img").length >= 4')
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS/'app-two-views.png'), full_page=True)

def test_bad_files_and_the_page_keeps_working(page, files):
    upload(page, [files['corrupt']], study=3, state='error')
    err = page.locator('.chexpert-card.card-error').inner_text()
    assert 'corrupt.jpg' in err and re.search('truncated|corrupt', err)
    assert not page.locator('table.chexpert-table').is_visible()
    upload(page, [files['huge'], files['view2']], study=4)  # too large: named and refused, the other file read
    assert 'up to 50 MB' in page.locator('.chexpert-card.card-error').inner_text()
    assert len(probabilities(page)) == 14
    page.wait_for_function('document.querySelectorAll(".chexpert-app .chexpert-card img").length >= 2')  # + Grad-CAM
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS/'app-bad-files.png'), full_page=True)

def test_a_45_mb_dicom(page, files):
    "Over a Jupyter server's default 10 MB websocket message: it arrives because `chexpert-app` raises Voila's limit."
    assert files['large'].stat().st_size > 40 * 2**20
    upload(page, [files['large']], study=5)
    assert '4750 x 4750' in page.locator('.chexpert-card.card-ok').inner_text()
    assert len(probabilities(page)) == 14

def test_a_photograph_is_flagged_an_xray_is_not(page, files):
    "The bundle's out-of-distribution statistics pass the X-ray and flag the photograph: the warning beside it only."
    from chexpert_nb.app import OOD_WARNING
    assert 'out-of-distribution check' in page.locator('.chexpert-app .model-info').inner_text()
    assert 'runs on ONNX Runtime' in page.locator('.chexpert-app .model-info').inner_text()
    upload(page, [files['view1'], files['photo']], study=6)
    cards = page.locator('.chexpert-card.card-ok')
    assert cards.count() == 2
    assert OOD_WARNING not in cards.nth(0).inner_text() and files['view1'].name in cards.nth(0).inner_text()
    assert OOD_WARNING in cards.nth(1).inner_text() and 'grace_hopper.jpg' in cards.nth(1).inner_text()
    assert page.locator('.chexpert-card.card-ood').first.inner_text().startswith('grace_hopper.jpg')
    assert page.locator('table.chexpert-table th.image-col.ood-flagged').all_inner_texts() == ['grace_hopper.jpg']
    assert page.locator('table.chexpert-table td.image-prob.ood-flagged').count() == 14
    assert len(probabilities(page, 'image-prob')) == 28  # the photograph's numbers are still shown, greyed
    grey = page.locator('table.chexpert-table td.image-prob.ood-flagged').first.evaluate('e => getComputedStyle(e).color')
    assert grey == 'rgb(170, 170, 170)'
    assert '1 of 2 view(s) do not look like the chest X-rays' in page.locator('.chexpert-status').inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS/'app-photograph-flagged.png'), full_page=True)

def test_the_kernels_never_load_torch(server, page, files):
    "Light serving: on a bundle with model.onnx, the page's kernel (and the preheated one) read and draw Grad-CAM without torch."
    import psutil
    upload(page, [files['view1']], study=7)
    page.wait_for_function('document.querySelectorAll(".chexpert-app .chexpert-card img").length >= 2')  # + Grad-CAM
    kernels = [p for p in psutil.Process(server[2].pid).children(recursive=True) if 'ipykernel' in ' '.join(p.cmdline())]
    assert kernels, 'no kernel process found under chexpert-app'
    for k in kernels:
        libs = {m.path for m in k.memory_maps()}
        assert not any('libtorch' in lib for lib in libs), f"kernel {k.pid} has loaded torch"
    assert any('onnxruntime' in m.path for k in kernels for m in k.memory_maps())  # the page's kernel runs ONNX Runtime
