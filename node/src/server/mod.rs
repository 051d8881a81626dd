//! The server around the core: the event loop, the client and admin services.

pub mod admin_service;
pub mod background;
pub mod client;
pub mod deadline;
pub mod event;
pub mod event_loop;
pub mod forward;
pub mod http;
pub mod incarnations;
pub mod kv_service;
pub mod liveness;
pub mod run;
pub mod status;
pub mod ui_events;
