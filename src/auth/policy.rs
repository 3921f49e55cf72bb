//! The authorization policy: who is an admin, which tenant an identity acts for, which VPCs a
//! tenant owns, and the one decision on a create's pair of VPCs ([`Policy::create_decision`]).
//! Pure: parsed from TOML text, no I/O (the file is read and re-read by `reload.rs`).
//!
//! ```toml
//! admins = ["spiffe://example.org/ns/ops/sa/netops"]
//! [[tenants]]
//! name = "team-a"
//! identities = ["spiffe://example.org/ns/team-a/sa/orchestrator"]
//! vpcs = ["team-a-*"]
//! ```
//!
//! VPC patterns are globs: `*` any run of characters (also none), `?` one character,
//! everything else literal.

use serde::Deserialize;

/// A parsed policy file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Identities that may do everything.
    #[serde(default)]
    pub admins: Vec<String>,
    /// The tenants, each with its identities and VPC patterns.
    #[serde(default)]
    pub tenants: Vec<Tenant>,
}

/// One tenant.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    /// Its name, used in messages and logs.
    pub name: String,
    /// The caller identities acting for it.
    pub identities: Vec<String>,
    /// Glob patterns over the VPC names it owns.
    pub vpcs: Vec<String>,
}

/// Why a policy file is refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Not TOML of the expected shape.
    #[error("not a valid policy: {0}")]
    Parse(#[from] toml::de::Error),
    /// Well-formed but contradictory.
    #[error("invalid policy: {0}")]
    Invalid(String),
}

/// What an identity is under a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role<'a> {
    /// May do everything.
    Admin,
    /// Acts for this tenant.
    Tenant(&'a Tenant),
    /// Not named by the policy.
    Unknown,
}

/// The decision on a create's pair of VPCs for a tenant: the seam where the cross-tenant
/// accept flow plugs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateDecision {
    /// The tenant owns both VPCs.
    SameTenant,
    /// The tenant owns the local VPC; the remote one belongs to `remote_tenant`, whose
    /// acceptance the peering (with any routes it installs in the remote VPC) needs.
    CrossTenant {
        /// The owner of the remote VPC.
        remote_tenant: String,
        /// Whether the request installs explicit routes in the remote VPC.
        remote_routes: bool,
    },
    /// Not allowed at all; the message names what is missing.
    NotAllowed(String),
}

impl Policy {
    /// Parses and checks a policy file's text.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let policy: Policy = toml::from_str(text)?;
        let mut names = std::collections::BTreeSet::new();
        let mut identities = std::collections::BTreeMap::new();
        for id in &policy.admins {
            identities.insert(id.as_str(), "admins");
        }
        for t in &policy.tenants {
            if t.name.is_empty() {
                return Err(PolicyError::Invalid("a tenant has an empty name".into()));
            }
            if !names.insert(t.name.as_str()) {
                return Err(PolicyError::Invalid(format!(
                    "tenant {:?} is defined twice",
                    t.name
                )));
            }
            for id in &t.identities {
                // One identity acting for two tenants (or also as admin) would make every
                // decision depend on the order of the file.
                if let Some(other) = identities.insert(id.as_str(), t.name.as_str()) {
                    return Err(PolicyError::Invalid(format!(
                        "identity {id:?} is listed in both {other} and tenant {:?}",
                        t.name
                    )));
                }
            }
        }
        Ok(policy)
    }

    /// What `identity` is.
    pub fn role(&self, identity: &str) -> Role<'_> {
        if self.admins.iter().any(|a| a == identity) {
            return Role::Admin;
        }
        self.tenants
            .iter()
            .find(|t| t.identities.iter().any(|i| i == identity))
            .map_or(Role::Unknown, Role::Tenant)
    }

    /// The tenants owning `vpc` (normally one).
    pub fn owners<'a>(&'a self, vpc: &'a str) -> impl Iterator<Item = &'a Tenant> + 'a {
        self.tenants.iter().filter(move |t| t.owns(vpc))
    }

    /// Whether `tenant` may create a peering of `local` with `remote` (installing explicit
    /// routes in the remote VPC when `remote_routes`).
    pub fn create_decision(
        &self,
        tenant: &Tenant,
        local: &str,
        remote: &str,
        remote_routes: bool,
    ) -> CreateDecision {
        if !tenant.owns(local) {
            return CreateDecision::NotAllowed(format!(
                "local_vpc {local:?} is not a VPC of tenant {:?}",
                tenant.name
            ));
        }
        if tenant.owns(remote) {
            return CreateDecision::SameTenant;
        }
        match self.owners(remote).next() {
            Some(owner) => CreateDecision::CrossTenant {
                remote_tenant: owner.name.clone(),
                remote_routes,
            },
            None => CreateDecision::NotAllowed(format!(
                "remote_vpc {remote:?} is not a VPC of tenant {:?} nor of any other tenant",
                tenant.name
            )),
        }
    }
}

