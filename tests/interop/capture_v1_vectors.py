#!/usr/bin/env python3
"""Capture known-answer vectors for the Tencent Cloud API "v1" signature
(HmacSHA1 / HmacSHA256) from the OFFICIAL Python SDKs.

Nothing here re-implements the signer to produce expected values: every
`signature` below is the value the SDK itself computed.  The script only
  * pins the SDK's clock (time.time) and nonce (random.randint),
  * intercepts the outgoing HTTP request so no network is used,
  * records the exact string the SDK fed into HMAC and the exact params it sent,
  * then cross-checks by recomputing the string-to-sign the SDK's way and
    re-running HMAC on it (a failed cross-check aborts the script).

Run (from the repo root):
    $(scripts/interop-venv) tests/interop/capture_v1_vectors.py            # print JSON
    $(scripts/interop-venv) tests/interop/capture_v1_vectors.py --out tests/interop/v1_vectors.json
"""

import argparse
import base64
import hashlib
import hmac as real_hmac
import json
import sys
import types
import urllib.parse
from importlib import metadata

import requests

SECRET_ID = "AKIDEXAMPLE"
SECRET_KEY = "SECRETKEYEXAMPLE"
REGION = "ap-guangzhou"
TIMESTAMP = 1700000000
NONCE = 123456

# Policy string of vector E (reference tencent-sts.md section 1.9), verbatim.
VECTOR_E_POLICY = (
    "%7B%22version%22%3A%222.0%22%2C%22statement%22%3A%5B%7B%22effect%22%3A%22allow%22"
    "%2C%22action%22%3A%5B%22name%2Fcos%3APutObject%22%5D%2C%22resource%22%3A%5B%22qcs"
    "%3A%3Acos%3Aap-guangzhou%3Auid%2F1250000000%3Aexamplebucket-1250000000%2Fusers%2F42"
    "%2F%2A%22%5D%7D%5D%7D"
)

FAKE_SUCCESS = {
    "Response": {
        "Credentials": {"Token": "tok", "TmpSecretId": "AKIDtmp", "TmpSecretKey": "tmpkey"},
        "ExpiredTime": TIMESTAMP + 1800,
        "Expiration": "2023-11-14T22:43:20Z",
        "RequestId": "req-capture",
    }
}


def fixed_time_module():
    return types.SimpleNamespace(time=lambda: float(TIMESTAMP))


def fixed_random_module():
    return types.SimpleNamespace(randint=lambda a, b: NONCE)


class HmacRecorder:
    """Stand-in for the `hmac` module that records every message signed."""

    def __init__(self):
        self.calls = []

    def new(self, key, msg=None, digestmod=None):
        self.calls.append({"key": key, "msg": msg, "digestmod": getattr(digestmod, "__name__", str(digestmod))})
        return real_hmac.new(key, msg, digestmod)


def pkg_versions():
    out = {}
    for name in ("qcloud-python-sts", "tencentcloud-sdk-python-common",
                 "tencentcloud-sdk-python-sts", "requests"):
        out[name] = metadata.version(name)
    import tencentcloud
    # tencentcloud/__init__.py is shipped by BOTH -common and -sts; whichever
    # was installed last wins.  Its __version__ ends up in RequestClient, which
    # is part of the v1 string-to-sign of tencentcloud-sdk-python.
    out["tencentcloud.__version__"] = tencentcloud.__version__
    out["python"] = sys.version.split()[0]
    return out


# --------------------------------------------------------------------------
# qcloud-python-sts (sts.sts.Sts)
# --------------------------------------------------------------------------

