use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds on the gateway's clock.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}
