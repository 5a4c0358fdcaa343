"""Interop: the OFFICIAL cos-python-sdk-v5, unchanged, against the emulator's COS data plane,
with temporary credentials from the emulator's STS (tencentcloud-sdk-python-sts, TC3).

Two ways of pointing the SDK at the emulator are exercised (both work over plain http):

  * "proxy":  CosConfig(Region=..., Scheme="http", Proxies={"http": EMULATOR_URL})
              The SDK keeps its real virtual-host URLs
              (http://examplebucket-1250000000.cos.ap-guangzhou.myqcloud.com/key) and sends
              them to the emulator as an HTTP proxy, so Host, signature and region are exactly
              what real COS would see.
  * "domain": CosConfig(Region=..., Scheme="http", Domain="127.0.0.1:PORT/examplebucket-1250000000")
              Path style: the bucket rides in the first path segment; the SDK signs /key.
"""

import hashlib
import json
import os
import time
from urllib.parse import quote

import pytest
import requests
from qcloud_cos import CosConfig, CosS3Client
from qcloud_cos.cos_exception import CosServiceError
from tencentcloud.common.credential import Credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.sts.v20180813 import models
from tencentcloud.sts.v20180813.sts_client import StsClient

REGION = "ap-guangzhou"
MB = 1024 * 1024


def bucket(emu):
    return "examplebucket-%s" % emu.appid


def res(emu, key):
    return "qcs::cos:%s:uid/%s:%s/%s" % (REGION, emu.appid, bucket(emu), key)


ALICE_OBJECT_ACTIONS = [
    "name/cos:PutObject",
    "name/cos:GetObject",
    "name/cos:HeadObject",
    "name/cos:InitiateMultipartUpload",
    "name/cos:UploadPart",
    "name/cos:ListParts",
    "name/cos:CompleteMultipartUpload",
    "name/cos:AbortMultipartUpload",
]


def alice_policy(emu, extra=()):
    """users/alice/* for objects; listing her prefix only (cos:prefix condition on the
    bucket-level resource); ListMultipartUploads, which upload_file calls to resume."""
    return {
        "version": "2.0",
        "statement": [
            {"effect": "allow", "action": ALICE_OBJECT_ACTIONS, "resource": [res(emu, "users/alice/*")]},
            {"effect": "allow", "action": ["name/cos:GetBucket"], "resource": [res(emu, "")],
             "condition": {"string_like": {"cos:prefix": "users/alice/*"}}},
            {"effect": "allow", "action": ["name/cos:ListMultipartUploads"], "resource": [res(emu, "")]},
        ] + list(extra),
    }


def sts_credentials(emu, policy, duration=1800):
    """GetFederationToken from the emulator's STS with the official TencentCloud SDK."""
    hp = HttpProfile(protocol="http", endpoint=emu.host_port, reqTimeout=15)
    client = StsClient(Credential(emu.secret_id, emu.secret_key), REGION, ClientProfile(httpProfile=hp))
    req = models.GetFederationTokenRequest()
    req.Name = "alice"
    req.Policy = quote(json.dumps(policy, separators=(",", ":")), safe="")
    req.DurationSeconds = duration
    return client.GetFederationToken(req).Credentials


def cos_client(emu, creds, style):
    common = dict(Region=REGION, SecretId=creds.TmpSecretId, SecretKey=creds.TmpSecretKey,
                  Token=creds.Token, Scheme="http", Timeout=30)
    if style == "proxy":
        config = CosConfig(Proxies={"http": emu.url}, **common)
    else:
        config = CosConfig(Domain="%s/%s" % (emu.host_port, bucket(emu)), **common)
    return CosS3Client(config, retry=0)


def http_proxies(emu, style):
    """What a plain HTTP client needs to fetch a URL the SDK built."""
    return {"http": emu.url} if style == "proxy" else {}


def assert_denied(excinfo, code="AccessDenied", status=403):
    err = excinfo.value
    assert err.get_status_code() == status, str(err)
    assert err.get_error_code() == code, str(err)
    assert err.get_request_id(), str(err)


@pytest.fixture(params=["proxy", "domain"])
def style(request):
    return request.param


