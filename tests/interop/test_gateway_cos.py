"""Interop: the OFFICIAL cos-python-sdk-v5, unchanged, with temporary credentials from the REAL
gateway (`stsgate dev`: gateway + its STS/COS emulator, on a fresh PostgreSQL database), against
the emulator's COS data plane. This is the end-to-end proof that a user's credentials reach their
own prefix and nothing else.

Credentials come from `GET {api_url}/v1/apps/demo/credentials` with an HS256 JWT minted here with
the demo app's secret from dev.json. The demo template (seeded by dev, src/dev.rs) grants the
upload/read set on `users/${sub}/*`, GetBucket on the bucket with `cos:prefix users/${sub}/*`,
and ListMultipartUploads on the bucket.

Both addressing styles of tests/interop/test_cos_sdks.py are exercised: the emulator as the SDK's
HTTP proxy (real virtual-host URLs) and path style through `Domain`.
"""

import hashlib
import os
import time

import pytest
import requests
from qcloud_cos import CosConfig, CosS3Client
from qcloud_cos.cos_exception import CosServiceError

MB = 1024 * 1024


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def cos_client(gw, creds, style):
    """A CosS3Client from the gateway's default (`sdk`) response shape."""
    c = creds["credentials"]
    common = dict(Region=creds["region"], SecretId=c["tmpSecretId"], SecretKey=c["tmpSecretKey"],
                  Token=c["sessionToken"], Scheme="http", Timeout=30)
    if style == "proxy":
        config = CosConfig(Proxies={"http": gw.emulator_url}, **common)
    else:
        config = CosConfig(Domain="%s/%s" % (gw.emulator_host_port, creds["bucket"]), **common)
    return CosS3Client(config, retry=0)


def http_proxies(gw, style):
    """What a plain HTTP client needs to fetch a URL the SDK built."""
    return {"http": gw.emulator_url} if style == "proxy" else {}


def assert_denied(excinfo, code="AccessDenied", status=403):
    err = excinfo.value
    assert err.get_status_code() == status, str(err)
    assert err.get_error_code() == code, str(err)
    assert err.get_request_id(), str(err)


def body_of(resp):
    return resp["Body"].get_raw_stream().read()


def put_as(gw, sub, key, body, style="proxy"):
    """Puts an object with `sub`'s own gateway credentials (a positive control)."""
    creds = gw.credentials(sub)
    cos_client(gw, creds, style).put_object(Bucket=gw.bucket, Key=key, Body=body)


@pytest.fixture(params=["proxy", "domain"])
def style(request):
    return request.param


@pytest.fixture
def alice(dev_gateway):
    return dev_gateway.credentials("alice")


@pytest.fixture(scope="module")
def bobs_object(dev_gateway):
    """users/bob/a.jpg exists (put with bob's own credentials), so a refusal for alice is about
    authorization, not a missing key."""
    body = b"bob's photo " + os.urandom(1024)
    put_as(dev_gateway, "bob", "users/bob/a.jpg", body)
    return body


# --------------------------------------------------------------------------------------------
# the shared `stsgate dev` (demo template as seeded)
# --------------------------------------------------------------------------------------------

def test_the_gateway_hands_out_credentials_for_her_own_prefix(dev_gateway):
    gw = dev_gateway
    c = gw.credentials("alice")
    now = time.time()
    assert set(c["credentials"]) == {"tmpSecretId", "tmpSecretKey", "sessionToken"}, c
    assert c["credentials"]["tmpSecretId"].startswith("AKID"), c
    assert c["bucket"] == gw.bucket and c["region"] == gw.region, c
    assert c["prefix"] == "users/alice/", c
    assert c["startTime"] - 5 <= now < c["expiredTime"], c  # the gateway's clock is this host's
    assert c["expiredTime"] - c["startTime"] == 1800, c  # the demo app's default duration
    # The policy the gateway asked STS for is the demo template rendered for alice.
    policy = gw.issued_policy(c["credentials"]["tmpSecretId"])
    resources = {r for st in policy["statement"] for r in st["resource"]}
    res = "qcs::cos:%s:uid/1250000000:%s/" % (gw.region, gw.bucket)
    assert resources == {res + "users/alice/*", res}, policy
    # format=cos-js: the shape cos-js-sdk-v5's getAuthorization callback takes.
    r = gw.credentials_response("alice", format="cos-js")
    assert r.status_code == 200, r.text
    js = r.json()
    assert {"TmpSecretId", "TmpSecretKey", "SecurityToken", "StartTime", "ExpiredTime"} <= js.keys(), js
    assert len(str(js["StartTime"])) == 10 and len(str(js["ExpiredTime"])) == 10, js
    assert js["Prefix"] == "users/alice/" and js["Bucket"] == gw.bucket, js
    # Bob gets his own prefix, with his own credential.
    b = gw.credentials("bob")
    assert b["prefix"] == "users/bob/", b
    assert b["credentials"]["tmpSecretId"] != c["credentials"]["tmpSecretId"]


