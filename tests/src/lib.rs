//! kuberaft's test suites. The deterministic simulator lives in [`sim`]; the
//! scripted harness for scenario tests in [`script`].

pub mod script;
pub mod sim;
