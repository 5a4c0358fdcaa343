#!/usr/bin/env python3
"""Drives the stsgate stack that scripts/test-container runs with docker-compose.yml.

  stack.py ready URL                 wait until URL/readyz answers 200
  stack.py seed ADMIN_URL            sign in to the admin pages and create an app, its JWT
                                     settings (HS256) and a policy template, as a browser would
  stack.py credential API_URL        get a credential with a JWT signed here and check its shape
                                     (and, with --emulator, that the emulator issued it)
  stack.py cluster URL... --emulator E  every replica counts them all as live members, and 30
                                     identical requests spread over them make one STS call

Secrets come from the environment, never from arguments: STSGATE_TEST_ADMIN_PASSWORD (seed) and
STSGATE_TEST_HS_SECRET (seed, credential). Exits non-zero with one line saying what was wrong.
(A later `stsgate apply` command will replace `seed`.)
"""

import argparse
import base64
import concurrent.futures
import hashlib
import hmac
import json
import os
import re
import sys
import time
from html.parser import HTMLParser

import requests

APP = "container-demo"
REGION = "ap-guangzhou"
BUCKET = "examplebucket-1250000000"
# The emulator account docker-compose.yml starts (`--account AKIDEXAMPLE:SECRETKEYEXAMPLE:…`).
EMULATOR_SECRET_ID = "AKIDEXAMPLE"
EMULATOR_SECRET_KEY = "SECRETKEYEXAMPLE"
ISSUER = "https://idp.container.test"
AUDIENCE = "container-test"
TIMEOUT = 10


class Failed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failed(message)


def env_secret(name):
    value = os.environ.get(name, "")
    check(value, f"{name} is not set")
    return value


# ---- ready


def wait_ready(url, timeout):
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            r = requests.get(f"{url}/readyz", timeout=2)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except requests.RequestException as e:
            last = type(e).__name__
        time.sleep(0.5)
    raise Failed(f"{url}/readyz not ready after {timeout} s ({last})")


# ---- seed: the admin pages over HTTP


class FormReader(HTMLParser):
    """The fields of the form posting to `action`, as a browser would submit them untouched."""

    def __init__(self, action):
        super().__init__()
        self.action = action
        self.inside = False
        self.found = False
        self.fields = []
        self.textarea = None
        self.errors = []
        self.in_error = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.inside = a.get("action") == self.action
            self.found = self.found or self.inside
        elif tag == "span" and "field-error" in (a.get("class") or ""):
            self.in_error = True
        elif not self.inside:
            return
        elif tag == "input" and a.get("name"):
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self.fields.append((a["name"], a.get("value", "on")))
            elif kind not in ("submit", "button"):
                self.fields.append((a["name"], a.get("value") or ""))
        elif tag == "textarea" and a.get("name"):
            self.textarea = [a["name"], ""]

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False
        elif tag == "textarea" and self.textarea:
            self.fields.append(tuple(self.textarea))
            self.textarea = None
        elif tag == "span":
            self.in_error = False

    def handle_data(self, data):
        if self.textarea:
            self.textarea[1] += data
        if self.in_error:
            self.errors.append(data.strip())


class Admin:
    """A signed-in admin session. Its cookies are `Secure`: like a browser on 127.0.0.1, this
    client sends them over plain http to the loopback address it talks to (requests' own cookie
    jar would not), so it keeps them itself."""

    def __init__(self, base):
        self.base = base
        self.cookies = {}

    def request(self, method, path, **kwargs):
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        r = requests.request(method, f"{self.base}{path}", headers={"Cookie": cookie} if cookie else {},
                             timeout=TIMEOUT, allow_redirects=False, **kwargs)
        for c in r.cookies:
            self.cookies[c.name] = c.value
        return r

    def form(self, page, action):
        r = self.request("GET", page)
        check(r.status_code == 200, f"GET {page}: HTTP {r.status_code}")
        reader = FormReader(action)
        reader.feed(r.text)
        check(reader.found, f"GET {page}: no form posting to {action}")
        return reader.fields

    def post(self, action, fields, expect_location):
        r = self.request("POST", action, data=fields)
        location = r.headers.get("location", "")
        if r.status_code != 303 or not location.startswith(expect_location):
            reader = FormReader(action)
            reader.feed(r.text)
            errors = "; ".join(e for e in reader.errors if e) or r.text[:300]
            raise Failed(f"POST {action}: HTTP {r.status_code} to {location!r}: {errors}")

    def sign_in(self, username, password):
        fields = dict(self.form("/login", "/login"))
        check(fields.get("csrf"), "the sign-in form carries no CSRF token")
        fields.update(username=username, password=password)
        self.post("/login", fields, "/")
        r = self.request("GET", "/")
        check(r.status_code == 200 and "Dashboard" in r.text, f"after sign-in, / gave HTTP {r.status_code}")


