"""Interop: the OFFICIAL Tencent Cloud Python SDKs, unchanged except for their
endpoint, against the stsgate STS emulator (see conftest.py).

SDKs exercised:
  * tencentcloud-sdk-python-sts / -common (StsClient): TC3-HMAC-SHA256 JSON POST,
    and v1 (HmacSHA1 / HmacSHA256) over form POST and GET.
  * qcloud-python-sts (sts.sts.Sts, the COS STS SDK): v1 HmacSHA1 form POST.

The only things patched are the SDKs' clock (for the stale-timestamp cases);
nothing on the request path is modified.
"""

import json
import time
import types
from urllib.parse import quote

import pytest
import requests

import sts.sts as qcloud_sts_mod
from sts.sts import Sts
from tencentcloud.common import abstract_client
from tencentcloud.common.credential import Credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.sts.v20180813 import models
from tencentcloud.sts.v20180813.sts_client import StsClient

REGION = "ap-guangzhou"
BUCKET_NAME = "interop"
ROLE_ARN = "qcs::cam::uin/100000000001:roleName/uploader"
DURATION = 1800
EXPIRY_SLACK_S = 60
STALE_BY_S = 600  # > the 5 minute window


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def bucket(emu):
    return "%s-%s" % (BUCKET_NAME, emu.appid)


def cos_resource(emu, prefix):
    # CAM resource format, reference tencent-sts.md section 3.3.
    return "qcs::cos:%s:uid/%s:%s/%s" % (REGION, emu.appid, bucket(emu), prefix)


def policy_for(emu, prefix, actions=("name/cos:PutObject",)):
    return {
        "version": "2.0",
        "statement": [{
            "effect": "allow",
            "action": list(actions),
            "resource": [cos_resource(emu, prefix)],
        }],
    }


def encode_policy(policy):
    """URL-encode the policy the documented way (vector E in the reference):
    compact JSON, every byte outside A-Za-z0-9-_.~ percent-encoded."""
    return quote(json.dumps(policy, separators=(",", ":")), safe="")


def tc_client(emu, secret_id=None, secret_key=None, sign_method=None, req_method="POST"):
    """StsClient pointed at the emulator over plain http.

    * HttpProfile has no `scheme=` kwarg: the scheme comes from `protocol=`
      (it sets httpProfile.scheme, which AbstractClient checks for "http").
    * `endpoint` must be bare host:port.  It is used as the URL authority, the
      Host header, the TC3 canonical `host:` header and the v1 signed host.
    """
    hp = HttpProfile(protocol="http", endpoint=emu.host_port, reqMethod=req_method, reqTimeout=15)
    assert hp.scheme == "http"
    cp = ClientProfile(signMethod=sign_method, httpProfile=hp)
    cred = Credential(secret_id or emu.secret_id, secret_key or emu.secret_key)
    return StsClient(cred, REGION, cp)


def spy_responses(client):
    """Record the raw HTTP responses a client receives (observation only)."""
    seen = []
    real = client.request.send_request

    def send_request(req):
        resp = real(req)
        seen.append(resp)
        return resp

    client.request.send_request = send_request
    return seen


def federation_request(policy_str, name="user42", duration=DURATION):
    req = models.GetFederationTokenRequest()
    req.Name = name
    req.Policy = policy_str
    req.DurationSeconds = duration
    return req


def qcloud_config(emu, prefix, domain=None, secret_id=None, secret_key=None):
    cfg = {
        "secret_id": secret_id or emu.secret_id,
        "secret_key": secret_key or emu.secret_key,
        "duration_seconds": DURATION,
        "bucket": bucket(emu),
        "region": REGION,
        "allow_prefix": prefix,
        "allow_actions": ["name/cos:PutObject", "name/cos:GetObject"],
        # The SDK POSTs to `url` but signs with `domain` (default
        # sts.tencentcloudapi.com) whatever URL it actually calls.
        "url": emu.url + "/",
    }
    if domain is not None:
        cfg["domain"] = domain
    return cfg


