//! Reading a `Logical_Router_Policy.match` far enough to tell whether it can match a
//! peering's traffic: the common forms only (`ip4.dst == X`, `ip6.src == {X, Y}`,
//! `inport == "p"`, `ip4`, `ip6`, `ip`, `1`, joined by `&&`). Anything else (`||`, `!`, `!=`,
//! parentheses, address sets `$as`, other fields) is not read: the caller reports it as a
//! match it cannot judge, never guesses.

use ipnet::IpNet;

use crate::peering::Family;

/// One `&&`-joined clause of a match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clause {
    /// `ip4`, `ip6`: only this family; `ip` or `1`: any packet (`None`).
    Any(Option<Family>),
    /// `ip4.dst == ...` / `ip6.dst == ...`: the destination is in one of these.
    Dst(Vec<IpNet>),
    /// `ip4.src == ...` / `ip6.src == ...`: the source is in one of these.
    Src(Vec<IpNet>),
    /// `inport == "name"`.
    Inport(String),
}

/// A class of packets: its family, sources, destinations and the port it enters by
/// (`inport_is` true: exactly `port`; false: any port but `port`).
#[derive(Debug, Clone, Copy)]
pub struct Traffic<'a> {
    pub family: Family,
    pub src: &'a [IpNet],
    pub dst: &'a [IpNet],
    pub port: &'a str,
    pub inport_is: bool,
}

/// The clauses of `m`, or the part that cannot be read.
pub fn parse(m: &str) -> Result<Vec<Clause>, String> {
    let m = m.trim();
    for bad in ["||", "!", "(", ")", "$", "@"] {
        if m.contains(bad) {
            return Err(format!("{bad:?} is not read"));
        }
    }
    m.split("&&").map(|c| clause(c.trim())).collect()
}

fn clause(c: &str) -> Result<Clause, String> {
    match c {
        "1" | "ip" => return Ok(Clause::Any(None)),
        "ip4" => return Ok(Clause::Any(Some(Family::V4))),
        "ip6" => return Ok(Clause::Any(Some(Family::V6))),
        _ => {}
    }
    let Some((field, value)) = c.split_once("==") else {
        return Err(format!("clause {c:?} is not read"));
    };
    let (field, value) = (field.trim(), value.trim());
    let family = match field {
        "ip4.dst" | "ip4.src" => Family::V4,
        "ip6.dst" | "ip6.src" => Family::V6,
        "inport" => {
            let name = value.trim_matches('"');
            if name.is_empty() || name.contains(['"', ' ', '{']) {
                return Err(format!("clause {c:?} is not read"));
            }
            return Ok(Clause::Inport(name.to_string()));
        }
        _ => return Err(format!("field {field:?} is not read")),
    };
    let nets = nets(value, family).ok_or_else(|| format!("value {value:?} is not read"))?;
    Ok(if field.ends_with(".dst") {
        Clause::Dst(nets)
    } else {
        Clause::Src(nets)
    })
}

/// `10.0.0.0/8`, `10.0.0.1`, or `{a, b c}` of those, all of `family`.
fn nets(value: &str, family: Family) -> Option<Vec<IpNet>> {
    let items: Vec<&str> = match value.strip_prefix('{') {
        Some(rest) => rest
            .strip_suffix('}')?
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .collect(),
        None => vec![value],
    };
    if items.is_empty() {
        return None;
    }
    items
        .into_iter()
        .map(|s| {
            let net = s
                .parse::<IpNet>()
                .ok()
                .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))?;
            (Family::of(&net) == family).then_some(net)
        })
        .collect()
}

/// Whether a match of these clauses can match some packet of `t`.
pub fn can_match(clauses: &[Clause], t: Traffic<'_>) -> bool {
    let any_of = |nets: &[IpNet], set: &[IpNet]| {
        nets.iter()
            .any(|n| set.iter().any(|s| crate::peering::overlaps(n, s)))
    };
    !t.dst.is_empty()
        && clauses.iter().all(|c| match c {
            Clause::Any(f) => f.is_none_or(|f| f == t.family),
            Clause::Dst(nets) => any_of(nets, t.dst),
            Clause::Src(nets) => any_of(nets, t.src),
            Clause::Inport(p) => (p == t.port) == t.inport_is,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn reads_the_common_forms() {
        assert_eq!(
            parse("ip4.dst == 10.2.0.0/16").unwrap(),
            vec![Clause::Dst(vec![n("10.2.0.0/16")])]
        );
        assert_eq!(
            parse(r#"inport == "lrp-1" && ip4.src == {10.1.0.0/24, 10.1.1.5} && ip4"#).unwrap(),
            vec![
                Clause::Inport("lrp-1".into()),
                Clause::Src(vec![n("10.1.0.0/24"), n("10.1.1.5/32")]),
                Clause::Any(Some(Family::V4)),
            ]
        );
        assert_eq!(parse("1").unwrap(), vec![Clause::Any(None)]);
        assert_eq!(
            parse("ip6.dst == fd10::/64").unwrap(),
            vec![Clause::Dst(vec![n("fd10::/64")])]
        );
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for m in [
            "ip4.dst == $as1",
            "ip4.dst == 10.0.0.0/8 || ip4.src == 10.0.0.0/8",
            "ip4.dst != 10.0.0.0/8",
            "!(ip4.dst == 10.0.0.0/8)",
            "tcp.dst == 80",
            "ip4.dst == fd00::/64",
            "ip4.dst == 10.0.0.0/33",
            "",
        ] {
            assert!(parse(m).is_err(), "{m:?} should not be read");
        }
    }

    #[test]
    fn matches_by_destination_source_family_and_port() {
        let (src, dst) = ([n("10.1.0.0/24")], [n("10.2.0.0/24")]);
        let out = Traffic {
            family: Family::V4,
            src: &src,
            dst: &dst,
            port: "vpc-1-vpc-2",
            inport_is: false,
        };
        let m = |s: &str| can_match(&parse(s).unwrap(), out);
        assert!(m("ip4.dst == 10.2.0.128/25"), "part of the peer's subnet");
        assert!(m("ip4.dst == 10.0.0.0/8"), "a broad prefix");
        assert!(m("ip4"));
        assert!(m("ip4.src == 10.1.0.0/16 && ip4.dst == 10.2.0.0/24"));
        assert!(!m("ip4.dst == 10.3.0.0/16"), "another destination");
        assert!(!m("ip4.src == 10.9.0.0/16"), "another source");
        assert!(!m("ip6"), "another family");
        assert!(!m(r#"inport == "vpc-1-vpc-2""#), "enters by the peer port");
        assert!(m(r#"inport == "vpc-1-s0""#));
        let inbound = Traffic {
            inport_is: true,
            ..out
        };
        assert!(can_match(
            &parse(r#"inport == "vpc-1-vpc-2""#).unwrap(),
            inbound
        ));
        let none = Traffic { dst: &[], ..out };
        assert!(!can_match(&parse("1").unwrap(), none), "no traffic at all");
    }
}
