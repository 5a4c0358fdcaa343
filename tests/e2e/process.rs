//! The real `stsgate serve` binary as a child process, and a minimal admin-pages browser.
//! Used by the end-to-end tests and by tests/cluster (which includes this file).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_stsgate");

/// The master key of `policy_store::testing::test_cipher()`, so seeded rows decrypt in the
/// binary.
pub fn master_key_b64() -> String {
    use base64::Engine;
    format!(
        "test:{}",
        base64::engine::general_purpose::STANDARD.encode([0x42u8; 32])
    )
}

/// A running `stsgate serve`, killed (SIGKILL) when dropped unless it already exited.
pub struct ServeProcess {
    pub child: Child,
    pub public: String,
    pub admin: String,
}

impl ServeProcess {
    /// Starts `stsgate serve` on `database_url` with STS at `sts_url`, both listeners on port 0,
    /// plus `env`; returns once it logs "stsgate serving". Its later log lines are drained.
    pub fn start(database_url: &str, sts_url: &str, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", database_url)
            .env("STSGATE_MASTER_KEY", master_key_b64())
            .env("STSGATE_PUBLIC_LISTEN", "127.0.0.1:0")
            .env("STSGATE_ADMIN_LISTEN", "127.0.0.1:0")
            .env("STSGATE_STS__ENDPOINT", format!("{sts_url}/"))
            // No readiness drain at SIGTERM unless a test asks for one.
            .env("STSGATE_SHUTDOWN_DRAIN_SECS", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut captured = String::new();
        let (public, admin) = loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                let _ = child.kill();
                panic!("stsgate exited before serving:\n{captured}");
            }
            captured.push_str(&line);
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["message"] == "stsgate serving"
            {
                break (
                    v["public"].as_str().unwrap().to_owned(),
                    v["admin"].as_str().unwrap().to_owned(),
                );
            }
        };
        std::thread::spawn(move || for _ in stderr.lines() {});
        Self {
            child,
            public,
            admin,
        }
    }

    pub fn public_url(&self) -> String {
        format!("http://{}", self.public)
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (a graceful shutdown), and wait for it to exit; true when it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// A minimal browser for the admin pages: keeps cookies, finds CSRF tokens.
pub struct AdminBrowser {
    pub base: String,
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

impl AdminBrowser {
    pub fn new(base: String) -> Self {
        Self {
            base,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> (u16, String) {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let res = req
            .header("cookie", cookie)
            .header("sec-fetch-site", "same-origin")
            .send()
            .await
            .unwrap();
        for sc in res.headers().get_all("set-cookie") {
            let sc = sc.to_str().unwrap();
            let pair = sc.split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.insert(k.to_owned(), v.to_owned());
        }
        (res.status().as_u16(), res.text().await.unwrap())
    }

    pub async fn get(&mut self, path: &str) -> (u16, String) {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> (u16, String) {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                form.iter()
                    .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
                    .collect::<Vec<_>>()
                    .join("&"),
            );
        self.send(req).await
    }

    /// Signs in (a 303 to `/`).
    pub async fn sign_in(&mut self, username: &str, password: &str) {
        let (_, login) = self.get("/login").await;
        let token = csrf(&login);
        let (status, body) = self
            .post(
                "/login",
                &[
                    ("csrf", &token),
                    ("username", username),
                    ("password", password),
                    ("next", "/"),
                ],
            )
            .await;
        assert_eq!(status, 303, "sign-in refused: {body}");
    }

    /// Fills the form on `page` (its CSRF token) and posts `fields` to `action`.
    pub async fn submit(
        &mut self,
        page: &str,
        action: &str,
        fields: &[(&str, &str)],
    ) -> (u16, String) {
        let (_, body) = self.get(page).await;
        let token = csrf(&body);
        let mut form = vec![("csrf", token.as_str())];
        form.extend_from_slice(fields);
        self.post(action, &form).await
    }
}

/// `application/x-www-form-urlencoded` for one key or value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The first CSRF token on `page`.
pub fn csrf(page: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).expect("a CSRF token") + marker.len();
    page[start..start + page[start..].find('"').unwrap()].to_owned()
}
