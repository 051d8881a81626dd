//! The operator's one error type. Each message says what went wrong and, where it helps, what to do.

/// Everything that can go wrong in the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),

    #[error("RaftCluster {0} has no namespace; RaftCluster is a namespaced resource")]
    MissingNamespace(String),

    #[error("RaftCluster {0} has no uid yet; wait for the API server to assign one")]
    MissingUid(String),

    #[error(
        "member {member} at {endpoint} is unreachable: {message}; check that the pod is running and that the operator can reach its admin port 7003"
    )]
    MemberUnreachable {
        member: String,
        endpoint: String,
        message: String,
    },

    #[error("member {member} refused {request}: {status}")]
    MemberRequest {
        member: String,
        request: &'static str,
        status: Box<tonic::Status>,
    },

    #[error("invalid member endpoint {endpoint:?}: {message}")]
    InvalidEndpoint { endpoint: String, message: String },

    #[error("TLS Secret {secret}: {message}")]
    TlsSecret { secret: String, message: String },

    #[error("cannot serialize {what}: {source}")]
    Serialize {
        what: &'static str,
        source: serde_json::Error,
    },

    #[error("cannot print the CRD as YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),

    #[error("cannot listen on {addr}: {source}; pick a free address with --http-listen")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },

    #[error(
        "cannot connect to the Kubernetes API: {0}; run in a pod with a service account, or set KUBECONFIG"
    )]
    KubeConfig(String),

    #[error("lost the operator leader lease {0}; exiting so that another replica takes over")]
    LeaseLost(String),

    #[error("{0}")]
    Fatal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short PascalCase reason for conditions, events and metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApiError",
            Error::MissingNamespace(_) | Error::MissingUid(_) => "InvalidResource",
            Error::MemberUnreachable { .. } => "MemberUnreachable",
            Error::MemberRequest { .. } => "MemberRequestFailed",
            Error::InvalidEndpoint { .. } => "InvalidEndpoint",
            Error::TlsSecret { .. } => "TlsSecretInvalid",
            Error::Serialize { .. } | Error::Yaml(_) => "SerializationError",
            Error::Listen { .. } | Error::KubeConfig(_) | Error::LeaseLost(_) | Error::Fatal(_) => {
                "OperatorError"
            }
        }
    }
}