def replace(fields, values, drop=()):
    """The form's fields with `values` replacing (or adding) those names; `drop` removes names."""
    names = set(values) | set(drop)
    kept = [(k, v) for k, v in fields if k not in names]
    for k, v in values.items():
        for item in v if isinstance(v, list) else [v]:
            kept.append((k, item))
    return kept


def seed(admin_url, sts_endpoint):
    admin = Admin(admin_url)
    admin.sign_in("admin", env_secret("STSGATE_TEST_ADMIN_PASSWORD"))

    fields = admin.form("/apps/_new", "/apps/_new")
    check(dict(fields).get("csrf"), "the new-app form carries no CSRF token")
    admin.post("/apps/_new", replace(fields, {
        "slug": APP,
        "name": "Container demo",
        "enabled": "on",
        "region": REGION,
        "bucket": BUCKET,
        "mode": "federation_token",
        "secret_id": EMULATOR_SECRET_ID,
        "secret_key": EMULATOR_SECRET_KEY,
        "sts_endpoint": sts_endpoint,
        "duration_default": "900",
        "duration_max": "3600",
        "rate_subject_per_minute": "600",
        "rate_app_per_second": "100",
    }), f"/apps/{APP}?notice=created")

    fields = admin.form(f"/apps/{APP}/jwt", f"/apps/{APP}/jwt")
    admin.post(f"/apps/{APP}/jwt", replace(fields, {
        "issuer": ISSUER,
        "audiences": AUDIENCE,
        "algorithms": ["HS256"],
        "hs_secret": env_secret("STSGATE_TEST_HS_SECRET"),
        "user_claim": "sub",
        "leeway_seconds": "30",
    }), f"/apps/{APP}?notice=saved")

    fields = admin.form(f"/apps/{APP}/policy", f"/apps/{APP}/policy")
    statement = re.compile(r"^st\d+_")
    fields = [(k, v) for k, v in fields if not statement.match(k)]
    admin.post(f"/apps/{APP}/policy", replace(fields, {
        "statement_count": "1",
        "prefix": "users/${sub}/",
        "st0_effect": "allow",
        "st0_actions": ["name/cos:PutObject", "name/cos:GetObject"],
        "st0_resources": "users/${sub}/*",
        "note": "seeded by scripts/test-container",
        "op": "save",
    }), f"/apps/{APP}/policy?notice=policy_saved")
    print(f"seeded app {APP}: STS endpoint {sts_endpoint}, HS256, policy users/${{sub}}/*")


# ---- credential: the public API


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_hs256(claims, secret):
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    signing_input = f"{header}.{body}".encode()
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{body}.{b64url(signature)}"


def credential(api_url, subject, emulator_url):
    secret = env_secret("STSGATE_TEST_HS_SECRET")
    now = int(time.time())
    token = jwt_hs256({"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": now, "exp": now + 300}, secret)
    url = f"{api_url}/v1/apps/{APP}/credentials"

    r = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)
    check(r.status_code == 200, f"GET {url}: HTTP {r.status_code}: {r.text[:300]}")
    check("no-store" in r.headers.get("cache-control", ""), "credentials without Cache-Control: no-store")
    check(r.headers.get("x-request-id"), "no x-request-id")
    c = r.json()
    creds = c.get("credentials") or {}
    for key in ("tmpSecretId", "tmpSecretKey", "sessionToken"):
        check(isinstance(creds.get(key), str) and creds[key], f"credentials.{key} missing or empty")
    check(isinstance(c.get("expiredTime"), int) and c["expiredTime"] > now, f"bad expiredTime {c.get('expiredTime')}")
    check(isinstance(c.get("startTime"), int) and c["startTime"] <= c["expiredTime"], "bad startTime")
    check(isinstance(c.get("expiration"), str) and c["expiration"].endswith("Z"), "bad expiration")
    check(c.get("requestId"), "no requestId")
    check(c.get("bucket") == BUCKET and c.get("region") == REGION, f"bucket/region {c.get('bucket')}/{c.get('region')}")
    check(c.get("prefix") == f"users/{subject}/", f"prefix {c.get('prefix')!r} is not the user's own")

    # A token signed with another secret is refused with the documented error shape.
    forged = jwt_hs256({"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": now, "exp": now + 300}, secret + "x")
    r = requests.get(url, headers={"Authorization": f"Bearer {forged}"}, timeout=TIMEOUT)
    check(r.status_code == 401, f"a forged JWT got HTTP {r.status_code}")
    check((r.json().get("error") or {}).get("code") == "invalid_token", f"a forged JWT got {r.text[:200]}")

    if emulator_url:
        tmp_id = creds["tmpSecretId"]
        r = requests.get(f"{emulator_url}/_emulator/credentials", params={"tmp_secret_id": tmp_id}, timeout=TIMEOUT)
        check(r.status_code == 200, f"emulator credentials: HTTP {r.status_code}")
        issued = r.json().get("issued") or []
        check(len(issued) == 1, f"the emulator did not issue {tmp_id}")
        check(issued[0].get("secret_id") == EMULATOR_SECRET_ID, "issued under another SecretId")
        resources = json.dumps(issued[0].get("policy"))
        check(f"users/{subject}/" in resources, "the session policy does not name the user's prefix")
    print(f"credential for {subject} via {api_url}: {creds['tmpSecretId'][:8]}…, expires {c['expiration']}")


