//! Certificates for a RaftCluster: a cluster CA and the member certificate it
//! signs, as PEM, built with rcgen. Pure (no Kubernetes): the reconciler puts
//! the results in Secrets, the tests write them to files.
//!
//! One member certificate serves every member of a cluster: its SANs cover
//! every pod (a wildcard over the headless `<cluster>-peers` Service, plus
//! each current pod by name), the client Services, and localhost. It is both
//! a server and a client certificate, since members dial each other with it.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// A certificate and its private key, PEM-encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertPem {
    pub cert: String,
    pub key: String,
}

/// When a certificate is valid.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From a minute ago (tolerating small clock skew) for `lifetime`.
    pub fn starting_now(lifetime: Duration) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::minutes(1),
            not_after: now + lifetime,
        }
    }
}

fn serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive and without a leading zero byte, as DER integers want.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

/// The CA's parameters; the same name gives the same subject, so a stored CA
/// key can sign again without parsing its certificate.
fn ca_params(common_name: &str, validity: Validity) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "kuberaft");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.serial_number = Some(serial());
    params
}

/// A new self-signed CA named `common_name`.
pub fn new_ca(common_name: &str, validity: Validity) -> Result<CertPem, String> {
    let key = KeyPair::generate().map_err(|e| format!("cannot generate a CA key: {e}"))?;
    let cert = ca_params(common_name, validity)
        .self_signed(&key)
        .map_err(|e| format!("cannot sign the CA certificate: {e}"))?;
    Ok(CertPem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A leaf certificate for `sans` (DNS names or IP addresses; the first is
/// also its common name), good for serving and for dialling (mutual TLS),
/// signed by `ca` (made by [`new_ca`] with `ca_common_name`).
pub fn issue(
    ca: &CertPem,
    ca_common_name: &str,
    sans: &[String],
    validity: Validity,
) -> Result<CertPem, String> {
    let ca_key = KeyPair::from_pem(&ca.key).map_err(|e| format!("the CA key is unusable: {e}"))?;
    let issuer = Issuer::new(ca_params(ca_common_name, validity), ca_key);
    let mut params = CertificateParams::new(sans.to_vec())
        .map_err(|e| format!("a SAN is not a valid DNS name or IP address: {e}"))?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        sans.first().map_or("kuberaft member", String::as_str),
    );
    dn.push(DnType::OrganizationName, "kuberaft");
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.serial_number = Some(serial());
    let key = KeyPair::generate().map_err(|e| format!("cannot generate a key: {e}"))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| format!("cannot sign the certificate: {e}"))?;
    Ok(CertPem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// The SANs of a cluster's member certificate: every possible pod's DNS name (up to the
/// largest allowed cluster, so scaling needs no new certificate), with and without the
/// cluster domain, the client and leader Services, and localhost.
pub fn member_sans(cluster: &str, namespace: &str, cluster_domain: &str) -> Vec<String> {
    use crate::resources::{
        MAX_REPLICAS, client_service_name, leader_service_name, peers_service_name, pod_name,
    };
    let peers = peers_service_name(cluster);
    let mut sans = Vec::new();
    for ordinal in 0..MAX_REPLICAS {
        let pod = pod_name(cluster, ordinal);
        sans.push(format!("{pod}.{peers}.{namespace}.svc.{cluster_domain}"));
        sans.push(format!("{pod}.{peers}.{namespace}.svc"));
    }
    for service in [client_service_name(cluster), leader_service_name(cluster)] {
        sans.push(format!("{service}.{namespace}.svc.{cluster_domain}"));
        sans.push(format!("{service}.{namespace}.svc"));
        sans.push(format!("{service}.{namespace}"));
        sans.push(service);
    }
    sans.push("localhost".to_string());
    sans.push("127.0.0.1".to_string());
    sans
}

/// What a PEM certificate says about itself, for rotation decisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub not_before: i64,
    pub not_after: i64,
    /// DNS names and IP addresses, as text.
    pub sans: Vec<String>,
    pub is_ca: bool,
}

/// Parses the first certificate of a PEM text.
pub fn inspect(pem: &str) -> Result<CertInfo, String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    let cert = block
        .parse_x509()
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => sans.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(ip) => match ip.len() {
                    4 => sans.push(std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string()),
                    16 => {
                        let mut b = [0u8; 16];
                        b.copy_from_slice(ip);
                        sans.push(std::net::Ipv6Addr::from(b).to_string());
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        sans,
        is_ca: cert.is_ca(),
    })
}

/// Whether a certificate valid from `not_before` to `not_after` should be
/// replaced at `now`: when less than a third of its lifetime is left.
pub fn needs_renewal(info: &CertInfo, now: i64) -> bool {
    let lifetime = (info.not_after - info.not_before).max(1);
    info.not_after - now < lifetime / 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_certificate_names_its_sans_and_chains_to_the_ca() {
        let v = Validity::starting_now(Duration::days(90));
        let ca = new_ca("demo CA", v).unwrap();
        let sans = vec![
            "*.demo-peers.ns.svc".to_string(),
            "demo.ns.svc".to_string(),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ];
        let leaf = issue(&ca, "demo CA", &sans, v).unwrap();
        let info = inspect(&leaf.cert).unwrap();
        assert_eq!(info.sans, sans);
        assert!(!info.is_ca);
        assert!(inspect(&ca.cert).unwrap().is_ca);
        let lifetime = info.not_after - info.not_before;
        assert!(
            (90 * 86400..=90 * 86400 + 120).contains(&lifetime),
            "{lifetime}"
        );

        // rustls accepts it for a pod name, signed by this CA.
        let mut roots = rustls::RootCertStore::empty();
        use rustls_pki_types::pem::PemObject;
        roots
            .add(rustls_pki_types::CertificateDer::from_pem_slice(ca.cert.as_bytes()).unwrap())
            .unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .unwrap();
        let der = rustls_pki_types::CertificateDer::from_pem_slice(leaf.cert.as_bytes()).unwrap();
        use rustls::client::danger::ServerCertVerifier;
        let now = rustls_pki_types::UnixTime::now();
        let name = rustls_pki_types::ServerName::try_from("demo-2.demo-peers.ns.svc").unwrap();
        verifier
            .verify_server_cert(&der, &[], &name, &[], now)
            .unwrap();
        let other = rustls_pki_types::ServerName::try_from("demo-2.other-peers.ns.svc").unwrap();
        assert!(
            verifier
                .verify_server_cert(&der, &[], &other, &[], now)
                .is_err()
        );
    }

    #[test]
    fn member_sans_cover_every_possible_pod_and_the_services() {
        let sans = member_sans("demo", "ns", "cluster.local");
        assert!(sans.contains(&"demo-8.demo-peers.ns.svc.cluster.local".to_string()));
        assert!(sans.contains(&"demo-0.demo-peers.ns.svc".to_string()));
        assert!(sans.contains(&"demo-leader.ns.svc".to_string()));
        assert!(sans.contains(&"demo".to_string()));
        assert!(sans.contains(&"127.0.0.1".to_string()));
        let v = Validity::starting_now(Duration::days(1));
        let ca = new_ca("demo CA", v).unwrap();
        assert_eq!(
            inspect(&issue(&ca, "demo CA", &sans, v).unwrap().cert)
                .unwrap()
                .sans,
            sans
        );
    }

    #[test]
    fn renewal_starts_when_a_third_of_the_lifetime_is_left() {
        let info = CertInfo {
            not_before: 0,
            not_after: 90,
            sans: vec![],
            is_ca: false,
        };
        assert!(!needs_renewal(&info, 10));
        assert!(!needs_renewal(&info, 60));
        assert!(needs_renewal(&info, 61));
        assert!(needs_renewal(&info, 100));
    }
}