@pytest.fixture
def alice(emulator):
    return sts_credentials(emulator, alice_policy(emulator))


def test_put_and_get_back_byte_identical(emulator, alice, style):
    client = cos_client(emulator, alice, style)
    body = os.urandom(200 * 1024)
    put = client.put_object(Bucket=bucket(emulator), Key="users/alice/a.jpg", Body=body,
                            ContentType="image/jpeg", Metadata={"x-cos-meta-owner": "alice"})
    assert put["ETag"] == '"%s"' % hashlib.md5(body).hexdigest(), put
    got = client.get_object(Bucket=bucket(emulator), Key="users/alice/a.jpg")
    assert got["Body"].get_raw_stream().read() == body
    assert got["Content-Type"] == "image/jpeg"
    assert got["x-cos-meta-owner"] == "alice"
    head = client.head_object(Bucket=bucket(emulator), Key="users/alice/a.jpg")
    assert int(head["Content-Length"]) == len(body)
    ranged = client.get_object(Bucket=bucket(emulator), Key="users/alice/a.jpg", Range="bytes=10-19")
    assert ranged["Body"].get_raw_stream().read() == body[10:20]


def test_bobs_prefix_is_access_denied(emulator, alice, style):
    client = cos_client(emulator, alice, style)
    with pytest.raises(CosServiceError) as e:
        client.put_object(Bucket=bucket(emulator), Key="users/bob/a.jpg", Body=b"x")
    assert_denied(e)
    with pytest.raises(CosServiceError) as e:
        client.get_object(Bucket=bucket(emulator), Key="users/bob/a.jpg")
    assert_denied(e)


def test_multipart_upload_over_10_mb(emulator, alice, style, tmp_path):
    client = cos_client(emulator, alice, style)
    data = os.urandom(11 * MB + 12345)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    key = "users/alice/big-%s.bin" % style
    # PartSize is in MB: 1 forces a 12-part multipart upload.
    resp = client.upload_file(Bucket=bucket(emulator), Key=key, LocalFilePath=str(path),
                              PartSize=1, MAXThread=4)
    assert resp["ETag"].strip('"').endswith("-12"), resp
    got = client.get_object(Bucket=bucket(emulator), Key=key)
    assert hashlib.sha256(got["Body"].get_raw_stream().read()).hexdigest() == hashlib.sha256(data).hexdigest()


def test_listing_her_prefix_only(emulator, alice, style):
    client = cos_client(emulator, alice, style)
    for name in ("1.txt", "2.txt", "sub/3.txt"):
        client.put_object(Bucket=bucket(emulator), Key="users/alice/list-%s/%s" % (style, name), Body=b"x")
    listed = client.list_objects(Bucket=bucket(emulator), Prefix="users/alice/list-%s/" % style, Delimiter="/")
    assert [c["Key"] for c in listed["Contents"]] == [
        "users/alice/list-%s/1.txt" % style, "users/alice/list-%s/2.txt" % style]
    assert [p["Prefix"] for p in listed["CommonPrefixes"]] == ["users/alice/list-%s/sub/" % style]
    for prefix in ("users/", "users/bob/", ""):
        with pytest.raises(CosServiceError) as e:
            client.list_objects(Bucket=bucket(emulator), Prefix=prefix)
        assert_denied(e)


def test_listing_the_whole_bucket_needs_a_grant(emulator, style):
    creds = sts_credentials(emulator, {"version": "2.0", "statement": [
        {"effect": "allow", "action": ["name/cos:GetBucket"], "resource": [res(emulator, "")]}]})
    client = cos_client(emulator, creds, style)
    listed = client.list_objects(Bucket=bucket(emulator))
    assert "IsTruncated" in listed
    # `/*` is an object grant, not the bucket.
    objects_only = sts_credentials(emulator, {"version": "2.0", "statement": [
        {"effect": "allow", "action": ["name/cos:GetBucket"], "resource": [res(emulator, "*")]}]})
    with pytest.raises(CosServiceError) as e:
        cos_client(emulator, objects_only, style).list_objects(Bucket=bucket(emulator))
    assert_denied(e)


