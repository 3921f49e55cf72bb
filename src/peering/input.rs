//! Limits on the free-text fields of every RPC, one constant per limit, and the one check
//! that applies them (NUL and other control characters, length) before a string goes
//! anywhere near Postgres. Field-specific rules (a peering name is a DNS label, a VPC name
//! has no comma) stay in [`super::validate`]; its [`MAX_NAME_LEN`] and [`MAX_VPC_LEN`] are
//! the limits for names and VPCs on every RPC.
//!
//! Also the canonical form of a CreatePeering request, whose hash is kept beside its
//! `request_id` so that a reused request_id with another request can be told apart.

use sha2::{Digest, Sha256};

use super::validate::ValidatedPeering;
pub use super::validate::{MAX_NAME_LEN, MAX_VPC_LEN};
use super::{RouteSpec, Violation};

/// Longest `request_id` (bytes).
pub const MAX_REQUEST_ID_LEN: usize = 128;
/// Longest `page_token` (bytes): ours are base64 of a name or route key and a filter.
pub const MAX_PAGE_TOKEN_LEN: usize = 2048;
/// Longest address text (`*_connect_ip`, a route's `cidr`): a dual-stack pair with prefix
/// lengths is under 100 bytes.
pub const MAX_ADDRESS_LEN: usize = 128;

/// A violation on `field` when `value` has a control character (NUL included) or is longer
/// than `max` bytes.
pub fn check_text(field: &str, value: &str, max: usize) -> Option<Violation> {
    if value.len() > max {
        Some(Violation::new(field, format!("is longer than {max} bytes")))
    } else if value.chars().any(char::is_control) {
        Some(Violation::new(
            field,
            "contains a NUL or another control character",
        ))
    } else {
        None
    }
}

/// SHA-256 of the canonical form of a valid request: the same peering asked for twice gives
/// the same hash whatever the order of its explicit routes or the spelling of its policies.
pub fn request_fingerprint(v: &ValidatedPeering) -> Vec<u8> {
    let routes = |rs: &[RouteSpec]| {
        let mut rs: Vec<String> = rs
            .iter()
            .map(|r| format!("{} {}", r.policy.as_ovn_str(), r.prefix))
            .collect();
        rs.sort();
        rs
    };
    let link = v
        .link
        .map(|(l, r)| (l.to_string(), r.to_string()))
        .unwrap_or_default();
    let canonical = serde_json::json!({
        "name": v.name,
        "local_vpc": v.local_vpc,
        "remote_vpc": v.remote_vpc,
        "local_connect_ip": link.0,
        "remote_connect_ip": link.1,
        "local_routes": routes(&v.local_routes),
        "remote_routes": routes(&v.remote_routes),
    });
    Sha256::digest(canonical.to_string().as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peering::validate::{validate_spec, UncheckedPeering, UncheckedRoute};

    #[test]
    fn text_limits() {
        assert!(check_text("name", "p1", 63).is_none());
        assert!(check_text("name", "", 63).is_none());
        let v = check_text("name", "a\0b", 63).unwrap();
        assert_eq!(v.field, "name");
        assert!(v.description.contains("NUL"));
        assert!(check_text("vpc", "a\u{1b}[31m", 200).is_some());
        assert!(check_text("vpc", "a\u{85}", 200).is_some());
        let v = check_text("request_id", &"x".repeat(129), MAX_REQUEST_ID_LEN).unwrap();
        assert!(v.description.contains("128"), "{v:?}");
        assert!(check_text("vpc", "vpc-ü", 200).is_none());
    }

    fn validated(routes: &[(&str, i32)]) -> ValidatedPeering {
        validate_spec(&UncheckedPeering {
            name: "p1".into(),
            local_vpc: "vpc-1".into(),
            remote_vpc: "vpc-2".into(),
            local_routes: routes
                .iter()
                .map(|(c, p)| UncheckedRoute {
                    cidr: c.to_string(),
                    // The API's numbering: 0 unspecified, 1 dst-ip, 2 src-ip.
                    policy: match *p {
                        0 | 1 => Ok(crate::peering::RoutePolicy::DstIp),
                        2 => Ok(crate::peering::RoutePolicy::SrcIp),
                        other => Err(other),
                    },
                })
                .collect(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn fingerprint_is_canonical() {
        let a = validated(&[("10.1.0.0/16", 0), ("10.2.0.0/16", 1)]);
        let b = validated(&[("10.2.0.0/16", 0), ("10.1.0.0/16", 1)]);
        assert_eq!(request_fingerprint(&a), request_fingerprint(&b));
        let c = validated(&[("10.1.0.0/16", 0)]);
        assert_ne!(request_fingerprint(&a), request_fingerprint(&c));
        let mut d = a.clone();
        d.remote_vpc = "vpc-3".into();
        assert_ne!(request_fingerprint(&a), request_fingerprint(&d));
    }
}
