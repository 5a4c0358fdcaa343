//! The admin pages over real HTTP against the real PostgreSQL (a fresh database per test).
//! One runner, modules inside (STYLE §6).

mod api;
mod flows;
mod log;
mod security;
mod signin;
mod support;
mod ux;
