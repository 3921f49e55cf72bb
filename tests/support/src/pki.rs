//! Throwaway TLS certificates made by Open vSwitch's own `ovs-pki`, as operators make them:
//! a switch CA, a server certificate (for `ovsdb-server --remote=pssl:`) and a client one.
//!
//! `ovs-pki init` takes seconds, so a test binary makes at most two PKIs ([`pki`] and
//! [`other_pki`], independent CAs, the second for "wrong CA" tests), once each. Their
//! directories live as long as the test binary's temp files (a static is never dropped).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// A private key and its certificate.
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub key: PathBuf,
    pub cert: PathBuf,
}

/// An `ovs-pki` CA with one server and one client certificate signed by it.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    pub server: KeyPair,
    pub client: KeyPair,
}

/// The PKI most tests use.
pub fn pki() -> &'static Pki {
    static P: OnceLock<Pki> = OnceLock::new();
    P.get_or_init(Pki::create)
}

/// [`pki`] with a server certificate signed by the same CA that expired in 2020.
pub fn expired_server_pki() -> &'static Pki {
    static P: OnceLock<Pki> = OnceLock::new();
    P.get_or_init(|| pki().with_expired_server_cert())
}

/// A second, unrelated PKI: its certificates do not chain to [`pki`]'s CA.
pub fn other_pki() -> &'static Pki {
    static P: OnceLock<Pki> = OnceLock::new();
    P.get_or_init(Pki::create)
}

fn ovs_pki(dir: &Path, args: &[&str]) {
    let out = Command::new("ovs-pki")
        .arg("-d")
        .arg(dir.join("pki"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ovs-pki (package openvswitch-common): {e}"));
    assert!(
        out.status.success(),
        "ovs-pki {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// `ovs-pki init`, then `req+sign server switch` and `req+sign client switch`.
    pub fn create() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("pki-")
            .tempdir()
            .expect("tempdir")
            .keep();
        ovs_pki(&dir, &["init"]);
        let pair = |name: &str| {
            ovs_pki(&dir, &["req+sign", name, "switch"]);
            KeyPair {
                key: dir.join(format!("{name}-privkey.pem")),
                cert: dir.join(format!("{name}-cert.pem")),
            }
        };
        let server = pair("server");
        let client = pair("client");
        Pki {
            dir,
            server,
            client,
        }
    }

    /// The same CA and client, with the server's key re-signed for 2020-01-01 to 2020-01-02
    /// (`openssl ca` with ovs-pki's own CA configuration, in the CA's directory).
    fn with_expired_server_cert(&self) -> Pki {
        let cert = self.dir.join("server-expired-cert.pem");
        let out = Command::new("openssl")
            .args(["ca", "-config", "ca.cnf", "-batch", "-notext", "-in"])
            .arg(self.dir.join("server-req.pem"))
            .arg("-out")
            .arg(&cert)
            .args([
                "-startdate",
                "20200101000000Z",
                "-enddate",
                "20200102000000Z",
            ])
            .current_dir(self.dir.join("pki/switchca"))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
        assert!(
            out.status.success(),
            "openssl ca failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Pki {
            dir: self.dir.clone(),
            server: KeyPair {
                key: self.server.key.clone(),
                cert,
            },
            client: self.client.clone(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate both certificates are signed by.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("pki/switchca/cacert.pem")
    }

    /// `ovsdb-server` options to serve `pssl:` with the server certificate, requiring clients
    /// to present a certificate signed by this CA.
    pub fn server_args(&self) -> Vec<String> {
        vec![
            format!("--private-key={}", self.server.key.display()),
            format!("--certificate={}", self.server.cert.display()),
            format!("--ca-cert={}", self.ca_cert().display()),
        ]
    }

    /// `ovn-nbctl`'s `-p KEY -c CERT -C CACERT` with the client certificate.
    pub fn client_args(&self) -> Vec<String> {
        vec![
            format!("--private-key={}", self.client.key.display()),
            format!("--certificate={}", self.client.cert.display()),
            format!("--ca-cert={}", self.ca_cert().display()),
        ]
    }

    /// Copies the client's three files into `dir` as `key.pem`, `cert.pem`, `cacert.pem`
    /// (replacing them: how a test rotates certificates on disk) and returns their paths.
    pub fn install_client_files(&self, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let key = dir.join("key.pem");
        let cert = dir.join("cert.pem");
        let ca = dir.join("cacert.pem");
        for (from, to) in [
            (&self.client.key, &key),
            (&self.client.cert, &cert),
            (&self.ca_cert(), &ca),
        ] {
            std::fs::copy(from, to).expect("copy certificate file");
        }
        (key, cert, ca)
    }
}
