"""`chexpert-app` under many visitors and hostile pages: a real server started outside the project, over a tiny
bundle, with small cull values. Pages are plain HTTP requests where that is enough, Debian's Chromium where a page
must run (to close it as a visitor does).

Kernels are counted as the server's `ipykernel_launcher` child processes; every wait is bounded."""
import os, re, signal, subprocess, sys, time, urllib.error, urllib.request
from pathlib import Path
import pytest
from chexpert_nb.testing import free_port, listening

psutil = pytest.importorskip('psutil')
CHROMIUM = Path('/usr/bin/chromium')
ARGS = ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-extensions']
APP = Path(sys.executable).parent/'chexpert-app'
TOKEN = 'a-test-token'
MAX_SESSIONS, CULL_IDLE, CULL_INTERVAL = 2, 6, 2



def start(args:list, cwd:Path, log:Path):
    "`(proc, port)`: `chexpert-app` with `args` on a free port, started in `cwd`, once it listens."
    env = {k: v for k, v in os.environ.items() if k != 'IN_TEST'}
    for attempt in range(3):  # another process may take the free port first
        port = free_port()
        proc = subprocess.Popen([str(APP), '--port', str(port), *args], cwd=cwd, env=env, stdout=log.open('w'),
                                stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while proc.poll() is None and not listening(port) and time.time() < deadline: time.sleep(0.5)
        if proc.poll() is None and listening(port): return proc, port
        proc.kill(); proc.wait(30)
    pytest.fail(f"chexpert-app did not start; its log:\n{log.read_text()[-3000:]}")

def stop(proc):
    proc.send_signal(signal.SIGTERM)  # Voila shuts its kernels down on SIGTERM
    try: proc.wait(60)
    except subprocess.TimeoutExpired: proc.kill(); proc.wait(30)

def kernels(proc) -> int:
    "The server's live kernels."
    n = 0
    for p in psutil.Process(proc.pid).children(recursive=True):
        try: n += 'ipykernel_launcher' in ' '.join(p.cmdline())
        except psutil.Error: pass
    return n

def warmed(log:Path) -> int:
    "How many times the server's preheated kernel has been ready (once at start, once after each page takes it)."
    return log.read_text().count('is filled with 1 kernel')

def wait_for(cond, timeout:float, what:str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond(): return
        time.sleep(0.5)
    pytest.fail(f"waited {timeout:.0f} s for {what}")

class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k): return None

def get(url:str, host:str|None=None, timeout:float=120) -> tuple[int, dict, str]:
    "`(status, headers, body)` of a GET that follows no redirect."
    req = urllib.request.Request(url, headers={'Host': host} if host else {})
    try:
        with urllib.request.build_opener(_NoRedirect).open(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e: return e.code, dict(e.headers), e.read().decode(errors='replace')


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    from chexpert_nb.testing import tiny_bundle
    d = tmp_path_factory.mktemp('models')
    tiny_bundle(d/'tiny-densenet121', data={'synthetic': True})
    return d

@pytest.fixture(scope='module')
def server(models, tmp_path_factory):
    "`(proc, base_url, log)`: chexpert-app with a token, 2 sessions at most and small cull values, started outside the project."
    cwd = tmp_path_factory.mktemp('elsewhere')  # neither the project nor nbs/
    log = tmp_path_factory.mktemp('log')/'app.log'
    proc, port = start(['--models', str(models), '--token', TOKEN, '--max-sessions', str(MAX_SESSIONS),
                        '--cull-idle', str(CULL_IDLE), '--cull-interval', str(CULL_INTERVAL)], cwd, log)
    wait_for(lambda: warmed(log) == 1, 120, 'the preheated kernel')
    yield proc, f'http://127.0.0.1:{port}/', log
    stop(proc)

def test_hostile_requests(server):
    proc, url, _ = server
    status, headers, _ = get(url)                                      # no token: to the login page, no kernel
    assert status == 302 and '/login' in headers['Location']
    assert get(f'{url}?token=wrong')[0] == 302
    assert get(f'{url}?token={TOKEN}', host='evil.example')[0] == 403  # DNS rebinding: a foreign Host is refused
    assert kernels(proc) == 1                                          # only the preheated one

def test_page_from_anywhere_and_idle_kernels_culled(server):
    "A GET that never opens the page's websocket (a script, a crashed tab) holds a kernel until it is culled."
    proc, url, _ = server
    status, _, body = get(f'{url}?token={TOKEN}', host='localhost')
    assert status == 200 and 'application/vnd.jupyter.widget-view+json' in body and '.chexpert-app' in body
    assert 'jp-MarkdownCell' not in body                               # the page, not the notebook's prose
    wait_for(lambda: kernels(proc) == 2, 60, "the page's kernel and the refilled preheated one")
    t0 = time.time()
    wait_for(lambda: kernels(proc) == 1, CULL_IDLE + 4 * CULL_INTERVAL + 20, 'the idle kernel to be culled')
    print(f"idle kernel culled {time.time() - t0:.1f} s after the pool refilled (cull_idle={CULL_IDLE} s)")

@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs Debian's Chromium at {CHROMIUM}")
def test_ten_visitors_then_all_leave(server):
    """10 pages opened one after the other: 2 get the app, 8 the busy page (no kernel); closed, the kernels go back to
    the preheated one. Each page is opened once the server is quiet (the preheated kernel ready again), since a
    preheated kernel that is warming counts as a session."""
    from playwright.sync_api import sync_playwright
    proc, url, log = server
    wait_for(lambda: kernels(proc) == 1, 60, 'a quiet server')
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, timeout=120_000)
        pages, statuses = [], []
        for i in range(10):
            n = warmed(log)
            page = browser.new_page()
            statuses.append(page.goto(f'{url}?token={TOKEN}', timeout=180_000).status)
            pages.append(page)
            if statuses[-1] == 200: wait_for(lambda: warmed(log) == n + 1, 120, 'the preheated kernel to be ready again')
        assert statuses == [200] * MAX_SESSIONS + [503] * (10 - MAX_SESSIONS), statuses
        busy = pages[-1]
        assert 'The app is busy' in busy.inner_text('body') and 'try again' in busy.inner_text('body')
        for page in pages[:MAX_SESSIONS]:
            page.wait_for_selector('.chexpert-status[data-state="ready"]', timeout=180_000)
            assert 'tiny-densenet121' in page.locator('.chexpert-app select').first.inner_text()
        assert kernels(proc) == MAX_SESSIONS + 1                       # the busy pages started none
        mark = len(log.read_text())
        for page in pages: page.goto('about:blank')                    # leaving runs the page's shutdown request
        t0 = time.time()
        wait_for(lambda: kernels(proc) == 1, CULL_INTERVAL + 20, "the closed pages' kernels to shut down")
        after = log.read_text()[mark:]
        gone = set(re.findall(r'Kernel shutdown: ([\w-]+)', after))
        assert len(gone) == MAX_SESSIONS, after
        for k in gone:  # shut down at their pages' request (the culler may race a slow shutdown, never come first)
            culled_at = after.find(f"({k}) with 0 connections")
            assert culled_at == -1 or after.index(f'Kernel shutdown: {k}') < culled_at, after
        print(f"{MAX_SESSIONS} kernels shut down {time.time() - t0:.1f} s after their pages closed")
        browser.close()

def test_token_required_off_loopback(models, tmp_path):
    "On 0.0.0.0 without --token, chexpert-app makes one and prints the URL with it; without it, no page."
    proc, port = start(['--ip', '0.0.0.0', '--models', str(models), '--cold'], tmp_path, tmp_path/'app.log')
    try:
        token = re.search(r'\?token=([\w-]+)', (tmp_path/'app.log').read_text()).group(1)
        assert len(token) >= 24
        status, headers, _ = get(f'http://127.0.0.1:{port}/')
        assert status == 302 and '/login' in headers['Location']
        assert get(f'http://127.0.0.1:{port}/?token={token}', host='evil.example')[0] == 200  # any Host, with the token
    finally: stop(proc)
