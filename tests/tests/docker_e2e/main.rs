//! The Docker end-to-end suite (issue 6): `kuberaft-node` images built from
//! `deploy/docker/`, run as a StatefulSet would run them, through the user's
//! journey and through faults, with the history checked for linearizability.
//!
//!     tests/run --test docker_e2e
//!
//! It needs a Docker engine and nothing else (no registry: images are built
//! from local files). Without an engine, or with `KUBERAFT_SKIP_DOCKER=1`, it
//! says SKIPPED and why (and fails where skips are failures, as in CI). `DOCKER_E2E_SECONDS` sets the
//! length of the fault run (default 120), `DOCKER_E2E_SEED` its randomness.
//!
//! The tests run one at a time (each starts its own cluster; two at once on
//! two cores would time each other out).

mod fault_run;
mod five_members;
mod images;
mod journey;
mod lost_volume;
mod support;
