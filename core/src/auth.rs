//! The operator's tokens (one reads, one deletes): kept only as digests, compared in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::limits::MIN_TOKEN_CHARS;

/// A configured token (`WAU_READ_TOKEN` or `ADMIN_TOKEN`), held as its SHA-256 digest.
///
/// It has no `Debug` or `Display`, so it cannot end up in a log line. Comparing fixed-length
/// digests with `subtle` takes the same time whatever the guess's content or length.
pub struct Token {
    digest: [u8; 32],
}

/// A configured token that cannot be used: shorter than [`MIN_TOKEN_CHARS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooShort;

impl Token {
    /// The token from configuration: unset or empty is none (what it guards does not exist);
    /// shorter than [`MIN_TOKEN_CHARS`] characters is refused, since a short one can be
    /// guessed by a client that spreads its guesses over many addresses.
    pub fn from_configured(value: Option<&str>) -> Result<Option<Self>, TooShort> {
        match value.filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) if v.chars().count() < MIN_TOKEN_CHARS => Err(TooShort),
            Some(v) => Ok(Some(Self {
                digest: Sha256::digest(v.as_bytes()).into(),
            })),
        }
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

    /// Whether two configured tokens are the same secret.
    pub fn same_as(&self, other: &Token) -> bool {
        bool::from(self.digest.ct_eq(&other.digest))
    }
}

/// The operator's two tokens: the read token opens the readout, the admin token deletes a
/// session's records. Either unset: what it guards answers 404.
#[derive(Default)]
pub struct Tokens {
    pub read: Option<Token>,
    pub admin: Option<Token>,
}

fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    let token = rest.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "s3cret-token-of-thirty-two-chars";

    #[test]
    fn unset_or_empty_token_means_none_and_a_short_one_is_refused() {
        assert!(matches!(Token::from_configured(None), Ok(None)));
        assert!(matches!(Token::from_configured(Some("")), Ok(None)));
        let short = &TOKEN[..MIN_TOKEN_CHARS - 1];
        assert!(matches!(Token::from_configured(Some(short)), Err(TooShort)));
        assert!(matches!(Token::from_configured(Some(TOKEN)), Ok(Some(_))));
        // Characters, not bytes: 31 two-byte characters are still too short.
        let wide = "é".repeat(MIN_TOKEN_CHARS - 1);
        assert!(matches!(Token::from_configured(Some(&wide)), Err(TooShort)));
    }

    #[test]
    fn only_the_exact_token_as_a_bearer_is_admitted() {
        let token = Token::from_configured(Some(TOKEN)).unwrap().unwrap();
        assert!(token.admits(Some(&format!("Bearer {TOKEN}"))));
        assert!(token.admits(Some(&format!("bearer {TOKEN}"))));
        assert!(token.admits(Some(&format!("BEARER   {TOKEN}"))));
        let truncated = format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]);
        let longer = format!("Bearer {TOKEN}2");
        let upper = format!("Bearer {}", TOKEN.to_uppercase());
        let no_scheme = TOKEN.to_owned();
        let basic = format!("Basic {TOKEN}");
        let glued = format!("Bearer{TOKEN}");
        for wrong in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer "),
            Some(no_scheme.as_str()),
            Some(basic.as_str()),
            Some(truncated.as_str()),
            Some(longer.as_str()),
            Some(upper.as_str()),
            Some(glued.as_str()),
        ] {
            assert!(!token.admits(wrong), "{wrong:?}");
        }
    }

    #[test]
    fn two_tokens_are_the_same_secret_only_when_equal() {
        let a = Token::from_configured(Some(TOKEN)).unwrap().unwrap();
        let b = Token::from_configured(Some(TOKEN)).unwrap().unwrap();
        let other = format!("{TOKEN}-other");
        let c = Token::from_configured(Some(&other)).unwrap().unwrap();
        assert!(a.same_as(&b));
        assert!(!a.same_as(&c));
    }
}
