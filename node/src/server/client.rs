//! Requests from clients and administrators to the event loop.

pub enum ClientRequest {}
