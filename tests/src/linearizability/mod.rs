//! Checking a recorded history of a key-value store for linearizability:
//! every operation appears to take effect at one instant between its call
//! and its answer, in one order consistent with what every client saw.
//!
//! Each key is a register (put, get, compare-and-swap), checked on its own:
//! linearizability is compositional, so the history is linearizable exactly
//! when every key's is, and the per-key searches stay small.

pub mod history;
pub mod register;
pub mod wgl;

#[cfg(test)]
mod tests;

pub use history::{Call, Operation, Recorder, Return, Value};
pub use wgl::{KeyReport, Verdict, Violation, check};
