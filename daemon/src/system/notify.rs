//! The systemd notify socket (`sd_notify(3)`): datagrams of `KEY=value` lines to the unix socket
//! named by `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket). What to send is decided
//! in [`crate::service::notify`].

use std::io;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use crate::service::notify::NotifyTarget;

/// Environment variable systemd sets to the notify socket.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";
/// Environment variable with the watchdog period in microseconds.
pub const WATCHDOG_USEC_ENV: &str = "WATCHDOG_USEC";
/// Environment variable naming the process the watchdog is meant for.
pub const WATCHDOG_PID_ENV: &str = "WATCHDOG_PID";

/// An unbound datagram socket aimed at the notify socket.
#[derive(Debug)]
pub struct NotifySocket {
    socket: UnixDatagram,
    addr: SocketAddr,
    target: String,
}

/// Why the notify socket cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `$NOTIFY_SOCKET` is neither an absolute path nor `@name`.
    #[error("{NOTIFY_SOCKET_ENV}={0:?} is neither an absolute path nor an abstract @name")]
    BadTarget(String),
    /// The socket could not be created or addressed.
    #[error("cannot use the notify socket {target}: {source}")]
    Io {
        /// `$NOTIFY_SOCKET`.
        target: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl NotifySocket {
    /// The socket `$NOTIFY_SOCKET` names; `Ok(None)` when the variable is unset or empty (not
    /// started by systemd with `Type=notify`).
    ///
    /// # Errors
    ///
    /// A malformed variable, or a socket that cannot be created.
    pub fn from_env() -> Result<Option<Self>, NotifyError> {
        match std::env::var(NOTIFY_SOCKET_ENV) {
            Ok(v) if !v.is_empty() => Self::open(&v).map(Some),
            _ => Ok(None),
        }
    }

    /// A socket aimed at `target` (the value of `$NOTIFY_SOCKET`).
    ///
    /// # Errors
    ///
    /// See [`NotifySocket::from_env`].
    pub fn open(target: &str) -> Result<Self, NotifyError> {
        let io_err = |source| NotifyError::Io {
            target: target.to_owned(),
            source,
        };
        let addr = match NotifyTarget::parse(target) {
            Some(NotifyTarget::Path(p)) => SocketAddr::from_pathname(p).map_err(io_err)?,
            Some(NotifyTarget::Abstract(name)) => {
                SocketAddr::from_abstract_name(name).map_err(io_err)?
            }
            None => return Err(NotifyError::BadTarget(target.to_owned())),
        };
        let socket = UnixDatagram::unbound().map_err(io_err)?;
        // A full receive queue must not stall the daemon: the datagram is dropped and logged.
        socket.set_nonblocking(true).map_err(io_err)?;
        Ok(Self {
            socket,
            addr,
            target: target.to_owned(),
        })
    }

    /// Sends one datagram.
    ///
    /// # Errors
    ///
    /// The OS error (e.g. `ECONNREFUSED` when nobody listens, `EAGAIN` when the queue is full).
    pub fn send(&self, text: &str) -> Result<(), NotifyError> {
        self.socket
            .send_to_addr(text.as_bytes(), &self.addr)
            .map(|_| ())
            .map_err(|source| NotifyError::Io {
                target: self.target.clone(),
                source,
            })
    }
}

/// `$WATCHDOG_USEC` and `$WATCHDOG_PID`, as set.
pub fn watchdog_env() -> (Option<String>, Option<String>) {
    (
        std::env::var(WATCHDOG_USEC_ENV).ok(),
        std::env::var(WATCHDOG_PID_ENV).ok(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let tx = NotifySocket::open(path.to_str().unwrap()).unwrap();
        tx.send("READY=1\nSTATUS=x").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=x");

        let name = format!("wgmesh-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        let tx = NotifySocket::open(&format!("@{name}")).unwrap();
        tx.send("WATCHDOG=1").unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[test]
    fn bad_targets_and_absent_listeners_are_errors() {
        assert!(matches!(
            NotifySocket::open("notify"),
            Err(NotifyError::BadTarget(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        let tx = NotifySocket::open(dir.path().join("nobody").to_str().unwrap()).unwrap();
        let err = tx.send("READY=1").unwrap_err();
        assert!(err.to_string().contains("nobody"), "{err}");
    }
}
