//! Cluster mode (issue 12, DESIGN §8): three real `stsgate serve` processes on one PostgreSQL
//! and one STS emulator. The tests run one at a time (they measure rates) and print their
//! figures (`cargo test --test cluster -- --nocapture`).

#[allow(dead_code)]
#[path = "../e2e/process.rs"]
mod process;
#[allow(dead_code)]
#[path = "../e2e/support.rs"]
mod support;

mod budget;
mod harness;
mod rolling;
mod shared;
