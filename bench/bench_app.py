"""How fast the app's page is ready: `chexpert-app` (a preheated kernel) against `chexpert-app --cold` (the baseline).

Each rep starts a fresh server on a free port over a full-size bundle (DenseNet-121, 320 px, untrained weights: the
load time is what matters), waits until the server is up (and, preheated, until its kernel has run the notebook, as
it has long before a user arrives: until the server's processes stop using the CPU), then times Chromium from
`goto` until the app says its model is ready.

`python bench/bench_app.py --memory`: the memory of the page's kernel (RSS and USS, psutil) once the page is shown,
after a first prediction and after a heatmap, with a bundle that has model.onnx (the app's default engine, 'auto',
then runs ONNX Runtime and never imports torch). Target: under 400 MB until a heatmap is asked for.
"""
import os, signal, socket, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, BENCH_DATA, bench_sample, header, med, spread, verdict

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


# -- the kernel's memory: light serving (issue 14) ------------------------------------------------------------------

MEMORY_TARGET_MB = 400  # the kernel's RSS until a heatmap is asked for

def onnx_bundle() -> Path:
    "A models folder with one 320 px DenseNet-121 bundle (random weights) and its model.onnx, made once."
    from chexpert_nb.testing import tiny_bundle
    from chexpert_nb.bundle import ONNX_FILE
    from chexpert_nb.onnx import export_onnx
    models = BENCH_DATA/'app-models-onnx'
    out = models/'densenet121-320-onnx'
    if not (out/ONNX_FILE).exists():
        tiny_bundle(out, size=320, data={'synthetic': True})
        export_onnx(out)
    return models


def xray_bytes() -> tuple[str, bytes]:
    "One real NIH chest X-ray from ../shared when present, else one view of the synthetic sample."
    nih = ROOT.parent/'shared'/'data'/'nih-cxr14-sample'/'images'
    found = sorted(nih.glob('*.jpg')) if nih.exists() else sorted((bench_sample(4)/'train').rglob('*.jpg'))
    return found[0].name, found[0].read_bytes()


STEPS = {  # what the kernel runs, in order, as a visitor's page would
    'kernel started': 'import sys, os',
    'page shown (model loaded)': 'from chexpert_nb.app import ChexpertApp, study_table, table_html, bar_chart\n'
                                 'from chexpert_nb.predict import Predictor\n'
                                 'app = ChexpertApp({models!r}, lambda d: Predictor.from_bundle(d, engine={engine!r})); app.show()',
    'first prediction (table, chart)': 'items = [({name!r}, open({path!r}, "rb").read())]\n'
                                       'result = app.predictor.predict_study(items)\n'
                                       'table = study_table(result, app.predictor.thresholds); table_html(table); bar_chart(table)',
    'after a heatmap (the full upload)': 'app.analyse(items); assert len(app.cams.children) == 1, app.status.value',
}

PROBE = ('import json as _j, sys as _s\nprint(_j.dumps({"torch": "torch" in _s.modules, "onnxruntime": "onnxruntime" in _s.modules, '
         '"engine": getattr(getattr(globals().get("app"), "predictor", None), "engine", None).__class__.__name__}))')


def _run(kc, code: str) -> str:
    "Execute `code` in the kernel; its stdout, or raise with the kernel's traceback."
    out = []
    reply = kc.execute_interactive(code, timeout=600, output_hook=lambda m: out.append(m))
    if reply['content']['status'] != 'ok': raise RuntimeError('\n'.join(reply['content'].get('traceback', [])))
    return ''.join(m['content'].get('text', '') for m in out if m['msg_type'] == 'stream')


def kernel_memory(models:Path, engine:str, name:str, path:Path) -> dict:
    "Start a Jupyter kernel, run the app's page in it step by step on `engine`; its RSS (MB) after each step, printed with USS."
    import json, psutil
    from jupyter_client.manager import KernelManager
    print(f"   engine={engine!r}:", flush=True)
    km = KernelManager(kernel_name='python3')
    km.start_kernel(env={**os.environ, 'IN_TEST': ''})
    kc = km.client(); kc.start_channels(); kc.wait_for_ready(timeout=120)
    rss = {}
    try:
        proc = psutil.Process(km.provisioner.process.pid)
        for step, code in STEPS.items():
            _run(kc, code.format(models=str(models), name=name, path=str(path), engine=engine))
            mem = proc.memory_full_info()
            seen = json.loads(_run(kc, PROBE).strip().splitlines()[-1])
            rss[step] = mem.rss / 2**20
            print(f"   {step:36s} RSS {mem.rss / 2**20:7.1f} MB  USS {mem.uss / 2**20:7.1f} MB  "
                  f"torch imported: {seen['torch']}, onnxruntime: {seen['onnxruntime']}, engine: {seen['engine']}", flush=True)
    finally:
        kc.stop_channels(); km.shutdown_kernel(now=True)
    return rss


def memory_main() -> int:
    "The page's kernel on the app's default engine ('auto': ONNX Runtime here) and on torch (the baseline)."
    header("app kernel memory: the page, a first prediction, a heatmap (bundle with model.onnx)")
    models, (name, data) = onnx_bundle(), xray_bytes()
    path = Path(tempfile.mkstemp(suffix='-' + name)[1]); path.write_bytes(data)
    try: rss = {engine: kernel_memory(models, engine, name, path) for engine in ('auto', 'torch')}
    finally: path.unlink()
    step = 'first prediction (table, chart)'
    print(f"   RSS before a heatmap: auto {rss['auto'][step]:.0f} MB, torch {rss['torch'][step]:.0f} MB "
          f"(ratio {rss['auto'][step] / rss['torch'][step]:.2f})")
    return verdict('app_kernel_rss_mb_before_heatmap_over_400', rss['auto'][step] / MEMORY_TARGET_MB, 1.0)


if __name__ == '__main__': sys.exit(memory_main() if '--memory' in sys.argv else main())
