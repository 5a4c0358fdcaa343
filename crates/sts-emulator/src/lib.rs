//! A faithful local stand-in for Tencent Cloud STS (`sts.tencentcloudapi.com`) and for the COS
//! data plane that its credentials unlock.
//!
//! It verifies TC3 and v1 (HmacSHA1/HmacSHA256, form POST and GET) signatures against its
//! configured accounts, enforces STS's limits and answers with STS's error codes, always with
//! HTTP 200 and a `RequestId`. Every credential it issues is remembered so that tests (and the
//! COS data plane) can look it up. Faults (latency, error rates, forced codes, dropped
//! connections, a skewed clock) can be set at start and changed at run time.
//!
//! The COS data plane (module `cos`) shares the port: objects, listing, multipart and form
//! uploads in the buckets `<name>-<appid>` of every configured APPID, behind COS's signature
//! checks (header or presigned query) and the session policy of each temporary credential.
//! Objects live in memory, or under `EmulatorConfig::data_dir` across restarts. Response header
//! names go out in the case Tencent's services use (module `wire`).
//!
//! Test-only endpoints live under `/_emulator/`: `GET /_emulator/credentials`,
//! `GET /_emulator/stats`, `GET /_emulator/calls` and `GET|PUT /_emulator/faults`.

mod account;
mod cos;
mod faults;
mod server;
mod store;
mod sts;
mod wire;

pub use account::{Account, AccountParseError};
pub use faults::{Faults, Tamper};
pub use server::{EmulatorConfig, EmulatorHandle, start};
pub use store::{CallRecord, IssuedCredential, Stats};
