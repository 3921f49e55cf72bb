//! Resume tokens: opaque to clients, base64 (URL-safe, unpadded) of a small versioned JSON
//! struct naming the deployment (the database the position belongs to) and the position in
//! its change log. Pure: no I/O.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The only version written and read.
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Token {
    /// Version of this struct.
    v: u32,
    /// The deployment (database) whose log `s` is a position in.
    d: Uuid,
    /// Every change up to and including this `seq` was delivered (or filtered out).
    s: i64,
}

/// Why a resume token was refused (each an INVALID_ARGUMENT on `resume_token`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not base64 of a token.
    #[error("not a resume_token from a previous WatchPeerings response")]
    Malformed,
    /// A version this ovn-peerd does not know.
    #[error("a resume_token of version {0}, which this ovn-peerd does not read")]
    Version(u32),
    /// Made by another deployment (another database).
    #[error("the resume_token belongs to another ovn-peerd deployment (another database)")]
    OtherDeployment,
}

/// The token for position `seq` of `deployment`'s log.
pub fn encode(deployment: Uuid, seq: i64) -> String {
    let json = serde_json::to_vec(&Token {
        v: VERSION,
        d: deployment,
        s: seq,
    })
    .unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// The position a token names, if it is one of `deployment`'s.
pub fn decode(token: &str, deployment: Uuid) -> Result<i64, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed)?;
    // The version first, so that a later version with other fields is named as such.
    #[derive(Deserialize)]
    struct Versioned {
        v: u32,
    }
    let Versioned { v } = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    if v != VERSION {
        return Err(TokenError::Version(v));
    }
    let t: Token = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    if t.s < 0 {
        return Err(TokenError::Malformed);
    }
    if t.d != deployment {
        return Err(TokenError::OtherDeployment);
    }
    Ok(t.s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Uuid = Uuid::from_u128(7);

    #[test]
    fn round_trip() {
        assert_eq!(decode(&encode(D, 42), D), Ok(42));
        assert_eq!(decode(&encode(D, 0), D), Ok(0));
    }

    #[test]
    fn refusals() {
        assert_eq!(decode("!!!", D), Err(TokenError::Malformed));
        assert_eq!(decode("", D), Err(TokenError::Malformed));
        let raw = |json: &str| URL_SAFE_NO_PAD.encode(json);
        assert_eq!(decode(&raw("{}"), D), Err(TokenError::Malformed));
        assert_eq!(
            decode(&raw(r#"{"v":2,"x":1}"#), D),
            Err(TokenError::Version(2))
        );
        assert_eq!(
            decode(&raw(&format!(r#"{{"v":1,"d":"{D}","s":-1}}"#)), D),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            decode(&encode(Uuid::from_u128(8), 1), D),
            Err(TokenError::OtherDeployment)
        );
    }
}
