"""How fast the app's page is ready: `chexpert-app` (a preheated kernel) against `chexpert-app --cold` (the baseline).

Each rep starts a fresh server on a free port over a full-size bundle (DenseNet-121, 320 px, untrained weights: the
load time is what matters), waits until the server is up (and, preheated, until its kernel has run the notebook, as
it has long before a user arrives: until the server's processes stop using the CPU), then times Chromium from
`goto` until the app says its model is ready.
"""
import signal, socket, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, BENCH_DATA, header, med, spread, verdict

CHROMIUM = '/usr/bin/chromium'
ARGS = ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--no-first-run']


def full_size_bundle() -> Path:
    "A models folder with one 320 px DenseNet-121 bundle (random weights), made once."
    from chexpert_nb.testing import tiny_bundle
    models = BENCH_DATA/'app-models'
    out = models/'densenet121-320-untrained'
    if not (out/'model.safetensors').exists(): tiny_bundle(out, size=320, data={'synthetic': True})
    return models


def _cpu_seconds(proc) -> float:
    import psutil
    total = 0.0
    try:
        p = psutil.Process(proc.pid)
        for q in [p, *p.children(recursive=True)]:
            try: t = q.cpu_times(); total += t.user + t.system
            except psutil.Error: pass
    except psutil.Error: pass
    return total


def wait_idle(proc, window: float = 4.0, busy: float = 0.4, timeout: float = 600):
    "Wait until Voila and its kernels use less than `busy` CPU seconds in `window` seconds."
    deadline, last = time.time() + timeout, _cpu_seconds(proc)
    while time.time() < deadline:
        time.sleep(window)
        now = _cpu_seconds(proc)
        if now - last < busy: return
        last = now
    raise TimeoutError('the server never went idle')


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def page_ready_seconds(models: Path, preheat: bool, browser) -> float:
    "Start a server, wait until it is ready for a user, time one page load until the app is ready; stop it."
    port = _free_port()
    cmd = [str(Path(sys.executable).parent/'chexpert-app'), '--models', str(models), '--port', str(port),
           *([] if preheat else ['--cold'])]
    log = Path(tempfile.mkstemp(suffix='.log')[1])
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log.open('w'), stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 600
        while 'is running at' not in log.read_text():
            if proc.poll() is not None or time.time() > deadline: raise RuntimeError(log.read_text()[-2000:])
            time.sleep(0.5)
        wait_idle(proc)  # preheated: the kernel has run the notebook and loaded the model
        page = browser.new_page()
        t0 = time.perf_counter()
        page.goto(f'http://127.0.0.1:{port}/', timeout=600_000)
        page.wait_for_selector('.chexpert-status[data-state="ready"]', timeout=600_000)
        dt = time.perf_counter() - t0
        page.close()
        return dt
    finally:
        proc.send_signal(signal.SIGTERM)
        try: proc.wait(60)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait(30)
        log.unlink()


def main(reps: int = 2) -> int:
    from playwright.sync_api import sync_playwright
    header('app page ready: chexpert-app (a preheated kernel) vs chexpert-app --cold')
    models = full_size_bundle()
    times = {'preheated': [], 'cold': []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for _ in range(reps):  # alternated, so that load from other processes hits both alike
            for name in times: times[name].append(page_ready_seconds(models, name == 'preheated', browser))
        browser.close()
    for name, xs in times.items(): print(f"   {name:10s} {spread(xs)}")
    return verdict('app_page_ready_preheated_over_cold', med(times['preheated']) / med(times['cold']), 0.5)


if __name__ == '__main__': sys.exit(main())
