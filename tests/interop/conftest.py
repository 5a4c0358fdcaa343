"""Fixtures for the official-SDK interop suite.

The session fixture `emulator` starts the stsgate STS/COS emulator as a subprocess
(`emulator_launcher` gives tests `launch_emulator(extra_args)` for emulators of their own):

    $STSGATE_BIN emulator --listen 127.0.0.1:0 --account AKIDINTEROP:interopsecretkey:1250000000

(STSGATE_BIN defaults to <repo>/target/debug/stsgate), waits up to 30 s for the
line `stsgate emulator listening on http://127.0.0.1:PORT` on stdout, and kills
the process when the session ends.

The session fixture `dev_gateway` runs the whole sandbox the README describes, so tests get
credentials from the REAL gateway (`dev_launcher` gives tests `launch_dev()` for instances of
their own, e.g. to change the policy template):

    psql $DATABASE_URL -c 'CREATE DATABASE stsgate_interop_<random>'
    DATABASE_URL=<that database> $STSGATE_BIN dev --data-dir <tmp>/dev \
        --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --emulator-listen 127.0.0.1:0

waits for <tmp>/dev/dev.json (written once everything is up), and at the end sends SIGINT,
requires exit code 0 (graceful shutdown) and drops the database. DATABASE_URL is the
maintenance database that scripts/test exports.

Run:  DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres $(scripts/interop-venv) -m pytest tests/interop -v
"""

import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse, urlsplit, urlunsplit

import pytest
import requests

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


# ---------------------------------------------------------------------------------------------
# `stsgate dev`: the real gateway (with its emulator) on a fresh database
# ---------------------------------------------------------------------------------------------

DEV_READY_TIMEOUT_S = 90   # a debug build migrating a fresh database on 2 shared cores
DEV_STOP_TIMEOUT_S = 40    # serve's shutdown_timeout_secs is 30


def _binary():
    binary = os.environ.get("STSGATE_BIN") or str(DEFAULT_BIN)
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        pytest.fail(
            "stsgate binary not found or not executable: %s "
            "(build it with `cargo build`, or set STSGATE_BIN)" % binary,
            pytrace=False,
        )
    return binary


def _maintenance_url():
    url = os.environ.get("DATABASE_URL")
    if not url:
        pytest.fail(
            "DATABASE_URL is not set: the gateway tests create their own database from it "
            "(scripts/test exports it; e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres)",
            pytrace=False,
        )
    if shutil.which("psql") is None:
        pytest.fail("psql is not installed (apt-get install postgresql-client)", pytrace=False)
    return url


def _psql(url, sql):
    r = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-Atqc", sql],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        pytest.fail("psql failed (%s): %s\n%s" % (sql, r.returncode, r.stderr), pytrace=False)
    return r.stdout


def _with_database(url, name):
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_jwt(secret, claims):
    """A compact HS256 JWS (RFC 7515/7519), the few lines the gateway's verifier must accept."""
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = ("%s.%s" % (header, payload)).encode()
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return "%s.%s.%s" % (header, payload, _b64url(signature))


@dataclasses.dataclass
class DevGateway:
    """A running `stsgate dev`: the facts of its dev.json plus helpers."""
    facts: dict
    data_dir: Path
    database_url: str
    binary: str
    pid: int

    @property
    def api_url(self):
        return self.facts["api_url"].rstrip("/")

    @property
    def emulator_url(self):
        return self.facts["emulator_url"].rstrip("/")

    @property
    def emulator_host_port(self):
        return urlparse(self.emulator_url).netloc

    @property
    def bucket(self):
        return self.facts["bucket"]

    @property
    def region(self):
        return self.facts["region"]

    @property
    def app(self):
        return self.facts["app"]

    def jwt(self, sub, ttl=600, **claims):
        now = int(time.time())
        body = {"sub": sub, "iss": self.facts["jwt_issuer"], "aud": self.facts["jwt_audience"],
                "iat": now, "exp": now + ttl}
        body.update(claims)
        return hs256_jwt(self.facts["jwt_hs256_secret"], body)

    def credentials_response(self, sub, **params):
        """GET /v1/apps/{app}/credentials with a JWT for `sub`; returns the requests.Response."""
        return requests.get("%s/v1/apps/%s/credentials" % (self.api_url, self.app), params=params,
                            headers={"Authorization": "Bearer " + self.jwt(sub)}, timeout=30)

    def credentials(self, sub, **params):
        """The JSON body of a successful credential request (fails the test otherwise)."""
        r = self.credentials_response(sub, **params)
        assert r.status_code == 200, "credentials for %s: HTTP %s %s" % (sub, r.status_code, r.text)
        assert r.headers.get("Cache-Control") == "no-store", r.headers
        return r.json()

    def issued_policy(self, tmp_secret_id):
        """The session policy the emulator's STS attached to a credential (test endpoint)."""
        r = requests.get(self.emulator_url + "/_emulator/credentials",
                         params={"tmp_secret_id": tmp_secret_id}, timeout=15)
        assert r.status_code == 200, r.text
        issued = [c for c in r.json()["issued"] if c["tmp_secret_id"] == tmp_secret_id]
        assert len(issued) == 1, r.text
        return issued[0]["policy"]

    def set_template(self, document, note):
        """`stsgate admin set-template` (policy as code) against this instance's database."""
        env = dict(os.environ, DATABASE_URL=self.database_url,
                   STSGATE_MASTER_KEY_FILE=str(self.data_dir / "master.key"))
        env.pop("STSGATE_BIN", None)  # not a setting; keeps the CLI from warning about it
        cmd = [self.binary, "admin", "set-template", "--app", self.app, "--file", "-", "--note", note]
        # cwd: keep a ./stsgate.toml in the caller's directory out of it.
        r = subprocess.run(cmd, input=json.dumps(document), capture_output=True, text=True,
                           env=env, cwd=str(self.data_dir), timeout=120)
        assert r.returncode == 0, "%s: exit %s\nstdout: %s\nstderr: %s" % (
            " ".join(cmd), r.returncode, r.stdout, r.stderr)
        return r.stdout