def test_put_and_get_back_byte_identical(dev_gateway, alice, style):
    gw = dev_gateway
    client = cos_client(gw, alice, style)
    body = os.urandom(256 * 1024 + 7)
    put = client.put_object(Bucket=gw.bucket, Key="users/alice/a.jpg", Body=body,
                            ContentType="image/jpeg", Metadata={"x-cos-meta-owner": "alice"})
    assert put["ETag"] == '"%s"' % hashlib.md5(body).hexdigest(), put
    got = client.get_object(Bucket=gw.bucket, Key="users/alice/a.jpg")
    assert body_of(got) == body
    assert got["Content-Type"] == "image/jpeg"
    assert got["x-cos-meta-owner"] == "alice"
    head = client.head_object(Bucket=gw.bucket, Key="users/alice/a.jpg")
    assert int(head["Content-Length"]) == len(body)


def test_bobs_object_is_access_denied(dev_gateway, alice, bobs_object, style):
    gw = dev_gateway
    client = cos_client(gw, alice, style)
    with pytest.raises(CosServiceError) as e:
        client.put_object(Bucket=gw.bucket, Key="users/bob/a.jpg", Body=b"overwritten by alice")
    assert_denied(e)
    with pytest.raises(CosServiceError) as e:
        client.get_object(Bucket=gw.bucket, Key="users/bob/a.jpg")
    assert_denied(e)
    with pytest.raises(CosServiceError) as e:
        client.head_object(Bucket=gw.bucket, Key="users/bob/a.jpg")
    assert e.value.get_status_code() == 403, str(e.value)  # HEAD answers carry no error body
    with pytest.raises(CosServiceError) as e:
        client.create_multipart_upload(Bucket=gw.bucket, Key="users/bob/big.bin")
    assert_denied(e)
    with pytest.raises(CosServiceError) as e:
        client.delete_object(Bucket=gw.bucket, Key="users/bob/a.jpg")
    assert_denied(e)
    # Dot segments are part of a COS key, not a way out of her prefix.
    for key in ("users/alice/../bob/a.jpg", "users/alice/%2e%2e/bob/a.jpg"):
        with pytest.raises(CosServiceError) as e:
            client.get_object(Bucket=gw.bucket, Key=key)
        assert e.value.get_status_code() in (403, 404), (key, str(e.value))
    # A sibling whose name merely starts with "alice" is not hers either.
    with pytest.raises(CosServiceError) as e:
        client.put_object(Bucket=gw.bucket, Key="users/alice2/a.jpg", Body=b"x")
    assert_denied(e)
    # Bob's object is untouched, and bob (with his own credentials) still reads it.
    bob = cos_client(gw, gw.credentials("bob"), style)
    assert body_of(bob.get_object(Bucket=gw.bucket, Key="users/bob/a.jpg")) == bobs_object


def test_multipart_upload_over_10_mb(dev_gateway, alice, style, tmp_path):
    gw = dev_gateway
    client = cos_client(gw, alice, style)
    data = os.urandom(11 * MB + 12345)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    key = "users/alice/big-%s.bin" % style
    # PartSize is in MB: 1 forces a 12-part multipart upload (upload_file first lists
    # in-progress uploads, which the demo template's ListMultipartUploads grant allows).
    resp = client.upload_file(Bucket=gw.bucket, Key=key, LocalFilePath=str(path), PartSize=1, MAXThread=4)
    assert resp["ETag"].strip('"').endswith("-12"), resp
    got = body_of(client.get_object(Bucket=gw.bucket, Key=key))
    assert len(got) == len(data)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()