def issued_entries(emu):
    r = requests.get(emu.url + "/_emulator/credentials", timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("issued"), list), body
    return body["issued"]


def policy_resources(policy):
    assert isinstance(policy, dict), "policy should be the decoded JSON object, got %r" % (policy,)
    statements = policy.get("statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    out = []
    for st in statements:
        res = st.get("resource", [])
        out.extend([res] if isinstance(res, str) else res)
    return out


def assert_issued(emu, tmp_secret_id, resource):
    matches = [e for e in issued_entries(emu) if e.get("tmp_secret_id") == tmp_secret_id]
    assert matches, "no /_emulator/credentials entry with tmp_secret_id=%s" % tmp_secret_id
    resources = policy_resources(matches[-1].get("policy"))
    assert resource in resources, (resource, matches[-1])


def assert_tc_credentials(resp, duration=DURATION):
    now = time.time()
    c = resp.Credentials
    assert c is not None, resp
    assert c.TmpSecretId and c.TmpSecretKey and c.Token, resp
    assert isinstance(resp.ExpiredTime, int), resp
    assert abs(resp.ExpiredTime - (now + duration)) <= EXPIRY_SLACK_S, (resp.ExpiredTime, now)
    assert resp.RequestId, resp


def assert_sdk_error(excinfo, code):
    assert excinfo.value.get_code() == code, str(excinfo.value)
    assert excinfo.value.get_request_id(), str(excinfo.value)


def frozen_clock(offset_s):
    real = time.time
    return types.SimpleNamespace(time=lambda: real() + offset_s)


# --------------------------------------------------------------------------
# wire-level expectation the SDK silently depends on
# --------------------------------------------------------------------------

def test_error_response_content_type_is_exactly_application_json(emulator):
    """tencentcloud-sdk-python's AbstractClient._check_error only looks at the
    body when Content-Type is exactly 'application/json' or 'text/plain'.  With
    e.g. 'application/json; charset=utf-8' an error response is deserialised as
    an empty success and no exception is raised.  The STS error arrives with
    HTTP 200 (reference section 1.1)."""
    client = tc_client(emulator, secret_key="wrong-" + emulator.secret_key)
    seen = spy_responses(client)
    with pytest.raises(TencentCloudSDKException):
        client.GetFederationToken(federation_request(encode_policy(policy_for(emulator, "ct/*"))))
    assert len(seen) == 1
    resp = seen[0]
    assert resp.status_code == 200
    assert resp.headers.get("Content-Type") == "application/json", resp.headers.get("Content-Type")
    body = json.loads(resp.content)
    assert set(body) == {"Response"}, body
    err = body["Response"]["Error"]
    assert err["Code"] == "AuthFailure.SignatureFailure" and err["Message"], body
    assert body["Response"]["RequestId"], body


# --------------------------------------------------------------------------
# tencentcloud-sdk-python-sts, TC3-HMAC-SHA256 (JSON POST)
# --------------------------------------------------------------------------

def test_tc3_get_federation_token_succeeds(emulator):
    prefix = "users/42/*"
    client = tc_client(emulator)
    seen = spy_responses(client)
    resp = client.GetFederationToken(federation_request(encode_policy(policy_for(emulator, prefix))))
    assert_tc_credentials(resp)
    assert seen[0].headers.get("Content-Type") == "application/json"
    assert_issued(emulator, resp.Credentials.TmpSecretId, cos_resource(emulator, prefix))


def test_tc3_wrong_secret_key_is_signature_failure(emulator):
    client = tc_client(emulator, secret_key="not-" + emulator.secret_key)
    with pytest.raises(TencentCloudSDKException) as ei:
        client.GetFederationToken(federation_request(encode_policy(policy_for(emulator, "users/42/*"))))
    assert_sdk_error(ei, "AuthFailure.SignatureFailure")


def test_tc3_stale_timestamp_is_signature_expire(emulator, monkeypatch):
    # AbstractClient reads the clock as `time.time()` from its module-level
    # `time` import; replace only that module reference.
    monkeypatch.setattr(abstract_client, "time", frozen_clock(-STALE_BY_S))
    client = tc_client(emulator)
    with pytest.raises(TencentCloudSDKException) as ei:
        client.GetFederationToken(federation_request(encode_policy(policy_for(emulator, "users/42/*"))))
    assert_sdk_error(ei, "AuthFailure.SignatureExpire")


def test_tc3_unknown_secret_id_is_secret_id_not_found(emulator):
    client = tc_client(emulator, secret_id="AKIDNOSUCHKEY0000", secret_key="whatever")
    with pytest.raises(TencentCloudSDKException) as ei:
        client.GetFederationToken(federation_request(encode_policy(policy_for(emulator, "users/42/*"))))
    assert_sdk_error(ei, "AuthFailure.SecretIdNotFound")


def test_tc3_assume_role_succeeds(emulator):
    prefix = "roles/interop/*"
    client = tc_client(emulator)
    req = models.AssumeRoleRequest()
    req.RoleArn = ROLE_ARN
    req.RoleSessionName = "interop"
    req.Policy = encode_policy(policy_for(emulator, prefix))
    req.DurationSeconds = 900
    resp = client.AssumeRole(req)
    assert_tc_credentials(resp, duration=900)
    assert_issued(emulator, resp.Credentials.TmpSecretId, cos_resource(emulator, prefix))


# --------------------------------------------------------------------------
# tencentcloud-sdk-python-sts, v1 signature (HmacSHA1 / HmacSHA256)
# --------------------------------------------------------------------------

V1_MODES = [
    pytest.param("HmacSHA1", "POST", id="HmacSHA1-POST"),
    pytest.param("HmacSHA256", "POST", id="HmacSHA256-POST"),
    pytest.param("HmacSHA1", "GET", id="HmacSHA1-GET"),
    pytest.param("HmacSHA256", "GET", id="HmacSHA256-GET"),
]


@pytest.mark.parametrize("sign_method,req_method", V1_MODES)
def test_v1_get_federation_token_succeeds(emulator, sign_method, req_method):
    prefix = "v1/%s-%s/*" % (sign_method.lower(), req_method.lower())
    client = tc_client(emulator, sign_method=sign_method, req_method=req_method)
    resp = client.GetFederationToken(federation_request(encode_policy(policy_for(emulator, prefix))))
    assert_tc_credentials(resp)
    assert_issued(emulator, resp.Credentials.TmpSecretId, cos_resource(emulator, prefix))


@pytest.mark.parametrize("sign_method,req_method", V1_MODES)
def test_v1_wrong_secret_key_is_signature_failure(emulator, sign_method, req_method):
    client = tc_client(emulator, secret_key="not-" + emulator.secret_key,
                       sign_method=sign_method, req_method=req_method)
    with pytest.raises(TencentCloudSDKException) as ei:
        client.GetFederationToken(federation_request(encode_policy(policy_for(emulator, "users/42/*"))))
    assert_sdk_error(ei, "AuthFailure.SignatureFailure")


def test_v1_stale_timestamp_is_signature_expire(emulator, monkeypatch):
    monkeypatch.setattr(abstract_client, "time", frozen_clock(-STALE_BY_S))
    client = tc_client(emulator, sign_method="HmacSHA1")
    with pytest.raises(TencentCloudSDKException) as ei:
        client.GetFederationToken(federation_request(encode_policy(policy_for(emulator, "users/42/*"))))
    assert_sdk_error(ei, "AuthFailure.SignatureExpire")


def test_v1_assume_role_succeeds(emulator):
    prefix = "roles/v1/*"
    client = tc_client(emulator, sign_method="HmacSHA256")
    req = models.AssumeRoleRequest()
    req.RoleArn = ROLE_ARN
    req.RoleSessionName = "interop"
    req.Policy = encode_policy(policy_for(emulator, prefix))
    resp = client.AssumeRole(req)
    assert_tc_credentials(resp, duration=7200)  # AssumeRole default lifetime
    assert_issued(emulator, resp.Credentials.TmpSecretId, cos_resource(emulator, prefix))


# --------------------------------------------------------------------------
# qcloud-python-sts (COS STS SDK): v1 HmacSHA1 form POST
# --------------------------------------------------------------------------

def _domain_cases():
    # None: leave the SDK default `domain` (sts.tencentcloudapi.com) as signed
    # host while the request goes to 127.0.0.1:PORT.  "host": sign with the
    # Host header value actually sent.
    return [pytest.param(None, id="signed-host-default"), pytest.param("host", id="signed-host-is-Host-header")]


def _domain(emu, case):
    return emu.host_port if case == "host" else None


def assert_qcloud_credentials(result):
    now = time.time()
    creds = result.get("credentials") or {}
    assert creds.get("tmpSecretId") and creds.get("tmpSecretKey") and creds.get("sessionToken"), result
    assert abs(result["expiredTime"] - (now + DURATION)) <= EXPIRY_SLACK_S, result
    assert result["startTime"] == result["expiredTime"] - DURATION, result
    assert result.get("requestId"), result


@pytest.mark.parametrize("domain_case", _domain_cases())
def test_qcloud_get_credential_succeeds(emulator, domain_case):
    prefix = "qcloud/%s/*" % (domain_case or "default")
    result = Sts(qcloud_config(emulator, prefix, domain=_domain(emulator, domain_case))).get_credential()
    assert_qcloud_credentials(result)
    assert_issued(emulator, result["credentials"]["tmpSecretId"], cos_resource(emulator, prefix))


def test_qcloud_wrong_secret_key_is_signature_failure(emulator):
    sts = Sts(qcloud_config(emulator, "users/42/*", secret_key="not-" + emulator.secret_key))
    # The SDK raises Exception("result: {<Response dict>}", KeyError('ExpiredTime')).
    with pytest.raises(Exception) as ei:
        sts.get_credential()
    assert "AuthFailure.SignatureFailure" in str(ei.value), str(ei.value)


def test_qcloud_unknown_secret_id_is_secret_id_not_found(emulator):
    sts = Sts(qcloud_config(emulator, "users/42/*", secret_id="AKIDNOSUCHKEY0000"))
    with pytest.raises(Exception) as ei:
        sts.get_credential()
    assert "AuthFailure.SecretIdNotFound" in str(ei.value), str(ei.value)


def test_qcloud_stale_timestamp_is_signature_expire(emulator, monkeypatch):
    # sts.sts reads the clock as `time.time()` from its module-level import.
    monkeypatch.setattr(qcloud_sts_mod, "time", frozen_clock(-STALE_BY_S))
    sts = Sts(qcloud_config(emulator, "users/42/*"))
    with pytest.raises(Exception) as ei:
        sts.get_credential()
    assert "AuthFailure.SignatureExpire" in str(ei.value), str(ei.value)


@pytest.mark.parametrize("domain_case", _domain_cases())
def test_qcloud_get_role_credential_succeeds(emulator, domain_case):
    prefix = "qcloud-role/%s/*" % (domain_case or "default")
    sts = Sts(qcloud_config(emulator, prefix, domain=_domain(emulator, domain_case)))
    result = sts.get_role_credential(ROLE_ARN)
    # get_role_credential sends DurationSeconds=duration_seconds (1800), so the
    # same expiry check applies.
    assert_qcloud_credentials(result)
    assert_issued(emulator, result["credentials"]["tmpSecretId"], cos_resource(emulator, prefix))
