//! kuberaft's test support: the deterministic simulator of the core
//! ([`sim`]), the scripted harness for the article's scenes ([`script`]), a
//! harness of real member processes ([`cluster`]), a Prometheus text reader
//! ([`prometheus`]), the Docker end-to-end harness ([`docker`]), a Kubernetes
//! of real control-plane parts with a stand-in kubelet for the journey tier
//! ([`kube`]), client workloads ([`workload`]), the linearizability
//! checker ([`linearizability`]), and the checks of the chart's dashboard and
//! alerts against the metrics the programs export ([`monitoring`], [`promql`]).

pub mod cdp;
pub mod cluster;
pub mod docker;
pub mod kube;
pub mod lateness;
pub mod linearizability;
pub mod manifests;
pub mod monitoring;
pub mod network_policy;
pub mod prometheus;
pub mod promql;
pub mod proxy;
pub mod script;
pub mod sim;
pub mod skip;
pub mod tls;
pub mod workload;
