//! How secrets look where they are shown at all: the change log, the pages, an apply's plan.

/// What a secret reads as in the change log.
pub const REDACTED: &str = "[redacted]";

/// `AKID…wxyz`: enough to recognise a key, not enough to use it.
pub fn mask_secret_id(secret_id: &str) -> String {
    let n = secret_id.chars().count();
    if n <= 12 {
        return REDACTED.to_owned();
    }
    let head: String = secret_id.chars().take(4).collect();
    let tail: String = secret_id.chars().skip(n - 4).collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_ids_are_masked() {
        assert_eq!(
            mask_secret_id("AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE"),
            "AKID…MPLE"
        );
        assert_eq!(mask_secret_id("short"), REDACTED);
    }
}
