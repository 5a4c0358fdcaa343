//! The public side of stsgate: JWT verification (static keys and JWKS), the issuance service
//! (app cache, rate limits, credential cache with single-flight, group-committed audit) and
//! the HTTP handlers and metrics.

pub mod apps;
pub mod audit;
mod clock;
pub mod cluster;
pub mod cooldown;
pub mod cors;
pub mod credcache;
pub mod deadline;
pub mod error;
pub mod http;
pub mod jwt;
pub mod metrics;
pub mod openapi;
pub mod ratelimit;
pub mod response;
pub mod service;
pub mod startup;

pub use error::ApiError;
pub use startup::{Gateway, GatewayConfig, follow_changes};
