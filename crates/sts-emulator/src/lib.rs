//! A faithful local stand-in for Tencent Cloud STS (`sts.tencentcloudapi.com`).
//!
//! It verifies TC3 and v1 (HmacSHA1/HmacSHA256, form POST and GET) signatures against its
//! configured accounts, enforces STS's limits and answers with STS's error codes, always with
//! HTTP 200 and a `RequestId`. Every credential it issues is remembered so that tests (and the
//! COS data plane) can look it up. Faults (latency, error rates, forced codes, dropped
//! connections, a skewed clock) can be set at start and changed at run time.
//!
//! Test-only endpoints live under `/_emulator/`: `GET /_emulator/credentials`,
//! `GET /_emulator/stats` and `GET|PUT /_emulator/faults`.

mod account;
mod faults;
mod server;
mod store;
mod sts;

pub use account::{Account, AccountParseError};
pub use faults::Faults;
pub use server::{EmulatorConfig, EmulatorHandle, start};
pub use store::{IssuedCredential, Stats};