@pytest.fixture(scope="session")
def dev_launcher(_no_proxies):
    """`launch_dev` for tests that need a `stsgate dev` of their own."""
    return launch_dev


@pytest.fixture(scope="session")
def dev_gateway(_no_proxies):
    with launch_dev() as dev:
        yield dev


@contextlib.contextmanager
def launch_dev():
    """Fresh database + `stsgate dev` on free ports; yields a DevGateway; SIGINT and cleanup."""
    binary = _binary()
    maintenance = _maintenance_url()
    db_name = "stsgate_interop_%s" % secrets.token_hex(6)
    database_url = _with_database(maintenance, db_name)
    tmp = Path(tempfile.mkdtemp(prefix="stsgate-interop-dev-"))
    data_dir = tmp / "dev"
    facts_path = data_dir / "dev.json"
    stdout_path, stderr_path = tmp / "dev.stdout", tmp / "dev.stderr"
    _psql(maintenance, 'CREATE DATABASE "%s"' % db_name)
    proc = None
    try:
        cmd = [binary, "dev", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0",
               "--admin-listen", "127.0.0.1:0", "--emulator-listen", "127.0.0.1:0"]
        env = dict(os.environ, DATABASE_URL=database_url)
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                    cwd=str(tmp))

        def diagnostics():
            def tail(p):
                try:
                    return p.read_text(errors="replace")[-4000:]
                except OSError:
                    return "<unreadable>"
            return "cmd: %s\nexit code: %s\nstdout (tail):\n%s\nstderr (tail):\n%s" % (
                " ".join(cmd), proc.poll(), tail(stdout_path), tail(stderr_path))

        facts = None
        deadline = time.monotonic() + DEV_READY_TIMEOUT_S
        while facts is None:
            if proc.poll() is not None:
                pytest.fail("stsgate dev exited before writing dev.json\n" + diagnostics(), pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail("stsgate dev did not write %s within %d s\n%s" % (
                    facts_path, DEV_READY_TIMEOUT_S, diagnostics()), pytrace=False)
            try:
                facts = json.loads(facts_path.read_text())  # written atomically (tmp + rename)
            except (OSError, ValueError):
                time.sleep(0.1)
        missing = {"api_url", "admin_url", "admin_user", "admin_password", "app", "jwt_hs256_secret",
                   "jwt_issuer", "jwt_audience", "sample_jwt", "emulator_url", "emulator_secret_id",
                   "emulator_secret_key", "bucket", "region"} - facts.keys()
        assert not missing, "dev.json lacks %s: %s" % (sorted(missing), facts)
        assert facts_path.stat().st_mode & 0o777 == 0o600, oct(facts_path.stat().st_mode)

        yield DevGateway(facts=facts, data_dir=data_dir, database_url=database_url,
                         binary=binary, pid=proc.pid)

        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=DEV_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            pytest.fail("stsgate dev did not stop within %d s of SIGINT\n%s" % (
                DEV_STOP_TIMEOUT_S, diagnostics()), pytrace=False)
        if code != 0:
            pytest.fail("stsgate dev exited with %s after SIGINT (want 0: graceful shutdown)\n%s" % (
                code, diagnostics()), pytrace=False)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        _psql(maintenance, 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % db_name)
        shutil.rmtree(tmp, ignore_errors=True)
