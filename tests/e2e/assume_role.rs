//! An app in AssumeRole mode end to end: the role ARN, the session name and the ExternalId
//! reach STS, and the credential STS returns works on COS inside the user's prefix only.

use policy_store::StsMode;
use policy_store::testing::seed_app;
use serde_json::Value;
use sts_core::cos::{self, CosRequest};

use crate::support::*;

const ROLE_ARN: &str = "qcs::cam::uin/100000000001:roleName/stsgate-e2e";
const EXTERNAL_ID: &str = "e2e-external-id-42";

/// Sends a COS request for `key` to the emulator, signed with `creds` as the COS SDKs sign it
/// (virtual-host style, `host` signed, the session token in `x-cos-security-token`).
async fn cos_request(
    app: &TestApp,
    creds: &Value,
    method: &str,
    key: &str,
    body: &[u8],
) -> reqwest::Response {
    let host = format!("{BUCKET}.cos.{REGION}.myqcloud.com");
    let path = format!("/{key}");
    let signature = cos::sign(
        creds["tmpSecretKey"].as_str().unwrap(),
        now() - 60,
        now() + 600,
        &CosRequest {
            method,
            path: &path,
            params: &[],
            headers: &[("host", host.as_str())],
        },
    );
    app.http
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", app.emulator.url()),
        )
        .header("host", &host)
        .header(
            "authorization",
            signature.authorization(creds["tmpSecretId"].as_str().unwrap()),
        )
        .header(
            "x-cos-security-token",
            creds["sessionToken"].as_str().unwrap(),
        )
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assume_role_sends_the_role_and_its_credential_works_on_cos() {
    let app = TestApp::spawn().await;
    let opts = Options::default();
    let vault = seed_app(&*app.store, "test", &seed_options("vault", &opts))
        .await
        .unwrap();
    let mut input = app_input("vault", &opts);
    input.mode = StsMode::AssumeRole;
    input.role_arn = Some(ROLE_ARN.into());
    input.external_id = Some(EXTERNAL_ID.into());
    app.edit_app(vault.id, &input).await;

    let res = app
        .get("/v1/apps/vault/credentials", Some(&app.token("alice")))
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["prefix"], "users/alice/");
    let creds = &body["credentials"];
    let tmp_secret_id = creds["tmpSecretId"].as_str().unwrap();

    // What reached STS, as the emulator's own API reports it.
    let issued: Value = app
        .http
        .get(format!(
            "{}/_emulator/credentials?tmp_secret_id={tmp_secret_id}",
            app.emulator.url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let issued = &issued["issued"];
    assert_eq!(issued.as_array().unwrap().len(), 1, "{issued}");
    let issued = &issued[0];
    assert_eq!(issued["action"], "AssumeRole");
    assert_eq!(issued["role_arn"], ROLE_ARN);
    assert_eq!(issued["name"], "alice", "the role session name");
    assert_eq!(issued["external_id"], EXTERNAL_ID);
    assert_eq!(issued["secret_id"], ACCOUNT_ID);
    assert_eq!(issued["request_id"], body["requestId"]);
    let resources = issued["policy"]["statement"][0]["resource"].to_string();
    assert!(resources.contains("/users/alice/*"), "{resources}");

    // The credential works on COS inside alice's prefix, and only there.
    let res = cos_request(&app, creds, "PUT", "users/alice/hello.txt", b"hello").await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let res = cos_request(&app, creds, "GET", "users/alice/hello.txt", b"").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"hello");
    let res = cos_request(&app, creds, "PUT", "users/bob/hello.txt", b"hi").await;
    assert_eq!(res.status(), 403, "{}", res.text().await.unwrap());
    app.shutdown().await;
}
