//! Limits on the free-text fields of every RPC, one constant per limit, and the one check
//! that applies them (NUL and other control characters, length) before a string goes
//! anywhere near Postgres. Field-specific rules (a peering name is a DNS label, a VPC name
//! has no comma) stay in [`super::validate`]; its [`MAX_NAME_LEN`] and [`MAX_VPC_LEN`] are
//! the limits for names and VPCs on every RPC.
//!
//! Also the canonical form of a CreatePeering request, whose hash is kept beside its
//! `request_id` so that a reused request_id with another request can be told apart.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::validate::{UncheckedRoute, ValidatedPeering};
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
/// Labels count only when there are some, so requests fingerprinted before labels existed
/// keep their hash.
pub fn request_fingerprint(v: &ValidatedPeering, labels: &BTreeMap<String, String>) -> Vec<u8> {
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
    let mut canonical = canonical;
    if !labels.is_empty() {
        canonical["labels"] = serde_json::json!(labels);
    }
    Sha256::digest(canonical.to_string().as_bytes()).to_vec()
}

/// What an UpdatePeering request asks for, before it is judged against the stored peering:
/// `None` for a field outside its update mask.
#[derive(Debug, Clone, Default)]
pub struct UpdateRequest<'a> {
    /// The peering's name.
    pub name: &'a str,
    /// New labels.
    pub labels: Option<&'a BTreeMap<String, String>>,
    /// New routes into local_vpc.
    pub local_routes: Option<&'a [UncheckedRoute]>,
    /// New routes into remote_vpc.
    pub remote_routes: Option<&'a [UncheckedRoute]>,
}

/// SHA-256 of the canonical form of an UpdatePeering request (the etag and validate_only
/// aside): the same fields with the same values, routes in any order, give the same hash.
pub fn update_fingerprint(u: &UpdateRequest<'_>) -> Vec<u8> {
    let routes = |rs: Option<&[UncheckedRoute]>| {
        rs.map(|rs| {
            let mut rs: Vec<String> = rs
                .iter()
                .map(|r| {
                    let policy = match r.policy {
                        Ok(p) => p.as_ovn_str().to_string(),
                        Err(n) => n.to_string(),
                    };
                    format!("{policy} {}", r.cidr.trim())
                })
                .collect();
            rs.sort();
            rs
        })
    };
    let canonical = serde_json::json!({
        "rpc": "UpdatePeering",
        "name": u.name,
        "labels": u.labels,
        "local_routes": routes(u.local_routes),
        "remote_routes": routes(u.remote_routes),
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
        let none = BTreeMap::new();
        let a = validated(&[("10.1.0.0/16", 0), ("10.2.0.0/16", 1)]);
        let b = validated(&[("10.2.0.0/16", 0), ("10.1.0.0/16", 1)]);
        assert_eq!(
            request_fingerprint(&a, &none),
            request_fingerprint(&b, &none)
        );
        let c = validated(&[("10.1.0.0/16", 0)]);
        assert_ne!(
            request_fingerprint(&a, &none),
            request_fingerprint(&c, &none)
        );
        let mut d = a.clone();
        d.remote_vpc = "vpc-3".into();
        assert_ne!(
            request_fingerprint(&a, &none),
            request_fingerprint(&d, &none)
        );
        let labels = BTreeMap::from([("tenant".to_string(), "a".to_string())]);
        assert_ne!(
            request_fingerprint(&a, &none),
            request_fingerprint(&a, &labels)
        );
    }

    #[test]
    fn update_fingerprint_is_canonical() {
        let route = |c: &str, p| UncheckedRoute {
            cidr: c.into(),
            policy: p,
        };
        let dst = Ok(crate::peering::RoutePolicy::DstIp);
        let ab = [route("10.1.0.0/17", dst), route("10.1.128.0/17", dst)];
        let ba = [route("10.1.128.0/17", dst), route("10.1.0.0/17", dst)];
        let u = |routes| UpdateRequest {
            name: "p1",
            local_routes: Some(routes),
            ..Default::default()
        };
        assert_eq!(update_fingerprint(&u(&ab)), update_fingerprint(&u(&ba)));
        assert_ne!(
            update_fingerprint(&u(&ab)),
            update_fingerprint(&u(&ab[..1]))
        );
        let remote = UpdateRequest {
            name: "p1",
            remote_routes: Some(&ab),
            ..Default::default()
        };
        assert_ne!(update_fingerprint(&u(&ab)), update_fingerprint(&remote));
    }
}
