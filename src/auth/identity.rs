//! Who a caller is: read once per connection from its client certificate (the TLS layer has
//! already verified it against `--tls-client-ca`), and handed to every request of that
//! connection as a request extension.

use x509_parser::extensions::GeneralName;

/// The caller of a request, as the connection established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A connection without a client certificate: plaintext, or TLS without
    /// `--tls-client-ca`. Such a caller is an admin when no policy is set (a policy
    /// requires client certificates).
    Unauthenticated,
    /// A verified client certificate's identity.
    Identity(String),
}

impl Caller {
    /// The identity for logs: the certificate's, or `-`.
    pub fn name(&self) -> &str {
        match self {
            Caller::Unauthenticated => "-",
            Caller::Identity(id) => id,
        }
    }
}

/// Connection facts tonic copies into every request of the connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The client's address.
    pub remote_addr: Option<std::net::SocketAddr>,
    /// Who it is.
    pub caller: Caller,
}

/// A certificate's identity: its first URI SAN (a SPIFFE ID), else its first DNS SAN, else
/// its subject CN. `None` when it has none of them or does not parse.
pub fn identity_of_cert(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let names: Vec<GeneralName<'_>> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| san.value.general_names.clone())
        .unwrap_or_default();
    let uri = names.iter().find_map(|n| match n {
        GeneralName::URI(u) => Some(*u),
        _ => None,
    });
    let dns = names.iter().find_map(|n| match n {
        GeneralName::DNSName(d) => Some(*d),
        _ => None,
    });
    if let Some(name) = uri.or(dns) {
        return Some(name.to_owned());
    }
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    cn
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    use super::*;

    fn cert(sans: Vec<SanType>, cn: Option<&str>) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        let mut dn = DistinguishedName::new();
        if let Some(cn) = cn {
            dn.push(DnType::CommonName, cn);
        }
        params.distinguished_name = dn;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn uri_san_then_dns_san_then_cn() {
        let uri = "spiffe://example.org/ns/a/sa/b";
        let both = cert(
            vec![
                SanType::DnsName("a.example.org".try_into().unwrap()),
                SanType::URI(uri.try_into().unwrap()),
                SanType::URI("spiffe://example.org/second".try_into().unwrap()),
            ],
            Some("the-cn"),
        );
        assert_eq!(identity_of_cert(&both).as_deref(), Some(uri));
        let dns = cert(
            vec![
                SanType::IpAddress("10.0.0.1".parse().unwrap()),
                SanType::DnsName("a.example.org".try_into().unwrap()),
                SanType::DnsName("b.example.org".try_into().unwrap()),
            ],
            Some("the-cn"),
        );
        assert_eq!(identity_of_cert(&dns).as_deref(), Some("a.example.org"));
        let cn = cert(vec![], Some("the-cn"));
        assert_eq!(identity_of_cert(&cn).as_deref(), Some("the-cn"));
        assert_eq!(identity_of_cert(&cert(vec![], None)), None);
        assert_eq!(identity_of_cert(b"not a certificate"), None);
    }
}
