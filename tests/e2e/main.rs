//! End-to-end tests: the real gateway (in-process, or the real binary) against real PostgreSQL
//! (a fresh database per test) and the STS emulator. One runner, modules inside (STYLE §6).

mod admin_api;
mod admin_tokens;
mod apply;
mod assume_role;
mod audit;
mod binary;
mod changes;
mod cors;
mod credential_cache;
mod deadlines;
mod deploy;
mod dev_security;
mod failures;
mod operator;
// Shared with tests/cluster, which uses the rest of it.
#[allow(dead_code)]
mod process;
mod refusals;
mod round_trips;
mod security;
mod support;
mod vending;