impl Tenant {
    /// Whether one of the tenant's patterns matches `vpc`.
    pub fn owns(&self, vpc: &str) -> bool {
        self.vpcs.iter().any(|p| glob_match(p, vpc))
    }
}

/// Glob match: `*` any run (also empty), `?` one character, the rest literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative with one backtrack point: linear-ish, no recursion blow-up on many stars.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A glob as a Postgres `LIKE` pattern (backslash escapes), so that a tenant's listing is
/// filtered and paged in the database.
pub fn glob_to_like(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 4);
    for c in pattern.chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
admins = ["spiffe://example.org/ns/ops/sa/netops"]

[[tenants]]
name = "team-a"
identities = ["spiffe://example.org/ns/team-a/sa/orchestrator"]
vpcs = ["team-a-*", "shared-a"]

[[tenants]]
name = "team-b"
identities = ["spiffe://example.org/ns/team-b/sa/orchestrator", "b.example.org"]
vpcs = ["team-b-*"]
"#;

    fn policy() -> Policy {
        Policy::parse(POLICY).unwrap()
    }

    #[test]
    fn globs() {
        assert!(glob_match("team-a-*", "team-a-web"));
        assert!(glob_match("team-a-*", "team-a-"));
        assert!(!glob_match("team-a-*", "team-b-web"));
        assert!(!glob_match("team-a-*", "xteam-a-web"));
        assert!(glob_match("vpc-?", "vpc-1"));
        assert!(!glob_match("vpc-?", "vpc-12"));
        assert!(glob_match("*-prod-*", "a-prod-b"));
        assert!(!glob_match("*-prod-*", "a-prod"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("", "x"));
        assert!(glob_match("a*b*c", "aXXbYYbc"));
    }

    #[test]
    fn globs_as_like_patterns() {
        assert_eq!(glob_to_like("team-a-*"), "team-a-%");
        assert_eq!(glob_to_like("vpc_?%\\"), "vpc\\__\\%\\\\");
    }

    #[test]
    fn admins_tenants_and_strangers() {
        let p = policy();
        assert_eq!(p.role("spiffe://example.org/ns/ops/sa/netops"), Role::Admin);
        match p.role("b.example.org") {
            Role::Tenant(t) => assert_eq!(t.name, "team-b"),
            other => panic!("{other:?}"),
        }
        assert_eq!(p.role("spiffe://example.org/ns/team-c/sa/x"), Role::Unknown);
        // Identities are compared whole, not as prefixes or globs.
        assert_eq!(
            p.role("spiffe://example.org/ns/ops/sa/netops2"),
            Role::Unknown
        );
    }

    #[test]
    fn ownership_by_pattern() {
        let p = policy();
        let a = &p.tenants[0];
        assert!(a.owns("team-a-web") && a.owns("shared-a"));
        assert!(!a.owns("team-b-web") && !a.owns("shared-a2"));
        assert_eq!(
            p.owners("team-b-db")
                .map(|t| &t.name[..])
                .collect::<Vec<_>>(),
            ["team-b"]
        );
        assert_eq!(p.owners("nobody").count(), 0);
    }

    #[test]
    fn the_create_decision() {
        let p = policy();
        let a = &p.tenants[0];
        assert_eq!(
            p.create_decision(a, "team-a-1", "team-a-2", true),
            CreateDecision::SameTenant
        );
        assert_eq!(
            p.create_decision(a, "team-a-1", "team-b-1", true),
            CreateDecision::CrossTenant {
                remote_tenant: "team-b".into(),
                remote_routes: true
            }
        );
        match p.create_decision(a, "team-b-1", "team-a-1", false) {
            CreateDecision::NotAllowed(m) => assert!(m.contains("local_vpc \"team-b-1\""), "{m}"),
            other => panic!("{other:?}"),
        }
        match p.create_decision(a, "team-a-1", "orphan", false) {
            CreateDecision::NotAllowed(m) => assert!(m.contains("remote_vpc \"orphan\""), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_policies_are_refused() {
        assert!(matches!(
            Policy::parse("admins = 3"),
            Err(PolicyError::Parse(_))
        ));
        assert!(matches!(
            Policy::parse("[[tenants]]\nname = \"a\"\nidentities = []\nvpcs = []\ncolour = 1"),
            Err(PolicyError::Parse(_))
        ));
        let twice = "[[tenants]]\nname=\"a\"\nidentities=[\"x\"]\nvpcs=[]\n\
                     [[tenants]]\nname=\"b\"\nidentities=[\"x\"]\nvpcs=[]";
        let e = Policy::parse(twice).unwrap_err().to_string();
        assert!(e.contains("\"x\"") && e.contains("tenant \"b\""), "{e}");
        assert_eq!(Policy::parse("").unwrap(), Policy::default());
    }
}
