//! The operator's read token: kept only as a digest, compared in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The configured `WAU_READ_TOKEN`, held as its SHA-256 digest.
///
/// It has no `Debug` or `Display`, so it cannot end up in a log line. Comparing fixed-length
/// digests with `subtle` takes the same time whatever the guess's content or length.
pub struct ReadToken {
    digest: [u8; 32],
}

impl ReadToken {
    /// The token from configuration; unset or empty means the readout does not exist.
    pub fn from_configured(value: Option<&str>) -> Option<Self> {
        value.filter(|v| !v.is_empty()).map(|v| Self {
            digest: Sha256::digest(v.as_bytes()).into(),
        })
    }

    /// Whether an `Authorization` header carries this token as `Bearer <token>`.
    /// The scheme is case-insensitive (RFC 7235); the token is compared as sent.
    pub fn admits(&self, authorization: Option<&str>) -> bool {
        let Some(token) = authorization.and_then(bearer_token) else {
            return false;
        };
        let offered: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        bool::from(self.digest.ct_eq(&offered))
    }
}

fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    let token = rest.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_or_empty_token_means_no_readout() {
        assert!(ReadToken::from_configured(None).is_none());
        assert!(ReadToken::from_configured(Some("")).is_none());
    }

    #[test]
    fn only_the_exact_token_as_a_bearer_is_admitted() {
        let token = ReadToken::from_configured(Some("s3cret-token")).unwrap();
        assert!(token.admits(Some("Bearer s3cret-token")));
        assert!(token.admits(Some("bearer s3cret-token")));
        assert!(token.admits(Some("BEARER   s3cret-token")));
        for wrong in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer "),
            Some("s3cret-token"),
            Some("Basic s3cret-token"),
            Some("Bearer s3cret-toke"),
            Some("Bearer s3cret-token2"),
            Some("Bearer S3CRET-TOKEN"),
            Some("Bearers3cret-token"),
        ] {
            assert!(!token.admits(wrong), "{wrong:?}");
        }
    }
}