def test_listing_her_prefix_but_not_the_bucket(dev_gateway, alice, bobs_object, style):
    gw = dev_gateway
    client = cos_client(gw, alice, style)
    base = "users/alice/list-%s/" % style
    for name in ("1.txt", "2.txt", "sub/3.txt"):
        client.put_object(Bucket=gw.bucket, Key=base + name, Body=b"x")
    listed = client.list_objects(Bucket=gw.bucket, Prefix=base, Delimiter="/")
    assert [c["Key"] for c in listed["Contents"]] == [base + "1.txt", base + "2.txt"]
    assert [p["Prefix"] for p in listed["CommonPrefixes"]] == [base + "sub/"]
    whole = client.list_objects(Bucket=gw.bucket, Prefix="users/alice/")
    keys = [c["Key"] for c in whole["Contents"]]
    assert keys and all(k.startswith("users/alice/") for k in keys), keys
    # The demo template does not grant listing the bucket: no prefix, a wider one, bob's.
    for prefix in ("", "users/", "users/bob/", "users/alice"):
        with pytest.raises(CosServiceError) as e:
            client.list_objects(Bucket=gw.bucket, Prefix=prefix)
        assert_denied(e)


def test_presigned_get_url(dev_gateway, alice, bobs_object, style):
    gw = dev_gateway
    client = cos_client(gw, alice, style)
    client.put_object(Bucket=gw.bucket, Key="users/alice/shared.txt", Body=b"presigned")
    # cos-python-sdk-v5 does not add the token to presigned URLs itself.
    params = {"x-cos-security-token": alice["credentials"]["sessionToken"]}
    url = client.get_presigned_url(Bucket=gw.bucket, Key="users/alice/shared.txt", Method="GET",
                                   Params=params)
    r = requests.get(url, proxies=http_proxies(gw, style), timeout=15)
    assert r.status_code == 200, r.text
    assert r.content == b"presigned"
    url = client.get_presigned_url(Bucket=gw.bucket, Key="users/bob/a.jpg", Method="GET", Params=params)
    r = requests.get(url, proxies=http_proxies(gw, style), timeout=15)
    assert r.status_code == 403, r.text
    assert "<Code>AccessDenied</Code>" in r.text, r.text
    assert bobs_object not in r.content
    # Presigned PUT: into her prefix, yes; over bob's object, no.
    url = client.get_presigned_url(Bucket=gw.bucket, Key="users/alice/uploaded.txt", Method="PUT",
                                   Params=params)
    r = requests.put(url, data=b"via presigned put", proxies=http_proxies(gw, style), timeout=15)
    assert r.status_code == 200, r.text
    assert body_of(client.get_object(Bucket=gw.bucket, Key="users/alice/uploaded.txt")) == b"via presigned put"
    url = client.get_presigned_url(Bucket=gw.bucket, Key="users/bob/a.jpg", Method="PUT", Params=params)
    r = requests.put(url, data=b"overwritten", proxies=http_proxies(gw, style), timeout=15)
    assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text, r.text


def test_every_call_fails_after_the_credential_expires(dev_gateway, bobs_object):
    gw = dev_gateway
    # A duration nobody else asks for: the credential cache key includes it, so this is fresh.
    creds = gw.credentials("alice", duration_seconds=2)
    assert creds["expiredTime"] - creds["startTime"] == 2, creds
    clients = {style: cos_client(gw, creds, style) for style in ("proxy", "domain")}
    key = "users/alice/short.txt"
    presigned = {}
    for style, client in clients.items():
        client.put_object(Bucket=gw.bucket, Key=key, Body=b"short-lived")
        assert body_of(client.get_object(Bucket=gw.bucket, Key=key)) == b"short-lived"
        presigned[style] = client.get_presigned_url(
            Bucket=gw.bucket, Key=key, Method="GET", Expired=3600,
            Params={"x-cos-security-token": creds["credentials"]["sessionToken"]})
        assert requests.get(presigned[style], proxies=http_proxies(gw, style), timeout=15).status_code == 200
    time.sleep(max(0.0, creds["expiredTime"] + 1.5 - time.time()))
    for style, client in clients.items():
        calls = {
            "put": lambda: client.put_object(Bucket=gw.bucket, Key=key, Body=b"x"),
            "get": lambda: client.get_object(Bucket=gw.bucket, Key=key),
            "list": lambda: client.list_objects(Bucket=gw.bucket, Prefix="users/alice/"),
            "multipart": lambda: client.create_multipart_upload(Bucket=gw.bucket, Key="users/alice/m"),
        }
        for name, call in calls.items():
            with pytest.raises(CosServiceError) as e:
                call()
            assert_denied(e)
            assert "expired" in e.value.get_error_msg(), (style, name, str(e.value))
        with pytest.raises(CosServiceError) as e:
            client.head_object(Bucket=gw.bucket, Key=key)
        assert e.value.get_status_code() == 403, (style, str(e.value))
        # A presigned URL signed for an hour does not outlive the credential behind it.
        r = requests.get(presigned[style], proxies=http_proxies(gw, style), timeout=15)
        assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text, (style, r.text)
    # A fresh credential still reads the object: the refusals were about expiry.
    fresh = cos_client(gw, gw.credentials("alice"), "proxy")
    assert body_of(fresh.get_object(Bucket=gw.bucket, Key=key)) == b"short-lived"


