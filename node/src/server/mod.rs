//! The server around the core: the event loop, the client and admin services.

pub mod client;
pub mod event;
