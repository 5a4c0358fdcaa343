"""Fixtures for the official-SDK interop suite.

The session fixture `emulator` starts the stsgate STS/COS emulator as a subprocess
(`emulator_launcher` gives tests `launch_emulator(extra_args)` for emulators of their own):

    $STSGATE_BIN emulator --listen 127.0.0.1:0 --account AKIDINTEROP:interopsecretkey:1250000000

(STSGATE_BIN defaults to <repo>/target/debug/stsgate), waits up to 30 s for the
line `stsgate emulator listening on http://127.0.0.1:PORT` on stdout, and kills
the process when the session ends.

Run:  $(scripts/interop-venv) -m pytest tests/interop -v
"""

import contextlib
import dataclasses
import os
import queue
import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "stsgate"

SECRET_ID = "AKIDINTEROP"
SECRET_KEY = "interopsecretkey"
APPID = "1250000000"
READY_TIMEOUT_S = 30
READY_RE = re.compile(r"stsgate emulator listening on (http://\S+)")

_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@dataclasses.dataclass(frozen=True)
class Emulator:
    url: str          # "http://127.0.0.1:PORT" (no trailing slash)
    host_port: str    # "127.0.0.1:PORT"
    secret_id: str
    secret_key: str
    appid: str
    pid: int


@pytest.fixture(scope="session", autouse=True)
def _no_proxies():
    """Both SDKs pick proxies up from the environment (tencentcloud-sdk-python's
    _get_proxy_from_env does a plain substring NO_PROXY match that never matches
    "127.0.0.1:PORT"), so make sure nothing routes loopback traffic elsewhere."""
    saved = {k: os.environ.pop(k) for k in _PROXY_VARS if k in os.environ}
    yield
    os.environ.update(saved)


@pytest.fixture(scope="session")
def emulator(_no_proxies):
    with launch_emulator() as emu:
        yield emu


@pytest.fixture
def emulator_launcher(_no_proxies):
    """`launch_emulator` for tests that need their own emulator (e.g. with --data-dir)."""
    return launch_emulator


@contextlib.contextmanager
def launch_emulator(extra_args=()):
    """Starts `stsgate emulator` (plus extra_args), yields an Emulator, stops it on exit."""
    binary = os.environ.get("STSGATE_BIN") or str(DEFAULT_BIN)
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        pytest.fail(
            "stsgate binary not found or not executable: %s "
            "(build it with `cargo build`, or set STSGATE_BIN)" % binary,
            pytrace=False,
        )

    stderr_file = tempfile.NamedTemporaryFile(prefix="stsgate-emulator-", suffix=".stderr", delete=False)
    cmd = [binary, "emulator", "--listen", "127.0.0.1:0",
           "--account", "%s:%s:%s" % (SECRET_ID, SECRET_KEY, APPID)] + list(extra_args)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=stderr_file, text=True, bufsize=1)

    # Read stdout on a thread for the whole session, so the readiness wait can
    # time out and the emulator can never block on a full stdout pipe.
    lines = queue.Queue()
    stdout_log = []

    def pump():
        for line in proc.stdout:
            stdout_log.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name="stsgate-emulator-stdout", daemon=True).start()

    def diagnostics():
        try:
            err = Path(stderr_file.name).read_text(errors="replace")[-4000:]
        except OSError:
            err = "<unreadable>"
        return "cmd: %s\nexit code: %s\nstdout:\n%s\nstderr (tail):\n%s" % (
            " ".join(cmd), proc.poll(), "".join(stdout_log)[-4000:], err)

    url = None
    deadline = time.monotonic() + READY_TIMEOUT_S
    while url is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            break
        if line is None:  # stdout closed: the process exited
            break
        m = READY_RE.search(line)
        if m:
            url = m.group(1).rstrip("/")

    if url is None:
        _stop(proc)
        pytest.fail("emulator did not report readiness within %d s\n%s" % (READY_TIMEOUT_S, diagnostics()),
                    pytrace=False)

    parsed = urlparse(url)
    emu = Emulator(url=url, host_port=parsed.netloc, secret_id=SECRET_ID,
                   secret_key=SECRET_KEY, appid=APPID, pid=proc.pid)
    try:
        yield emu
    finally:
        _stop(proc)
        stderr_file.close()
        try:
            os.unlink(stderr_file.name)
        except OSError:
            pass


def _stop(proc):
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
