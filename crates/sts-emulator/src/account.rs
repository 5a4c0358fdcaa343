use std::fmt;
use std::str::FromStr;

/// A permanent key the emulator accepts, and the APPID it owns.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    pub secret_id: String,
    pub secret_key: String,
    pub appid: String,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("secret_id", &self.secret_id)
            .field("appid", &self.appid)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("account must be SECRETID:SECRETKEY:APPID with a numeric APPID, got {0:?}")]
pub struct AccountParseError(String);

impl FromStr for Account {
    type Err = AccountParseError;

    /// Parses `SECRETID:SECRETKEY:APPID`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Do not echo the key back in the error.
        let redacted =
            || AccountParseError(s.split(':').next().unwrap_or_default().to_owned() + ":…");
        let mut parts = s.split(':');
        let (Some(id), Some(key), Some(appid), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(redacted());
        };
        if id.is_empty()
            || key.is_empty()
            || appid.is_empty()
            || !appid.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(redacted());
        }
        Ok(Self {
            secret_id: id.to_owned(),
            secret_key: key.to_owned(),
            appid: appid.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_without_echoing_the_key() {
        let a: Account = "AKID1:key1:1250000000".parse().unwrap();
        assert_eq!(a.secret_id, "AKID1");
        assert_eq!(a.appid, "1250000000");
        let err = "AKID1:topsecret"
            .parse::<Account>()
            .unwrap_err()
            .to_string();
        assert!(!err.contains("topsecret"), "{err}");
        assert!("AKID1:k:notdigits".parse::<Account>().is_err());
        assert!(!format!("{a:?}").contains("key1"));
    }
}
