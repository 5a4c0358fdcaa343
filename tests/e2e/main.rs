//! End-to-end tests: the real gateway (in-process, or the real binary) against real PostgreSQL
//! (a fresh database per test) and the STS emulator. One runner, modules inside (STYLE §6).

mod admin_api;
mod admin_tokens;
mod assume_role;
mod binary;
mod changes;
mod credential_cache;
mod deadlines;
mod dev_security;
mod failures;
mod security;
mod support;
mod vending;
