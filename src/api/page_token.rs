//! Opaque page tokens: base64 of a small JSON cursor, bound to the filter used.
//!
//! Pages are keyset-based (by name for peerings; by peering, then route key, for routes), so
//! they stay stable while rows are added: a page never repeats or skips a row
//! that existed when the listing started.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::error::ApiError;

/// Default and largest page sizes.
pub const DEFAULT_PAGE_SIZE: i64 = 100;
/// Largest page size; larger requests are clamped.
pub const MAX_PAGE_SIZE: i64 = 1000;

#[derive(Serialize, Deserialize)]
struct Cursor {
    /// The filter the listing started with; a token is refused under another.
    f: String,
    /// The last key returned.
    k: String,
}

/// Encodes a cursor after `last_key` for a listing filtered by `filter`.
pub fn encode(filter: &str, last_key: &str) -> String {
    let json = serde_json::to_vec(&Cursor {
        f: filter.to_owned(),
        k: last_key.to_owned(),
    })
    .unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// Decodes a page token; empty means the first page.
pub fn decode(token: &str, filter: &str) -> Result<Option<String>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || ApiError::invalid("page_token", "not a page token from a previous response");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if cursor.f != filter {
        return Err(ApiError::invalid(
            "page_token",
            "the page token belongs to a listing with another filter",
        ));
    }
    Ok(Some(cursor.k))
}

/// Checks and defaults a page size.
pub fn page_size(requested: i32) -> Result<i64, ApiError> {
    match requested {
        n if n < 0 => Err(ApiError::invalid("page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok(i64::from(n).min(MAX_PAGE_SIZE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = encode("vpc-1", "peer-a");
        assert_eq!(decode(&t, "vpc-1").unwrap().as_deref(), Some("peer-a"));
        assert!(decode("", "x").unwrap().is_none());
    }

    #[test]
    fn refuses_garbage_and_other_filters() {
        assert!(decode("!!!", "").is_err());
        assert!(decode(&URL_SAFE_NO_PAD.encode(b"{}"), "").is_err());
        assert!(decode(&encode("vpc-1", "a"), "vpc-2").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(page_size(0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(5000).unwrap(), MAX_PAGE_SIZE);
        assert!(page_size(-1).is_err());
    }
}
