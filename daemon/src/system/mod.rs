//! The only code that touches the OS. Everything above it takes values or traits.

pub mod dht;
pub mod fs;
pub mod net;
pub mod notify;
pub mod service;
pub mod socket_file;
pub mod uapi;
pub mod wg;