# ---- cluster: the replicas behave as one gateway


def members(api_url):
    r = requests.get(f"{api_url}/metrics", timeout=TIMEOUT)
    check(r.status_code == 200, f"{api_url}/metrics: HTTP {r.status_code}")
    for line in r.text.splitlines():
        if line.startswith("stsgate_cluster_members "):
            return int(line.split()[1])
    raise Failed(f"{api_url}/metrics has no stsgate_cluster_members")


def cluster(api_urls, emulator_url):
    deadline = time.monotonic() + 15
    for url in api_urls:
        while members(url) != len(api_urls):
            check(time.monotonic() < deadline, f"{url} counts {members(url)} live members, not {len(api_urls)}")
            time.sleep(0.2)
    print(f"each of the {len(api_urls)} replicas counts {len(api_urls)} live members")

    secret = env_secret("STSGATE_TEST_HS_SECRET")
    now = int(time.time())
    token = jwt_hs256({"iss": ISSUER, "aud": AUDIENCE, "sub": f"shared-{now}", "iat": now, "exp": now + 300}, secret)
    since_ms = int(time.time() * 1000)

    def get(i):
        url = f"{api_urls[i % len(api_urls)]}/v1/apps/{APP}/credentials"
        r = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)
        check(r.status_code == 200, f"GET {url}: HTTP {r.status_code}: {r.text[:200]}")
        return r.json()["credentials"]["tmpSecretId"]

    with concurrent.futures.ThreadPoolExecutor(max_workers=30) as pool:
        ids = set(pool.map(get, range(30)))
    check(len(ids) == 1, f"30 identical requests got {len(ids)} different credentials")
    r = requests.get(f"{emulator_url}/_emulator/calls", params={"since_ms": since_ms}, timeout=TIMEOUT)
    check(r.status_code == 200, f"emulator calls: HTTP {r.status_code}")
    calls = [c for c in r.json().get("calls", []) if c.get("secret_id") == EMULATOR_SECRET_ID]
    check(len(calls) == 1, f"30 identical requests over {len(api_urls)} replicas made {len(calls)} STS calls, not 1")
    print(f"30 identical requests over {len(api_urls)} replicas: one credential, one STS call")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("ready")
    r.add_argument("url")
    r.add_argument("--timeout", type=float, default=120)
    s = sub.add_parser("seed")
    s.add_argument("admin_url")
    s.add_argument("--sts-endpoint", required=True)
    c = sub.add_parser("credential")
    c.add_argument("api_url")
    c.add_argument("--subject", required=True)
    c.add_argument("--emulator")
    k = sub.add_parser("cluster")
    k.add_argument("api_urls", nargs="+")
    k.add_argument("--emulator", required=True)
    a = p.parse_args()
    try:
        if a.command == "ready":
            wait_ready(a.url, a.timeout)
        elif a.command == "seed":
            seed(a.admin_url, a.sts_endpoint)
        elif a.command == "cluster":
            cluster(a.api_urls, a.emulator)
        else:
            credential(a.api_url, a.subject, a.emulator)
    except (Failed, requests.RequestException, ValueError) as e:
        print(f"stack.py {a.command}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
