//! Helpers the target-specific test files share.

pub mod wrangler;
