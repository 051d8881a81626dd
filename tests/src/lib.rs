//! kuberaft's test support: the deterministic simulator of the core
//! ([`sim`]), the scripted harness for the article's scenes ([`script`]), a
//! harness of real member processes ([`cluster`]) and a Prometheus text
//! reader ([`prometheus`]).

pub mod cluster;
pub mod prometheus;
pub mod script;
pub mod sim;
