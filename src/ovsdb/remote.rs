//! Remote addresses (`tcp:HOST:PORT`, `unix:PATH`, `ssl:..`) and opening a byte stream to one.
//!
//! Owns only parsing and connecting; framing lives in `jsonrpc`, connections in `connection`,
//! the TLS handshake and certificate checks of `ssl:` in `tls`.

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::error::Error;
use super::tls::{self, TlsFiles};

/// One server address, in `ovn-nbctl --db` syntax.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Remote {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
    Ssl { host: String, port: u16 },
}

impl Remote {
    /// Parses one remote: `tcp:HOST:PORT`, `tcp:[IPv6]:PORT`, `unix:PATH`, `ssl:HOST:PORT`.
    pub fn parse(s: &str) -> Result<Remote, Error> {
        let s = s.trim();
        let bad = |reason: &str| Error::InvalidRemote {
            remote: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = s.split_once(':').ok_or_else(|| bad("missing scheme"))?;
        match scheme {
            "unix" => {
                if rest.is_empty() {
                    return Err(bad("empty path"));
                }
                Ok(Remote::Unix(PathBuf::from(rest)))
            }
            "tcp" | "ssl" => {
                let (host, port) =
                    split_host_port(rest).ok_or_else(|| bad("expected HOST:PORT"))?;
                let port: u16 = port.parse().map_err(|_| bad("invalid port"))?;
                if host.is_empty() {
                    return Err(bad("empty host"));
                }
                let host = host.to_owned();
                Ok(if scheme == "tcp" {
                    Remote::Tcp { host, port }
                } else {
                    Remote::Ssl { host, port }
                })
            }
            _ => Err(bad("unknown scheme (expected tcp:, unix: or ssl:)")),
        }
    }

    /// Parses a comma-separated list (a Raft cluster's members). Empty entries are skipped.
    pub fn parse_list(s: &str) -> Result<Vec<Remote>, Error> {
        let list: Vec<Remote> = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(Remote::parse)
            .collect::<Result<_, _>>()?;
        if list.is_empty() {
            return Err(Error::NoRemotes);
        }
        Ok(list)
    }

    /// Opens a byte stream to the remote; `ssl:` needs `tls` (its files are read now, so a
    /// rotated certificate is used from the next connection on).
    pub async fn connect(&self, tls: Option<&TlsFiles>) -> Result<Stream, Error> {
        match self {
            Remote::Tcp { host, port } => Ok(Stream::Tcp(tcp(host, *port).await?)),
            Remote::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path).await?)),
            Remote::Ssl { host, port } => {
                let files = tls.ok_or_else(|| Error::TlsNotConfigured(self.to_string()))?;
                let s = tcp(host, *port).await?;
                let s = tls::handshake(files, host, s).await?;
                Ok(Stream::Tls(Box::new(s)))
            }
        }
    }

    pub fn is_ssl(&self) -> bool {
        matches!(self, Remote::Ssl { .. })
    }
}

async fn tcp(host: &str, port: u16) -> Result<TcpStream, Error> {
    let s = TcpStream::connect((host, port)).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return Some((host, port));
    }
    s.rsplit_once(':')
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hp = |f: &mut fmt::Formatter<'_>, scheme: &str, host: &str, port: u16| {
            if host.contains(':') {
                write!(f, "{scheme}:[{host}]:{port}")
            } else {
                write!(f, "{scheme}:{host}:{port}")
            }
        };
        match self {
            Remote::Tcp { host, port } => hp(f, "tcp", host, *port),
            Remote::Ssl { host, port } => hp(f, "ssl", host, *port),
            Remote::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl std::str::FromStr for Remote {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Remote::parse(s)
    }
}

/// A connected byte stream.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists() {
        let l = Remote::parse_list("tcp:127.0.0.1:6641, unix:/x.sock,ssl:[::1]:6643").unwrap();
        assert_eq!(
            l,
            vec![
                Remote::Tcp {
                    host: "127.0.0.1".into(),
                    port: 6641
                },
                Remote::Unix("/x.sock".into()),
                Remote::Ssl {
                    host: "::1".into(),
                    port: 6643
                },
            ]
        );
        assert_eq!(l[2].to_string(), "ssl:[::1]:6643");
        assert_eq!(l[0].to_string(), "tcp:127.0.0.1:6641");
    }

    #[test]
    fn rejects_bad_remotes() {
        for s in [
            "",
            "tcp:1.2.3.4",
            "tcp::6641",
            "tcp:h:99999",
            "unix:",
            "udp:h:1",
            "h:1",
        ] {
            assert!(Remote::parse_list(s).is_err(), "{s}");
        }
    }

    #[tokio::test]
    async fn ssl_without_files_is_a_clear_error() {
        let r = Remote::parse("ssl:127.0.0.1:1").unwrap();
        assert!(matches!(
            r.connect(None).await,
            Err(Error::TlsNotConfigured(_))
        ));
    }
}