def test_presigned_urls(emulator, alice, style):
    client = cos_client(emulator, alice, style)
    client.put_object(Bucket=bucket(emulator), Key="users/alice/shared.txt", Body=b"presigned")
    # With temporary keys the token goes in Params (the SDK signs it as a URL parameter).
    params = {"x-cos-security-token": alice.Token}
    url = client.get_presigned_url(Bucket=bucket(emulator), Key="users/alice/shared.txt", Method="GET",
                                   Params=params)
    r = requests.get(url, proxies=http_proxies(emulator, style), timeout=15)
    assert r.status_code == 200, r.text
    assert r.content == b"presigned"
    url = client.get_presigned_download_url(Bucket=bucket(emulator), Key="users/alice/shared.txt",
                                            Params=params)
    assert requests.get(url, proxies=http_proxies(emulator, style), timeout=15).content == b"presigned"
    url = client.get_presigned_url(Bucket=bucket(emulator), Key="users/bob/a.jpg", Method="GET", Params=params)
    r = requests.get(url, proxies=http_proxies(emulator, style), timeout=15)
    assert r.status_code == 403, r.text
    assert "<Code>AccessDenied</Code>" in r.text
    # Without the token the temporary SecretId is not accepted.
    url = client.get_presigned_url(Bucket=bucket(emulator), Key="users/alice/shared.txt", Method="GET")
    r = requests.get(url, proxies=http_proxies(emulator, style), timeout=15)
    assert r.status_code == 403 and "<Code>InvalidAccessKeyId</Code>" in r.text, r.text


def test_content_length_condition_refuses_an_oversized_upload(emulator, style):
    limit = MB
    creds = sts_credentials(emulator, {"version": "2.0", "statement": [
        {"effect": "allow", "action": ["name/cos:PutObject"], "resource": [res(emulator, "users/alice/*")],
         "condition": {"numeric_less_than_equal": {"cos:content-length": limit}}}]})
    client = cos_client(emulator, creds, style)
    client.put_object(Bucket=bucket(emulator), Key="users/alice/small.bin", Body=b"x" * limit)
    with pytest.raises(CosServiceError) as e:
        client.put_object(Bucket=bucket(emulator), Key="users/alice/large.bin", Body=b"x" * (limit + 1))
    assert_denied(e)


def test_every_call_fails_after_the_credential_expires(emulator, style):
    creds = sts_credentials(emulator, alice_policy(emulator), duration=2)
    client = cos_client(emulator, creds, style)
    client.put_object(Bucket=bucket(emulator), Key="users/alice/short.txt", Body=b"x")
    time.sleep(3.5)
    calls = [
        lambda: client.put_object(Bucket=bucket(emulator), Key="users/alice/short.txt", Body=b"x"),
        lambda: client.get_object(Bucket=bucket(emulator), Key="users/alice/short.txt"),
        lambda: client.list_objects(Bucket=bucket(emulator), Prefix="users/alice/"),
        lambda: client.create_multipart_upload(Bucket=bucket(emulator), Key="users/alice/m"),
    ]
    for call in calls:
        with pytest.raises(CosServiceError) as e:
            call()
        assert_denied(e)
        assert "expired" in e.value.get_error_msg(), str(e.value)


def test_data_dir_keeps_objects_across_a_restart(emulator_launcher, tmp_path):
    """--data-dir: objects survive a restart; issued credentials do not (they live in memory)."""
    data_dir = str(tmp_path / "cos-data")
    body = os.urandom(64 * 1024)
    with emulator_launcher(["--data-dir", data_dir]) as emu:
        creds = sts_credentials(emu, alice_policy(emu))
        cos_client(emu, creds, "proxy").put_object(Bucket=bucket(emu), Key="users/alice/kept.bin", Body=body)
    with emulator_launcher(["--data-dir", data_dir]) as emu:
        with pytest.raises(CosServiceError) as e:
            cos_client(emu, creds, "proxy").get_object(Bucket=bucket(emu), Key="users/alice/kept.bin")
        assert_denied(e, code="InvalidAccessKeyId")
        fresh = sts_credentials(emu, alice_policy(emu))
        got = cos_client(emu, fresh, "domain").get_object(Bucket=bucket(emu), Key="users/alice/kept.bin")
        assert got["Body"].get_raw_stream().read() == body
