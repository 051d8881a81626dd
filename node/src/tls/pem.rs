//! Reading certificates, keys and CAs from PEM files, with errors that name
//! the file and say what to fix.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The flags a set of files came from, for error messages.
#[derive(Clone, Copy, Debug)]
pub struct Flags {
    pub cert: &'static str,
    pub key: &'static str,
    pub ca: &'static str,
}

impl Flags {
    /// The flags of the member's `peer` or `client` port.
    pub fn for_port(port: &str) -> Flags {
        if port == "peer" {
            Flags {
                cert: "--peer-cert-file",
                key: "--peer-key-file",
                ca: "--peer-trusted-ca-file",
            }
        } else {
            Flags {
                cert: "--client-cert-file",
                key: "--client-key-file",
                ca: "--client-trusted-ca-file",
            }
        }
    }
}

pub fn read(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {flag} {}: {e}", path.display()))
}

/// The certificate chain in a PEM file, leaf first.
pub fn certs(
    bytes: &[u8],
    path: &Path,
    flag: &str,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "{flag} {}: not a PEM certificate file ({e}); expected -----BEGIN CERTIFICATE----- blocks",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} {}: holds no certificate; expected -----BEGIN CERTIFICATE----- blocks",
            path.display()
        ));
    }
    for (i, c) in certs.iter().enumerate() {
        if x509_parser::parse_x509_certificate(c).is_err() {
            return Err(format!(
                "{flag} {}: certificate {} is not valid X.509",
                path.display(),
                i + 1
            ));
        }
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn key(bytes: &[u8], path: &Path, flag: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| {
        format!(
            "{flag} {}: no private key found ({e}); expected a -----BEGIN PRIVATE KEY----- block",
            path.display()
        )
    })
}

/// The trusted CA certificates in a PEM file.
pub fn roots(bytes: &[u8], path: &Path, flag: &str) -> Result<Arc<RootCertStore>, String> {
    let mut store = RootCertStore::empty();
    for cert in certs(bytes, path, flag)? {
        store.add(cert).map_err(|e| {
            format!(
                "{flag} {}: not a usable CA certificate: {e}",
                path.display()
            )
        })?;
    }
    Ok(Arc::new(store))
}

/// A certificate chain and its key, checked to belong together.
pub fn certified_key(
    cert_bytes: &[u8],
    key_bytes: &[u8],
    cert_path: &Path,
    key_path: &Path,
    flags: Flags,
) -> Result<Arc<CertifiedKey>, String> {
    let chain = certs(cert_bytes, cert_path, flags.cert)?;
    let key = key(key_bytes, key_path, flags.key)?;
    let provider = super::provider();
    let ck = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "{} {} does not belong to {} {}: the key does not match the certificate's public key",
            flags.key,
            key_path.display(),
            flags.cert,
            cert_path.display()
        ),
        e => format!(
            "{} {}: unusable private key: {e}",
            flags.key,
            key_path.display()
        ),
    })?;
    Ok(Arc::new(ck))
}

/// A one-line description of a certificate: subject, serial and validity,
/// for the logs. Also says whether it is expired or not yet valid.
pub struct CertSummary {
    pub subject: String,
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
}

impl CertSummary {
    pub fn of(der: &CertificateDer<'_>) -> Option<CertSummary> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        Some(CertSummary {
            subject: cert.subject().to_string(),
            serial: cert.raw_serial_as_string(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// Seconds since the epoch, now.
    pub fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    }

    pub fn expired(&self) -> bool {
        Self::now() > self.not_after
    }

    pub fn not_yet_valid(&self) -> bool {
        Self::now() < self.not_before
    }
}
