//! A Kubernetes for the journey tier (`tests/tests/kube_journey.rs`): the real control plane,
//! with the parts no package provides stood in for by the tests.
//!
//! | part                                   | here                                                   |
//! |----------------------------------------|--------------------------------------------------------|
//! | etcd                                   | real (Debian's `etcd-server`, 3.4)                     |
//! | kube-apiserver, RBAC, admission        | real (v1.32.13), `--authorization-mode=Node,RBAC`      |
//! | kube-controller-manager                | real: StatefulSet, ReplicaSet, Deployment, garbage collector, PV binder, PVC protection, EndpointSlice, ServiceAccount and root-CA publisher, … |
//! | helm, kubectl                          | real, run as a user runs them                          |
//! | images                                 | real: `deploy/docker/`'s runtime stages, built locally |
//! | the operator and the members           | real, each in its own container, the operator with exactly the chart's RBAC |
//! | scheduler                              | stood in: [`runner`] binds every pending pod to its one Node |
//! | kubelet                                | stood in: [`runner`] runs each pod's container with Docker, probes it, reports its status, restarts it, stops it |
//! | cluster DNS                            | stood in: Docker's embedded DNS; a pod is a network alias `<hostname>.<subdomain>.<namespace>.svc.<domain>` |
//! | CNI                                    | stood in: one Docker bridge network; each pod gets a new IP |
//! | kube-proxy                             | not stood in: Service IPs do not route; `KUBERNETES_SERVICE_HOST` is the API server's own address |
//! | OpenShift's service-CA publisher      | stood in: [`service_ca`] (the vendored API server mounts its ConfigMap in every pod) |
//! | storage provisioner                    | stood in: a pre-bound PersistentVolume per claim, a Docker volume behind it |
//! | `kubectl exec`                         | stood in: `docker exec` into the pod's container       |
//!
//! The API server listens on the gateway address of the tier's own Docker network, so that the
//! containers reach it and nothing outside this machine does; etcd and the controller-manager
//! listen on loopback.

pub mod cli;
pub mod control_plane;
pub mod observer;
pub mod pki;
pub mod runner;
pub mod service_ca;
pub mod tools;
pub mod world;
