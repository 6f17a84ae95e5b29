//! The bearer check: never panics, admits a header only when it carries exactly the
//! configured token after a case-insensitive `Bearer` scheme, and always admits the plain
//! `Bearer <token>` form.
//!
//! Input: `configured token\nAuthorization header`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemetry_core::Token;
use telemetry_core::limits::MIN_TOKEN_CHARS;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let (configured, header) = text.split_once('\n').unwrap_or((text, ""));
    let token = match Token::from_configured(Some(configured)) {
        Ok(Some(token)) => token,
        Ok(None) => return assert!(configured.is_empty()),
        Err(_) => return assert!(configured.chars().count() < MIN_TOKEN_CHARS),
    };
    if token.admits(Some(header)) {
        let header = header.trim();
        assert!(
            header
                .get(..6)
                .is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
        );
        assert!(header.ends_with(configured), "admitted another token");
        assert!(header.len() > configured.len() + 6);
    }
    if configured.trim() == configured && !configured.contains(' ') {
        assert!(token.admits(Some(&format!("Bearer {configured}"))));
    }
    assert!(!token.admits(None));
});
