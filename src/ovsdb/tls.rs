//! TLS for `ssl:` remotes, verified the way Open vSwitch verifies its peers.
//!
//! Owns loading the three PEM files (`ovn-nbctl -p/-c/-C`: private key, certificate, CA
//! certificate), the certificate check, the TLS handshake and turning its failures into
//! errors an operator can act on. Knows nothing about OVSDB.
//!
//! What is verified, on every connection:
//! - the server's certificate chains (through any intermediates it sends) to the CA
//!   certificate(s) in the CA file, every signature on the path checks out, and every
//!   certificate on the path is within its validity period (webpki, `now` = the system clock);
//! - the server proves it holds the certificate's key (the TLS handshake signature);
//! - we present our certificate and key (`ovsdb-server --ca-cert` requires a client
//!   certificate and checks it against its own CA).
//!
//! What is **not** verified, as in OVS: the host name or IP address. `ovs-pki` certificates carry
//! a CN such as `nb id:<uuid>`, never the address a client dials, so any server holding a
//! certificate from the CA is accepted for any `ssl:` remote. Revocation (CRLs, OCSP) is not
//! checked either (OVS does not). Trust therefore rests on the CA: give ovn-peerd the CA that
//! signs only the OVN databases' certificates, not a shared one.
//!
//! The files are read again for every connection attempt, so certificates rotated on disk are
//! used from the next reconnect on, without a restart.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::error::Error;

/// The three PEM files of an `ssl:` client, as `ovn-nbctl -p KEY -c CERT -C CACERT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Our private key (`-p`), PKCS#8, PKCS#1 or SEC1.
    pub private_key: PathBuf,
    /// Our certificate (`-c`), optionally followed by its chain.
    pub certificate: PathBuf,
    /// The CA certificate(s) the server's certificate must chain to (`-C`).
    pub ca_cert: PathBuf,
}

impl TlsFiles {
    /// Reads the files now and builds a connector from them.
    fn connector(&self) -> Result<TlsConnector, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = load_roots(&self.ca_cert)?;
        let chain = load_certs("certificate", &self.certificate)?;
        let key = PrivateKeyDer::from_pem_file(&self.private_key)
            .map_err(|e| file_error("private key", &self.private_key, e))?;
        let verifier = CaOnlyVerifier {
            roots,
            algs: provider.signature_verification_algorithms,
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::TlsConfig(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(chain, key)
            .map_err(|e| {
                Error::TlsConfig(format!(
                    "certificate {} and private key {} do not go together: {e}",
                    self.certificate.display(),
                    self.private_key.display()
                ))
            })?;
        Ok(TlsConnector::from(Arc::new(config)))
    }
}

/// Runs the TLS handshake on a connected socket (the files are read first, every time).
pub(super) async fn handshake(
    files: &TlsFiles,
    host: &str,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, Error> {
    let connector = files.connector()?;
    // Only used for SNI (not sent for IP addresses); the name is never checked.
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| Error::TlsConfig(format!("host {host:?}: {e}")))?;
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| Error::TlsHandshake {
            hint: hint(&e),
            cause: e,
        })
}

fn file_error(what: &str, path: &Path, e: impl fmt::Display) -> Error {
    Error::TlsConfig(format!("cannot load {what} {}: {e}", path.display()))
}

fn load_certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(what, path, e))?;
    if certs.is_empty() {
        return Err(file_error(what, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn load_roots(path: &Path) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs("CA certificate", path)? {
        roots
            .add(cert)
            .map_err(|e| file_error("CA certificate", path, e))?;
    }
    Ok(roots)
}

/// What most likely went wrong, in words, from the handshake's error.
fn hint(e: &std::io::Error) -> &'static str {
    use rustls::Error as E;
    match e.get_ref().and_then(|i| i.downcast_ref::<E>()) {
        Some(E::InvalidCertificate(c)) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                "the server's certificate is not signed by the CA certificate we were given"
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate (or its CA's) is outside its validity period"
            }
            _ => "the server's certificate was refused",
        },
        Some(E::AlertReceived(_)) => {
            "the server refused the handshake: is our certificate signed by the CA the server \
             trusts (its --ca-cert), and still valid?"
        }
        Some(E::InvalidMessage(_)) | Some(E::InappropriateMessage { .. }) => {
            "the server does not speak TLS: is it a plaintext (ptcp:) remote?"
        }
        _ if e.kind() == std::io::ErrorKind::UnexpectedEof
            || e.kind() == std::io::ErrorKind::ConnectionReset =>
        {
            "the server closed the connection during the handshake: is it a plaintext (ptcp:) \
             remote, or did it refuse our certificate?"
        }
        _ => "TLS handshake failed",
    }
}

/// Chain and validity-time verification against our CA only; no host name check (see the
/// module doc for why).
#[derive(Debug)]
struct CaOnlyVerifier {
    roots: RootCertStore,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for CaOnlyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    fn wrapped(e: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn hints_name_the_likely_mistake() {
        let ca = hint(&wrapped(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        )));
        assert!(ca.contains("not signed by the CA"), "{ca}");
        let expired = hint(&wrapped(rustls::Error::InvalidCertificate(
            CertificateError::Expired,
        )));
        assert!(expired.contains("validity period"), "{expired}");
        let alert = hint(&wrapped(rustls::Error::AlertReceived(
            rustls::AlertDescription::UnknownCA,
        )));
        assert!(alert.contains("our certificate"), "{alert}");
        let eof = hint(&io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "tls handshake eof",
        ));
        assert!(eof.contains("plaintext"), "{eof}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let files = TlsFiles {
            private_key: "/nonexistent/key.pem".into(),
            certificate: "/nonexistent/cert.pem".into(),
            ca_cert: "/nonexistent/cacert.pem".into(),
        };
        let err = files
            .connector()
            .err()
            .expect("connector without files")
            .to_string();
        assert!(
            err.contains("CA certificate") && err.contains("/nonexistent/cacert.pem"),
            "{err}"
        );
    }
}
