//! The dialling side: outgoing TLS for peer channels, forwarding to the
//! leader, raftctl and the operator's member client.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use super::conn::Conn;
use super::pem::{self, CertSummary, Flags};
use super::reload::Reloading;
use super::{ALPN_H2, TlsFiles, explain};

#[derive(Clone)]
enum Source {
    /// Rebuilt from files when they change (a member).
    Files(Reloading<ClientConfig>),
    /// Built once (raftctl, the operator, tests).
    Fixed(Arc<ClientConfig>),
}

/// How to dial TLS: the CA that must have signed the server's certificate
/// and, for mutual TLS, the certificate to present.
#[derive(Clone)]
pub struct ClientTls {
    source: Source,
    /// Where the trusted CA came from, for error messages.
    ca_hint: String,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.ca_hint)
            .finish()
    }
}

fn config(
    roots: Arc<rustls::RootCertStore>,
    identity: Option<Arc<rustls::sign::CertifiedKey>>,
) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(ck) => builder.with_client_cert_resolver(Arc::new(
            rustls::sign::SingleCertAndKey::from(Arc::unwrap_or_clone(ck)),
        )),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

impl ClientTls {
    /// A member's outgoing configuration for its `peer` or `client` port
    /// files: present the certificate, trust the CA. Reloaded by [`watch`].
    ///
    /// [`watch`]: ClientTls::watch
    pub fn load(port: &'static str, files: TlsFiles) -> Result<ClientTls, String> {
        let flags = Flags::for_port(port);
        let ca = files
            .ca
            .clone()
            .ok_or_else(|| format!("{port} TLS needs {}", flags.ca))?;
        let list = vec![
            (files.cert.clone(), flags.cert),
            (files.key.clone(), flags.key),
            (ca.clone(), flags.ca),
        ];
        let what = format!("{port} dialling");
        let config = Reloading::new(what, list, move |c| {
            let ck = pem::certified_key(&c[0], &c[1], &files.cert, &files.key, flags)?;
            let leaf = ck.cert.first().and_then(CertSummary::of);
            let roots = pem::roots(&c[2], &ca, flags.ca)?;
            let description = super::server::describe(
                &format!("{port} dialling"),
                &files.cert,
                leaf.as_ref(),
                false,
            );
            Ok((config(roots, Some(ck))?, description))
        })?;
        Ok(ClientTls {
            source: Source::Files(config),
            ca_hint: flags.ca.to_string(),
        })
    }

    /// raftctl's `--cacert` and, for client certificate authentication,
    /// `--cert` and `--key`. Read once.
    pub fn from_files(
        cacert: &Path,
        cert_and_key: Option<(PathBuf, PathBuf)>,
    ) -> Result<ClientTls, String> {
        let flags = Flags {
            cert: "--cert",
            key: "--key",
            ca: "--cacert",
        };
        let roots = pem::roots(&pem::read(cacert, flags.ca)?, cacert, flags.ca)?;
        let identity = match cert_and_key {
            Some((cert, key)) => Some(pem::certified_key(
                &pem::read(&cert, flags.cert)?,
                &pem::read(&key, flags.key)?,
                &cert,
                &key,
                flags,
            )?),
            None => None,
        };
        Ok(ClientTls {
            source: Source::Fixed(Arc::new(config(roots, identity)?)),
            ca_hint: format!("--cacert {}", cacert.display()),
        })
    }

    /// From PEM text in memory (the operator reads it from a Secret).
    pub fn from_pem(
        what: &str,
        ca: &[u8],
        cert_and_key: Option<(&[u8], &[u8])>,
    ) -> Result<ClientTls, String> {
        let here = Path::new(what);
        let flags = Flags {
            cert: "certificate",
            key: "key",
            ca: "CA",
        };
        let roots = pem::roots(ca, here, flags.ca)?;
        let identity = match cert_and_key {
            Some((cert, key)) => Some(pem::certified_key(cert, key, here, here, flags)?),
            None => None,
        };
        Ok(ClientTls {
            source: Source::Fixed(Arc::new(config(roots, identity)?)),
            ca_hint: format!("the CA of {what}"),
        })
    }

    pub fn watch(&self, interval: Duration) {
        if let Source::Files(r) = &self.source {
            r.watch(interval);
        }
    }

    /// Reads the files now, if any (tests; the watch task does this).
    pub fn reload(&self) -> bool {
        match &self.source {
            Source::Files(r) => r.reload(),
            Source::Fixed(_) => false,
        }
    }

    pub fn current(&self) -> Arc<ClientConfig> {
        match &self.source {
            Source::Files(r) => r.current(),
            Source::Fixed(c) => c.clone(),
        }
    }

    /// Runs the client handshake over `tcp` with the server named `host`
    /// (a DNS name or an IP address, which its certificate must list). The
    /// error explains the failure and what to do.
    pub async fn connect(&self, tcp: TcpStream, host: &str) -> io::Result<Conn> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{host:?} is not a name a TLS certificate can hold: {e}"),
            )
        })?;
        let connector = tokio_rustls::TlsConnector::from(self.current());
        match connector.connect(name, tcp).await {
            Ok(s) => Ok(Conn::Tls(Box::new(s.into()))),
            Err(e) => {
                let why = explain::connect_error(&e, &self.ca_hint)
                    .unwrap_or_else(|| format!("TLS handshake failed: {e}"));
                Err(io::Error::new(
                    e.kind(),
                    TlsConnectError {
                        message: format!("TLS with {host}: {why}"),
                        source: e,
                    },
                ))
            }
        }
    }
}

/// A failed outgoing handshake: the explanation, keeping the cause.
#[derive(Debug)]
pub struct TlsConnectError {
    message: String,
    source: io::Error,
}

impl std::fmt::Display for TlsConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TlsConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}