def capture_qcloud_python_sts():
    import sts.sts as sts_mod
    from sts.sts import Sts, Tools

    recorder = HmacRecorder()
    captured = {}

    class FakeResponse:
        def json(self):
            return json.loads(json.dumps(FAKE_SUCCESS))

    def fake_post(url, proxies=None, data=None, **kw):
        captured["url"] = url
        captured["data"] = dict(data)
        captured["kwargs"] = {"proxies": proxies, **kw}
        # Exact bytes `requests` would put on the wire for this call.
        prep = requests.Request("POST", url, data=data).prepare()
        captured["wire_body"] = prep.body
        captured["wire_content_type"] = prep.headers.get("Content-Type")
        return FakeResponse()

    saved = (sts_mod.time, sts_mod.random, sts_mod.hmac, sts_mod.requests)
    sts_mod.time = fixed_time_module()
    sts_mod.random = fixed_random_module()
    sts_mod.hmac = recorder
    sts_mod.requests = types.SimpleNamespace(post=fake_post)
    try:
        config = {
            "secret_id": SECRET_ID,
            "secret_key": SECRET_KEY,
            "duration_seconds": 1800,
            "bucket": "examplebucket-1250000000",
            "region": REGION,
            "allow_prefix": "users/42/*",
            "allow_actions": ["name/cos:PutObject"],
        }
        result = Sts(config).get_credential()
    finally:
        sts_mod.time, sts_mod.random, sts_mod.hmac, sts_mod.requests = saved

    assert len(recorder.calls) == 1, recorder.calls
    sdk_string_to_sign = recorder.calls[0]["msg"].decode("utf-8")
    assert recorder.calls[0]["digestmod"] == "openssl_sha1", recorder.calls[0]

    data = captured["data"]
    sig = data["Signature"]
    sig_str = sig.decode("ascii") if isinstance(sig, bytes) else sig

    # Cross-check: recompute the string-to-sign the SDK's way (Sts.__encrypt).
    unsigned = {k: v for k, v in data.items() if k != "Signature"}
    recomputed = "POST" + "sts.tencentcloudapi.com" + "/?" + Tools.flat_params(unsigned)
    assert recomputed == sdk_string_to_sign, (recomputed, sdk_string_to_sign)
    check = base64.b64encode(real_hmac.new(SECRET_KEY.encode(), recomputed.encode(), hashlib.sha1).digest()).decode()
    assert check == sig_str, (check, sig_str)

    # Decoding: form layer -> Policy string -> URL-decoded JSON.
    form_decoded = dict(urllib.parse.parse_qsl(captured["wire_body"], keep_blank_values=True))
    assert form_decoded["Policy"] == data["Policy"]
    assert form_decoded["Signature"] == sig_str
    policy_json = urllib.parse.unquote(data["Policy"])

    return {
        "sdk": "qcloud-python-sts",
        "call": "Sts(config).get_credential()  -> GetFederationToken",
        "inputs": {
            "secret_id": SECRET_ID,
            "secret_key": SECRET_KEY,
            "region": REGION,
            "bucket": "examplebucket-1250000000",
            "allow_prefix": "users/42/*",
            "allow_actions": ["name/cos:PutObject"],
            "duration_seconds": 1800,
            "timestamp": TIMESTAMP,
            "nonce": NONCE,
            "url": captured["url"],
            "domain (signed host)": "sts.tencentcloudapi.com",
        },
        "http_method": "POST",
        "sign_method": "HmacSHA1",
        "form_fields": {k: (v.decode("ascii") if isinstance(v, bytes) else str(v)) for k, v in data.items()},
        "form_field_python_types": {k: type(v).__name__ for k, v in data.items()},
        "policy_url_decoded": policy_json,
        "string_to_sign": sdk_string_to_sign,
        "signature": sig_str,
        "wire_content_type": captured["wire_content_type"],
        "wire_body": captured["wire_body"],
        "notes": [
            "Policy = urllib.parse.quote(json.dumps(policy)) (safe='/', so '/' stays literal; "
            "json.dumps uses ', ' and ': ' separators, so spaces appear as %20).",
            "string_to_sign = 'POST' + domain + '/?' + '&'.join(k=str(v) for params sorted by key, Signature excluded); "
            "values are NOT encoded further.",
            "Signature = base64(HMAC-SHA1(secret_key, string_to_sign)); the SDK passes it to requests as bytes.",
            "On the wire requests form-encodes every field (quote_plus), so Policy is percent-encoded a second time.",
        ],
        "sdk_result_with_fake_response": result,
    }


# --------------------------------------------------------------------------
# tencentcloud-sdk-python (StsClient) with v1 signing
# --------------------------------------------------------------------------

