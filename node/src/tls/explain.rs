//! TLS failures in words: what went wrong and what to do about it. Used on
//! both sides, so a refused member and the member refusing it both say why.

use rustls::{AlertDescription, CertificateError, Error};

/// The rustls error somewhere in `err`'s chain of sources, if any.
pub fn find_rustls<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<Error>() {
            return Some(r);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(r) = inner.downcast_ref::<Error>()
        {
            return Some(r);
        }
        cur = e.source();
    }
    None
}

fn certificate(e: &CertificateError, whose: &str, ca_hint: &str) -> String {
    match e {
        CertificateError::UnknownIssuer => format!(
            "{whose} certificate is not signed by a trusted CA ({ca_hint}): it belongs to another cluster or CA"
        ),
        CertificateError::BadSignature => format!(
            "{whose} certificate's signature does not verify against the trusted CA ({ca_hint})"
        ),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("{whose} certificate has expired ({e}); renew it")
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            format!("{whose} certificate is not valid yet ({e}); check the clocks")
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!(
                "{whose} certificate does not name the address dialled ({e}); add that name to the certificate's SANs or dial a name it has"
            )
        }
        other => format!("{whose} certificate is not acceptable: {other}"),
    }
}

/// Why the server side refused a handshake on its `port`.
pub fn accept_error(err: &std::io::Error, port: &str) -> String {
    let ca = if port == "peer" {
        "--peer-trusted-ca-file"
    } else {
        "--client-trusted-ca-file"
    };
    match find_rustls(err) {
        Some(Error::NoCertificatesPresented) => format!(
            "the client presented no certificate, but the {port} port requires one signed by {ca}"
        ),
        Some(Error::InvalidCertificate(c)) => certificate(c, "the client's", ca),
        Some(Error::AlertReceived(a)) => format!("the client aborted the handshake: {}", alert(*a)),
        Some(other) => format!("TLS handshake failed: {other}"),
        None => format!("TLS handshake failed: {err}"),
    }
}

/// Why an outgoing TLS connection failed; `ca_hint` names where the trusted
/// CA comes from (a flag).
pub fn connect_error(err: &(dyn std::error::Error + 'static), ca_hint: &str) -> Option<String> {
    Some(match find_rustls(err)?.clone() {
        Error::InvalidCertificate(c) => certificate(&c, "the server's", ca_hint),
        Error::AlertReceived(a) => format!("the server refused us: {}", alert(a)),
        Error::InvalidMessage(_) => {
            "the server does not speak TLS (it answered in plaintext): use an http:// endpoint without TLS flags, or turn TLS on for that port".to_string()
        }
        other => format!("TLS handshake failed: {other}"),
    })
}

/// A TLS alert from the other side, with what it usually means here.
pub fn alert(a: AlertDescription) -> String {
    match a {
        AlertDescription::UnknownCA => {
            "it does not trust our certificate's CA (alert UnknownCA); our certificate is from another cluster or CA".into()
        }
        AlertDescription::BadCertificate => {
            "it found our certificate bad (alert BadCertificate)".into()
        }
        AlertDescription::CertificateExpired => {
            "our certificate has expired (alert CertificateExpired); renew it".into()
        }
        AlertDescription::CertificateRequired => {
            "it requires a client certificate and we presented none (alert CertificateRequired); give one (raftctl: --cert and --key)".into()
        }
        AlertDescription::DecryptError => {
            "our certificate or key was refused (alert DecryptError)".into()
        }
        other => format!("alert {other:?}"),
    }
}

/// The same for an alert that reached us only as text (HTTP/2 passes
/// connection errors on to each stream as a message, without their type).
pub fn alert_text(message: &str) -> Option<String> {
    let (_, name) = message.split_once("fatal alert: ")?;
    let name = name.split_whitespace().next().unwrap_or_default();
    let a = match name {
        "UnknownCA" => AlertDescription::UnknownCA,
        "BadCertificate" => AlertDescription::BadCertificate,
        "CertificateExpired" => AlertDescription::CertificateExpired,
        "CertificateRequired" => AlertDescription::CertificateRequired,
        "DecryptError" => AlertDescription::DecryptError,
        _ => return None,
    };
    Some(format!("the server refused us: {}", alert(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_that_arrive_as_text_are_explained() {
        let e = alert_text("received fatal alert: CertificateRequired").unwrap();
        assert!(e.contains("--cert and --key"), "{e}");
        let e = alert_text("io error: received fatal alert: UnknownCA").unwrap();
        assert!(e.contains("another cluster or CA"), "{e}");
        assert_eq!(alert_text("connection reset"), None);
    }
}