# --------------------------------------------------------------------------------------------
# a `stsgate dev` of its own whose template is changed while it runs
# --------------------------------------------------------------------------------------------

LIMIT = MB

LIMITED_TEMPLATE = {
    "prefix": "users/${sub}/",
    "statements": [
        {"effect": "allow", "actions": ["name/cos:PutObject", "name/cos:PostObject"],
         "resources": ["users/${sub}/*"],
         "conditions": {"numeric_less_than_equal": {"cos:content-length": LIMIT}}},
        {"effect": "allow", "actions": ["name/cos:GetObject", "name/cos:HeadObject"],
         "resources": ["users/${sub}/*"]},
        # This template DOES grant listing the whole bucket.
        {"effect": "allow", "actions": ["name/cos:GetBucket"], "resources": ["/"],
         "shared": {"reason": "interop: list the whole bucket"}},
    ],
}


def has_content_length_condition(policy):
    return any("cos:content-length" in cond
               for st in policy["statement"]
               for cond in (st.get("condition") or {}).values())


@pytest.fixture(scope="module")
def changed_template(dev_launcher):
    """Starts its own `stsgate dev`, takes a credential under the seeded template, then saves
    LIMITED_TEMPLATE with `stsgate admin set-template` while the gateway runs, and waits until
    the gateway hands out credentials rendered from it (Postgres NOTIFY → app cache)."""
    with dev_launcher() as gw:
        old = gw.credentials("alice")
        assert not has_content_length_condition(gw.issued_policy(old["credentials"]["tmpSecretId"]))
        gw.set_template(LIMITED_TEMPLATE, note="interop: content-length limit")
        deadline = time.monotonic() + 10
        while True:
            new = gw.credentials("alice")
            tmp_id = new["credentials"]["tmpSecretId"]
            if tmp_id != old["credentials"]["tmpSecretId"] and has_content_length_condition(
                    gw.issued_policy(tmp_id)):
                break
            assert time.monotonic() < deadline, (
                "the running gateway still renders the old template 10 s after set-template")
            time.sleep(0.2)
        yield gw, old, new


@pytest.mark.parametrize("style", ["proxy", "domain"])
def test_content_length_condition_refuses_an_oversized_upload(changed_template, style):
    gw, old, new = changed_template
    client = cos_client(gw, new, style)
    at_limit = os.urandom(LIMIT)
    client.put_object(Bucket=gw.bucket, Key="users/alice/at-limit-%s.bin" % style, Body=at_limit)
    assert body_of(client.get_object(Bucket=gw.bucket, Key="users/alice/at-limit-%s.bin" % style)) == at_limit
    oversized = "users/alice/over-limit-%s.bin" % style
    with pytest.raises(CosServiceError) as e:
        client.put_object(Bucket=gw.bucket, Key=oversized, Body=os.urandom(LIMIT + 1))
    assert_denied(e)
    with pytest.raises(CosServiceError) as e:
        client.get_object(Bucket=gw.bucket, Key=oversized)
    assert_denied(e, code="NoSuchKey", status=404)  # nothing was stored
    # Her prefix only, under the new template too.
    with pytest.raises(CosServiceError) as e:
        client.put_object(Bucket=gw.bucket, Key="users/bob/small.bin", Body=b"x")
    assert_denied(e)
    # A credential minted before the change has no limit: STS credentials cannot be revoked,
    # which is why durations should stay short (README "Security notes").
    cos_client(gw, old, style).put_object(Bucket=gw.bucket, Key=oversized, Body=os.urandom(LIMIT + 1))


def test_listing_the_whole_bucket_when_the_template_grants_it(changed_template):
    gw, _old, new = changed_template
    put_as(gw, "bob", "users/bob/listed.txt", b"bob")  # bob's new credentials, same template
    client = cos_client(gw, new, "domain")
    client.put_object(Bucket=gw.bucket, Key="users/alice/listed.txt", Body=b"alice")
    listed = client.list_objects(Bucket=gw.bucket)
    keys = [c["Key"] for c in listed["Contents"]]
    assert "users/alice/listed.txt" in keys and "users/bob/listed.txt" in keys, keys
    # Listing shows bob's key, but reading it is still refused.
    with pytest.raises(CosServiceError) as e:
        client.get_object(Bucket=gw.bucket, Key="users/bob/listed.txt")
    assert_denied(e)
