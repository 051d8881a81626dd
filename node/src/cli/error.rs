//! What went wrong, as one line that says what to do, and the exit status.

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use tonic::{Code, Status};

/// Exit status of a failed command.
pub const EXIT_ERROR: u8 = 1;
/// Bad usage, or a request the cluster refused as invalid (clap uses 2 too).
pub const EXIT_USAGE: u8 = 2;
/// The answer is "no": the key does not exist, or a compare-and-swap failed.
pub const EXIT_NO: u8 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub message: String,
    pub exit_code: u8,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            exit_code: EXIT_ERROR,
        }
    }

    pub fn usage(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            exit_code: EXIT_USAGE,
        }
    }

    /// Not a failure of raftctl or the cluster: the answer was "no".
    pub fn no(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            exit_code: EXIT_NO,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Whether a lost answer leaves the outcome unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Reads change nothing: another endpoint may simply be asked.
    Read,
    /// A write whose answer is lost may or may not have happened.
    Write,
}

/// How a call failed, from the client's side.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// No connection: the request never left, so another endpoint may be tried.
    Unreachable(String),
    /// The connection broke after the request may have been sent.
    Lost(String),
    /// The member answered with this status.
    Answered,
}

/// Tells a member's answer from a transport failure: statuses a server sends
/// carry no source error; tonic marks failed connections with `ConnectError`.
pub fn classify(status: &Status) -> Failure {
    let Some(source) = status.source() else {
        return Failure::Answered;
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source);
    let mut innermost = source.to_string();
    let mut connect = false;
    let mut tls_why = None;
    while let Some(e) = cause {
        if e.is::<tonic::ConnectError>() {
            connect = true;
        }
        if tls_why.is_none() {
            // A failed handshake explains itself; a certificate refused
            // after the handshake shows up as an alert from the server.
            if e.is::<crate::tls::client::TlsConnectError>() {
                tls_why = Some(e.to_string());
            } else if let Some(why) = crate::tls::explain::connect_error(e, "--cacert") {
                tls_why = Some(why);
            }
        }
        innermost = e.to_string();
        cause = e.source();
    }
    let tls_why = tls_why.or_else(|| crate::tls::explain::alert_text(&innermost));
    let innermost = tls_why.unwrap_or_else(|| tidy(&innermost));
    if connect {
        Failure::Unreachable(innermost)
    } else {
        Failure::Lost(innermost)
    }
}

/// `Connection refused (os error 111)` → `connection refused`.
fn tidy(io_error: &str) -> String {
    let s = match io_error.find(" (os error") {
        Some(i) => &io_error[..i],
        None => io_error,
    };
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Turns a member's answer into one line that says what to do.
pub fn from_status(status: &Status, endpoint: &str, effect: Effect, timeout: Duration) -> CliError {
    let msg = status.message();
    match status.code() {
        Code::Unavailable => unavailable(msg, endpoint, None),
        Code::InvalidArgument => CliError::usage(format!("invalid request: {msg}")),
        Code::DeadlineExceeded => deadline_exceeded(effect, timeout),
        Code::FailedPrecondition => CliError::new(format!("refused by {endpoint}: {msg}")),
        Code::NotFound => CliError::new(format!("not found: {msg}")),
        Code::Unimplemented => CliError::new(format!(
            "{endpoint} does not implement this request ({msg}); is it a kuberaft member of the same version?"
        )),
        code => CliError::new(format!("{endpoint} answered {}: {msg}", code_name(code))),
    }
}

/// A member answered UNAVAILABLE (no leader, usually); `context` says more,
/// e.g. how many members are unreachable.
pub fn unavailable(msg: &str, endpoint: &str, context: Option<&str>) -> CliError {
    let what = if msg.is_empty() {
        format!("member {endpoint} is unavailable")
    } else {
        msg.to_string()
    };
    let context = match context {
        Some(c) => format!("{c}; answered by {endpoint}"),
        None => format!("answered by {endpoint}"),
    };
    let retry = if what.contains("retry") || what.contains("requires TLS") {
        ""
    } else {
        "; retry in a moment"
    };
    CliError::new(format!("{what} ({context}){retry}"))
}

/// No answer in time.
pub fn deadline_exceeded(effect: Effect, timeout: Duration) -> CliError {
    let t = humanize(timeout);
    match effect {
        Effect::Write => CliError::new(format!(
            "no answer within {t}: the write may or may not have happened (outcome unknown); read the key to find out, or raise --command-timeout"
        )),
        Effect::Read => CliError::new(format!(
            "no answer within {t}; retry, or raise --command-timeout"
        )),
    }
}

/// The connection broke while a write was in flight.
pub fn lost(endpoint: &str, why: &str) -> CliError {
    CliError::new(format!(
        "connection to {endpoint} lost ({why}): the write may or may not have happened (outcome unknown); read the key to find out"
    ))
}

/// No endpoint could be reached.
pub fn all_unreachable(tried: &[(String, String)]) -> CliError {
    let list = tried
        .iter()
        .map(|(ep, why)| format!("{ep}: {why}"))
        .collect::<Vec<_>>()
        .join("; ");
    CliError::new(format!(
        "cannot reach any endpoint ({list}); is the cluster running (raftctl dev)? check --endpoints or KUBERAFT_ENDPOINTS"
    ))
}

/// The gRPC name of a code, as grpcurl and the docs spell it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `1.5s`, `500ms`.
pub fn humanize(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_from_a_member_are_not_transport_failures() {
        assert_eq!(
            classify(&Status::unavailable("no leader")),
            Failure::Answered
        );
    }

    #[test]
    fn each_code_says_what_to_do() {
        let t = Duration::from_secs(5);
        let e = from_status(
            &Status::unavailable("no leader: this member has not heard from a leader"),
            "h:1",
            Effect::Write,
            t,
        );
        assert_eq!(
            e.message,
            "no leader: this member has not heard from a leader (answered by h:1); retry in a moment"
        );
        let e = unavailable(
            "no leader; retry shortly",
            "h:1",
            Some("2 of 3 members unreachable"),
        );
        assert_eq!(
            e.message,
            "no leader; retry shortly (2 of 3 members unreachable; answered by h:1)"
        );
        let e = from_status(
            &Status::invalid_argument("key is empty"),
            "h:1",
            Effect::Write,
            t,
        );
        assert_eq!(e.message, "invalid request: key is empty");
        assert_eq!(e.exit_code, EXIT_USAGE);
        let e = from_status(&Status::deadline_exceeded(""), "h:1", Effect::Write, t);
        assert!(e.message.contains("outcome unknown"), "{e}");
        assert!(e.message.contains("5s"), "{e}");
        let e = from_status(&Status::deadline_exceeded(""), "h:1", Effect::Read, t);
        assert!(!e.message.contains("outcome unknown"), "{e}");
        let e = from_status(&Status::internal("disk full"), "h:1", Effect::Read, t);
        assert_eq!(e.message, "h:1 answered INTERNAL: disk full");
        assert!(!e.message.contains('\n'));
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(humanize(Duration::from_millis(250)), "250ms");
        assert_eq!(humanize(Duration::from_secs(5)), "5s");
        assert_eq!(humanize(Duration::from_millis(1500)), "1.5s");
    }
}
