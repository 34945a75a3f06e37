"""The picture of the app in `nbs/18_app.ipynb`: `chexpert-app` over a model, two views of one synthetic study
uploaded in Chromium (Playwright), the page saved as `nbs/images/app.png`. `make docs` runs it.

    python nbs/images/screenshot_app.py [--models DIR]   # default: a copy of the cached test model

Synthetic views only: images of ../shared are never committed, not even inside a picture."""
import argparse, shutil, signal, subprocess, sys, tempfile, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHROMIUM = '/usr/bin/chromium'

def main(models:Path|None, out:Path):
    from PIL import Image
    from playwright.sync_api import sync_playwright
    from chexpert_nb.train import cached_bundle
    from chexpert_nb.sample import make_sample
    from chexpert_nb.testing import free_port, listening
    work = Path(tempfile.mkdtemp(prefix='chexpert-screenshot-'))
    try:
        if models is None: models = work/'models'; cached_bundle(models/'tiny-densenet121')
        sample = make_sample(work/'CheXpert-SYNTHETIC-sample', patients=4, seed=3)
        views = sorted(next(p for p in sorted((sample/'valid').glob('patient*/study1')) if len(list(p.glob('*.jpg'))) > 1).glob('*.jpg'))[:2]
        port = free_port()
        server = subprocess.Popen([str(Path(sys.executable).parent/'chexpert-app'), '--models', str(models), '--port', str(port)],
                                  cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 180
            while not listening(port) and time.time() < deadline: time.sleep(0.5)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox'])
                page = browser.new_page(viewport={'width': 1100, 'height': 1400})
                page.goto(f'http://127.0.0.1:{port}/', timeout=180_000)
                page.wait_for_selector('.chexpert-status[data-state="ready"]', timeout=180_000)
                with page.expect_file_chooser() as chooser: page.locator('.chexpert-app button.widget-upload').click()
                chooser.value.set_files([str(v) for v in views])
                page.wait_for_selector('.chexpert-status[data-state="done"]', timeout=180_000)
                page.wait_for_function('document.querySelectorAll(".chexpert-app .chexpert-card img").length >= 4', timeout=180_000)
                shot = work/'app.png'
                page.screenshot(path=str(shot), full_page=True)
                browser.close()
        finally:
            server.send_signal(signal.SIGTERM)
            try: server.wait(60)
            except subprocess.TimeoutExpired: server.kill()
        img = Image.open(shot).convert('RGB')
        img.thumbnail((900, 4000)); img.save(out, optimize=True)
        print(f"wrote {out} ({img.size[0]} x {img.size[1]})")
    finally: shutil.rmtree(work, ignore_errors=True)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--models', type=Path, default=None)
    ap.add_argument('--out', type=Path, default=HERE/'app.png')
    a = ap.parse_args()
    main(a.models, a.out)
