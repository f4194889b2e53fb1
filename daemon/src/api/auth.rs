//! Who is calling: the peer credentials of an API connection.
//!
//! The kernel records them at `connect(2)` (`SO_PEERCRED`); the client cannot choose them. The
//! server reads them once per connection and attaches them to every request on it as
//! [`axum::extract::ConnectInfo<PeerCred>`], so handlers and layers can decide on them. Nothing
//! here decides yet: every route is a read, open to anyone who can connect. Write authorization
//! comes later and builds on this type; tests build it directly (tokio's `UCred` cannot be built
//! outside tokio).

use tokio::net::unix::UCred;

/// The credentials of the process that opened an API connection, as the kernel recorded them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerCred {
    /// Effective user id of the caller.
    pub uid: u32,
    /// Effective group id of the caller.
    pub gid: u32,
    /// Process id of the caller, when the kernel reports one (it does on Linux; a caller in
    /// another pid namespace may show up as 0). For logs only: pids are reused, never trust one.
    pub pid: Option<i32>,
}

impl From<UCred> for PeerCred {
    fn from(cred: UCred) -> Self {
        Self {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        }
    }
}