def capture_tencentcloud_v1(sign_method, req_method):
    from tencentcloud.common import abstract_client as ac
    from tencentcloud.common import credential
    from tencentcloud.common.profile.client_profile import ClientProfile
    from tencentcloud.common.profile.http_profile import HttpProfile
    from tencentcloud.sts.v20180813 import models, sts_client

    sign_calls = []
    urlencode_calls = []
    real_sign = ac.Sign
    real_urlencode = ac.urlencode

    class RecordingSign(real_sign):
        @staticmethod
        def sign(secret_key, sign_str, sign_method):
            out = real_sign.sign(secret_key, sign_str, sign_method)
            sign_calls.append({"sign_str": sign_str, "sign_method": sign_method, "signature": out})
            return out

    def recording_urlencode(params, *a, **kw):
        urlencode_calls.append(dict(params))
        return real_urlencode(params, *a, **kw)

    sent = {}

    class FakeResp:
        status_code = 200
        headers = {"Content-Type": "application/json"}
        content = json.dumps(FAKE_SUCCESS).encode()

    def fake_send_request(req):
        sent["method"] = req.method
        sent["host"] = req.host
        sent["uri"] = req.uri
        sent["headers"] = dict(req.header)
        sent["data"] = req.data
        return FakeResp()

    saved = (ac.time, ac.random, ac.Sign, ac.urlencode)
    ac.time = fixed_time_module()
    ac.random = fixed_random_module()
    ac.Sign = RecordingSign
    ac.urlencode = recording_urlencode
    try:
        cred = credential.Credential(SECRET_ID, SECRET_KEY)
        hp = HttpProfile(reqMethod=req_method)  # default endpoint sts.tencentcloudapi.com
        cp = ClientProfile(signMethod=sign_method, httpProfile=hp)
        client = sts_client.StsClient(cred, REGION, cp)
        client.request.send_request = fake_send_request
        req = models.GetFederationTokenRequest()
        req.Name = "user42"
        req.Policy = VECTOR_E_POLICY
        req.DurationSeconds = 1800
        resp = client.GetFederationToken(req)
    finally:
        ac.time, ac.random, ac.Sign, ac.urlencode = saved

    assert len(sign_calls) == 1, sign_calls
    assert len(urlencode_calls) == 1, urlencode_calls
    sc = sign_calls[0]
    sent_params = urlencode_calls[0]
    signed_params = {k: v for k, v in sent_params.items() if k != "Signature"}
    assert sent_params["Signature"] == sc["signature"]

    # Cross-check: recompute the SDK's way (_format_sign_string + Sign.sign).
    recomputed = "%s%s%s?%s" % (req_method, "sts.tencentcloudapi.com", "/",
                                "&".join("%s=%s" % (k.replace("_", "."), signed_params[k])
                                         for k in sorted(signed_params)))
    assert recomputed == sc["sign_str"], (recomputed, sc["sign_str"])
    digest = {"HmacSHA1": hashlib.sha1, "HmacSHA256": hashlib.sha256}[sign_method]
    check = base64.b64encode(real_hmac.new(SECRET_KEY.encode(), recomputed.encode(), digest).digest()).decode()
    assert check == sc["signature"], (check, sc["signature"])

    out = {
        "sdk": "tencentcloud-sdk-python-sts (StsClient) + tencentcloud-sdk-python-common",
        "call": "StsClient.GetFederationToken",
        "inputs": {
            "secret_id": SECRET_ID,
            "secret_key": SECRET_KEY,
            "region": REGION,
            "endpoint (signed host)": "sts.tencentcloudapi.com",
            "request_path": "/",
            "Name": "user42",
            "Policy": VECTOR_E_POLICY,
            "DurationSeconds": 1800,
            "timestamp": TIMESTAMP,
            "nonce": NONCE,
            "ClientProfile.signMethod": sign_method,
            "ClientProfile.language": "zh-CN (default)",
            "HttpProfile.reqMethod": req_method,
        },
        "http_method": req_method,
        "sign_method": sign_method,
        "signed_params": {k: str(v) for k, v in signed_params.items()},
        "signed_param_python_types": {k: type(v).__name__ for k, v in signed_params.items()},
        "string_to_sign": sc["sign_str"],
        "signature": sc["signature"],
        "wire_content_type": sent["headers"].get("Content-Type"),
        "sdk_response_ExpiredTime": resp.ExpiredTime,
    }
    if req_method == "GET":
        out["wire_query"] = sent["data"]
        out["wire_url"] = "https://%s%s?%s" % (sent["host"], sent["uri"], sent["data"])
    else:
        out["wire_body"] = sent["data"]
    return out


def capture_tencentcloud_tc3_crosscheck():
    """Not a v1 vector: re-derives reference vector E through the same harness,
    proving the clock patch is effective (expects signature 2f7541...5199)."""
    from tencentcloud.common import abstract_client as ac
    from tencentcloud.common import credential
    from tencentcloud.common.profile.client_profile import ClientProfile
    from tencentcloud.common.profile.http_profile import HttpProfile
    from tencentcloud.sts.v20180813 import models, sts_client

    sent = {}

    class FakeResp:
        status_code = 200
        headers = {"Content-Type": "application/json"}
        content = json.dumps(FAKE_SUCCESS).encode()

    def fake_send_request(req):
        sent["headers"] = dict(req.header)
        sent["data"] = req.data
        return FakeResp()

    saved = ac.time
    ac.time = fixed_time_module()
    try:
        client = sts_client.StsClient(credential.Credential(SECRET_ID, SECRET_KEY), REGION,
                                      ClientProfile(httpProfile=HttpProfile(reqMethod="POST")))
        client.request.send_request = fake_send_request
        req = models.GetFederationTokenRequest()
        req.Name = "user42"
        req.Policy = VECTOR_E_POLICY
        req.DurationSeconds = 1800
        client.GetFederationToken(req)
    finally:
        ac.time = saved
    return {"body": sent["data"], "authorization": sent["headers"]["Authorization"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", help="also write the JSON to this file")
    args = ap.parse_args()

    doc = {
        "description": "Known-answer vectors for the Tencent Cloud API v1 signature (HmacSHA1/HmacSHA256), "
                       "captured from the official Python SDKs with time/nonce pinned and the HTTP call intercepted. "
                       "Generated by tests/interop/capture_v1_vectors.py; do not edit by hand.",
        "sdk_versions": pkg_versions(),
        "vectors": {
            "qcloud_python_sts_getfederationtoken_hmacsha1_post": capture_qcloud_python_sts(),
            "tencentcloud_sdk_getfederationtoken_hmacsha1_post": capture_tencentcloud_v1("HmacSHA1", "POST"),
            "tencentcloud_sdk_getfederationtoken_hmacsha256_post": capture_tencentcloud_v1("HmacSHA256", "POST"),
            "tencentcloud_sdk_getfederationtoken_hmacsha1_get": capture_tencentcloud_v1("HmacSHA1", "GET"),
        },
        "tc3_crosscheck_vector_e": capture_tencentcloud_tc3_crosscheck(),
    }
    text = json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=False)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
