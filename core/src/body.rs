//! The body cap: a declared `Content-Length` is checked before any byte is read, and a
//! streamed body is counted chunk by chunk so that reading stops at the first byte too many.

use crate::limits::MAX_BODY_BYTES;
use crate::rejection::Rejection;

/// Refuses a body from its declared length alone, before any of it is read.
///
/// An absent header (chunked transfer) passes here and is capped by [`CappedBody`]; a
/// header that is not a plain decimal number is refused, since the length is then unknown.
pub fn check_declared_length(content_length: Option<&str>) -> Result<(), Rejection> {
    let Some(raw) = content_length else {
        return Ok(());
    };
    let raw = raw.trim();
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Rejection::InvalidContentLength);
    }
    // Any digit string too long for u64 is far over the cap as well.
    match raw.parse::<u64>() {
        Ok(declared) if declared <= MAX_BODY_BYTES as u64 => Ok(()),
        _ => Err(Rejection::PayloadTooLarge),
    }
}

/// Refuses a body that ended before its declared length: the client gave up half-way, and
/// a truncated body must not be judged as if it were whole.
pub fn check_received_length(
    content_length: Option<&str>,
    received: usize,
) -> Result<(), Rejection> {
    match content_length.map(|raw| raw.trim().parse::<usize>()) {
        Some(Ok(declared)) if declared != received => Err(Rejection::IncompleteBody),
        _ => Ok(()),
    }
}

/// A body accumulated from a stream, never holding more than [`MAX_BODY_BYTES`].
#[derive(Debug, Default)]
pub struct CappedBody {
    bytes: Vec<u8>,
}

impl CappedBody {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one chunk, or refuses it whole when the body would pass the cap; the caller
    /// then stops reading and answers 413.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), Rejection> {
        if chunk.len() > MAX_BODY_BYTES - self.bytes.len() {
            return Err(Rejection::PayloadTooLarge);
        }
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn declared_length_at_the_cap_passes_and_one_more_is_refused() {
        assert_eq!(check_declared_length(Some("1024")), Ok(()));
        assert_eq!(
            check_declared_length(Some("1025")),
            Err(Rejection::PayloadTooLarge)
        );
        assert_eq!(check_declared_length(None), Ok(()));
        assert_eq!(
            check_declared_length(Some("99999999999999999999999")),
            Err(Rejection::PayloadTooLarge)
        );
        for bad in ["", "-1", "12a", "0x10", "+5"] {
            assert_eq!(
                check_declared_length(Some(bad)),
                Err(Rejection::InvalidContentLength),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_body_shorter_than_declared_is_incomplete() {
        assert_eq!(check_received_length(Some("150"), 150), Ok(()));
        assert_eq!(
            check_received_length(Some("500"), 150),
            Err(Rejection::IncompleteBody)
        );
        assert_eq!(check_received_length(None, 150), Ok(()));
    }

    #[test]
    fn a_refused_chunk_leaves_the_body_unchanged() {
        let mut body = CappedBody::new();
        body.push(&[b'a'; 1000]).unwrap();
        assert_eq!(body.push(&[b'b'; 25]), Err(Rejection::PayloadTooLarge));
        assert_eq!(body.len(), 1000);
        body.push(&[b'c'; 24]).unwrap();
        assert_eq!(body.len(), MAX_BODY_BYTES);
        assert_eq!(body.push(&[]), Ok(()));
        assert_eq!(body.push(b"d"), Err(Rejection::PayloadTooLarge));
    }

    proptest! {
        /// However a body is cut into chunks, the cap agrees with a plain length check and
        /// keeps exactly the bytes sent.
        #[test]
        fn cap_agrees_with_a_length_check_for_any_chunking(
            body in proptest::collection::vec(any::<u8>(), 0..3000),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..20),
        ) {
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
            points.push(0);
            points.push(body.len());
            points.sort_unstable();
            let mut capped = CappedBody::new();
            let mut refused = false;
            for pair in points.windows(2) {
                if capped.push(&body[pair[0]..pair[1]]).is_err() {
                    refused = true;
                    break;
                }
            }
            prop_assert_eq!(refused, body.len() > MAX_BODY_BYTES);
            if !refused {
                prop_assert_eq!(capped.as_bytes(), &body[..]);
            }
            prop_assert!(capped.len() <= MAX_BODY_BYTES);
        }
    }
}
