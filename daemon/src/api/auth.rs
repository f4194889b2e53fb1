//! Who is calling, and what they may do.
//!
//! The kernel records the caller's credentials when it connects (`SO_PEERCRED`: uid, gid, pid;
//! `SO_PEERGROUPS`: its supplementary groups); the client cannot choose them. The server reads
//! them once per connection and attaches them to every request on it as
//! [`axum::extract::ConnectInfo<PeerCred>`]. From them [`identify`] decides once per request who
//! the [`Caller`] is and what [`Access`] it has, by the [`WritePolicy`] of the socket:
//!
//! - **read** (every `GET`): anyone who can connect. Who can connect is the socket file's
//!   business (mode `0660`, owner root, the socket group), so by default everyone who connects
//!   may also write; an operator who opens the socket further (say an ACL granting a monitoring
//!   user `rw` on it) grants reads only.
//! - **write** (`POST /v1/reload`, `POST /v1/cache/flush`): uid 0, or a member of the socket's
//!   group, by primary gid or by supplementary group. The write routes sit behind one
//!   `route_layer` ([`require_write`]) that refuses anyone else with 403 before the body is read.
//!
//! Membership comes from `SO_PEERGROUPS` (Linux 4.13+), the groups the caller's process held when
//! it connected, as the kernel recorded them: no `/proc/<pid>` lookup that a pid reuse could
//! fool, and no user database (`getgrouplist`) that would grant a group the process dropped or
//! has not picked up yet (a user just added to the group gets write access once they log in
//! again, as with any other group-controlled file). Where the kernel cannot tell
//! (`ENOPROTOOPT`), supplementary groups are taken as none: fewer permissions, never more.
//!
//! Requests carrying an `Origin` header are refused outright ([`refuse_browsers`]): the API is
//! for local programs, and a browser talked into reaching the socket (through some local proxy)
//! always sends one.

use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use tokio::net::unix::UCred;
use wgmesh_api_types::problem_type;

use super::problem::ProblemResponse;

/// The credentials of the process that opened an API connection, as the kernel recorded them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerCred {
    /// Effective user id of the caller.
    pub uid: u32,
    /// Effective group id of the caller.
    pub gid: u32,
    /// Process id of the caller, when the kernel reports one (it does on Linux; a caller in
    /// another pid namespace may show up as 0). For logs only: pids are reused, never trust one.
    pub pid: Option<i32>,
    /// Supplementary groups of the caller (`SO_PEERGROUPS`); empty where the kernel cannot tell.
    pub groups: Arc<[u32]>,
}

impl PeerCred {
    /// Credentials of uid `uid` with primary group `gid`, no pid and no supplementary groups
    /// (tests and callers that build them by hand).
    pub fn new(uid: u32, gid: u32) -> Self {
        Self {
            uid,
            gid,
            pid: None,
            groups: Arc::from([]),
        }
    }

    /// The same credentials with these supplementary groups.
    #[must_use]
    pub fn with_groups(mut self, groups: impl IntoIterator<Item = u32>) -> Self {
        self.groups = groups.into_iter().collect();
        self
    }

    /// Credentials from `SO_PEERCRED` plus the supplementary groups of `SO_PEERGROUPS` read from
    /// `socket` (none when the kernel cannot tell; see the module docs).
    pub(super) fn of_connection(cred: UCred, socket: BorrowedFd<'_>) -> Self {
        let groups = match peer_groups(socket) {
            Ok(groups) => groups.into(),
            Err(err) => {
                tracing::debug!(
                    error = %err,
                    "cannot read the supplementary groups of an API client; taking none"
                );
                Arc::from([])
            }
        };
        Self {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
            groups,
        }
    }

    /// Whether the caller is in group `gid`, as its primary or a supplementary group.
    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// Most supplementary groups a process can have (Linux `NGROUPS_MAX`).
const NGROUPS_MAX: usize = 65_536;

/// The supplementary groups the peer of `socket` held when it connected (`SO_PEERGROUPS`).
fn peer_groups(socket: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    const GID_SIZE: usize = size_of::<libc::gid_t>();
    // Enough for nearly everyone; the kernel says how much it needs when it is not.
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    loop {
        let mut len = libc::socklen_t::try_from(groups.len() * GID_SIZE)
            .map_err(|_| io::Error::from_raw_os_error(libc::ERANGE))?;
        // SAFETY: the buffer is valid for `len` bytes and outlives the call; the kernel writes at
        // most `len` bytes and sets `len` to what it wrote (or needs, with ERANGE).
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &raw mut len,
            )
        };
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if rc == 0 {
            groups.truncate(len / GID_SIZE);
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        let needed = len / GID_SIZE;
        if err.raw_os_error() == Some(libc::ERANGE)
            && needed > groups.len()
            && needed <= NGROUPS_MAX
        {
            groups.resize(needed, 0);
            continue;
        }
        return Err(err);
    }
}

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every `GET`.
    Read,
    /// Also reload and cache flush.
    Write,
}

/// The group whose members may write, with its name for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WriterGroup {
    gid: u32,
    name: String,
}

/// Who may write through a socket: uid 0 always, and the members of the socket's group if it
/// has one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WritePolicy {
    group: Option<WriterGroup>,
}

impl WritePolicy {
    /// Only uid 0 writes (the socket has no group of its own).
    pub fn root_only() -> Self {
        Self::default()
    }

    /// Uid 0 and the members of group `name` (gid `gid`) write.
    pub fn root_and_group(gid: u32, name: impl Into<String>) -> Self {
        Self {
            group: Some(WriterGroup {
                gid,
                name: name.into(),
            }),
        }
    }

    /// The gid of the group whose members write, if any.
    pub fn group(&self) -> Option<u32> {
        self.group.as_ref().map(|g| g.gid)
    }

    /// What the caller with credentials `cred` may do.
    pub fn access(&self, cred: &PeerCred) -> Access {
        let member = self.group.as_ref().is_some_and(|g| cred.in_group(g.gid));
        if cred.uid == 0 || member {
            Access::Write
        } else {
            Access::Read
        }
    }

    /// Who may write, for a refusal: "root or members of group wgmesh".
    fn writers(&self) -> String {
        match &self.group {
            Some(g) => format!("root or members of group {} (gid {})", g.name, g.gid),
            None => "root (the API socket has no group)".to_owned(),
        }
    }
}

/// The caller of one request: decided once, by the `identify` middleware, and read by whatever
/// needs it (handlers extract it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The caller's uid; `None` when the request carries no credentials (never on the socket,
    /// where a connection without readable credentials is closed).
    pub uid: Option<u32>,
    /// What it may do.
    pub access: Access,
    /// Who may write, for the message of a refusal.
    writers: String,
}

impl Caller {
    /// A caller nothing is known about: reads only.
    fn unknown(policy: &WritePolicy) -> Self {
        Self {
            uid: None,
            access: Access::Read,
            writers: policy.writers(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Without `identify` in front, the caller is unknown: fewer permissions.
        Ok(parts
            .extensions
            .get::<Self>()
            .cloned()
            .unwrap_or_else(|| Self::unknown(&WritePolicy::root_only())))
    }
}

/// Middleware: decides the [`Caller`] of the request from its `ConnectInfo<PeerCred>` and the
/// socket's [`WritePolicy`], and attaches it to the request.
pub(super) async fn identify(
    State(policy): State<Arc<WritePolicy>>,
    connect: Result<ConnectInfo<PeerCred>, axum::extract::rejection::ExtensionRejection>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = match connect {
        Ok(ConnectInfo(cred)) => Caller {
            uid: Some(cred.uid),
            access: policy.access(&cred),
            writers: policy.writers(),
        },
        Err(_) => Caller::unknown(&policy),
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// Route layer of the write routes: refuses a caller without [`Access::Write`] with 403, before
/// anything reads the body.
pub(super) async fn require_write(caller: Caller, request: Request, next: Next) -> Response {
    if caller.access == Access::Write {
        return next.run(request).await;
    }
    let who = caller.uid.map_or_else(
        || "an unidentified caller".to_owned(),
        |uid| format!("uid {uid}"),
    );
    tracing::debug!(uid = ?caller.uid, path = %request.uri().path(), "API write refused");
    ProblemResponse::new(
        StatusCode::FORBIDDEN,
        problem_type::FORBIDDEN,
        format!(
            "{who} may read but not change the daemon: {} only",
            caller.writers
        ),
    )
    .into_response()
}

/// Middleware: refuses every request with an `Origin` header (403), whatever its path.
pub(super) async fn refuse_browsers(request: Request, next: Next) -> Response {
    if request.headers().contains_key(header::ORIGIN) {
        return ProblemResponse::new(
            StatusCode::FORBIDDEN,
            problem_type::FORBIDDEN,
            "requests with an Origin header are refused: the API serves local programs, not web pages",
        )
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_are_root_and_the_socket_group_by_any_of_the_callers_groups() {
        let group = WritePolicy::root_and_group(998, "wgmesh");
        let none = WritePolicy::root_only();
        // (case, policy, credentials, access)
        let table = [
            ("root", &group, PeerCred::new(0, 0), Access::Write),
            ("root, no group", &none, PeerCred::new(0, 0), Access::Write),
            (
                "root by uid only",
                &group,
                PeerCred::new(0, 1234),
                Access::Write,
            ),
            (
                "member by primary gid",
                &group,
                PeerCred::new(1000, 998),
                Access::Write,
            ),
            (
                "member by supplementary group",
                &group,
                PeerCred::new(1000, 1000).with_groups([27, 998]),
                Access::Write,
            ),
            (
                "not a member",
                &group,
                PeerCred::new(1000, 1000).with_groups([27, 100]),
                Access::Read,
            ),
            (
                "gid 0 is not root",
                &group,
                PeerCred::new(1000, 0).with_groups([0]),
                Access::Read,
            ),
            (
                "no group: members of nothing",
                &none,
                PeerCred::new(1000, 998).with_groups([998]),
                Access::Read,
            ),
            (
                "nobody",
                &group,
                PeerCred::new(65_534, 65_534),
                Access::Read,
            ),
        ];
        for (case, policy, cred, want) in table {
            assert_eq!(policy.access(&cred), want, "{case}");
        }
    }

    #[test]
    fn refusals_name_who_may_write() {
        assert_eq!(
            WritePolicy::root_and_group(998, "wgmesh").writers(),
            "root or members of group wgmesh (gid 998)"
        );
        assert!(WritePolicy::root_only().writers().starts_with("root"));
    }

    #[test]
    fn peer_groups_are_the_connecting_processs_groups() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::os::fd::AsFd as _;
        let got = peer_groups(a.as_fd()).unwrap();
        // SAFETY: getgroups with a null buffer of size 0 only returns the count.
        let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        let mut want = vec![0; usize::try_from(n).unwrap()];
        // SAFETY: the buffer holds `n` entries.
        let n = unsafe { libc::getgroups(n, want.as_mut_ptr()) };
        want.truncate(usize::try_from(n).unwrap());
        let (mut got, mut want) = (got, want);
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn many_supplementary_groups_are_all_read() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "needs root under CI"
            );
            eprintln!("SKIPPED: needs root to set 100 supplementary groups on a thread");
            return;
        }
        let want: Vec<libc::gid_t> = (70_000..70_100).collect();
        let groups = want.clone();
        // A thread whose own groups alone change (the raw syscall, not libc's process-wide
        // wrapper) creates the pair: the kernel records its groups for both ends.
        let (a, _b) = std::thread::spawn(move || {
            // SAFETY: changes this thread's supplementary groups only; it exits right after.
            let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
            assert_eq!(rc, 0, "setgroups: {}", io::Error::last_os_error());
            std::os::unix::net::UnixStream::pair().unwrap()
        })
        .join()
        .unwrap();
        use std::os::fd::AsFd as _;
        assert_eq!(peer_groups(a.as_fd()).unwrap(), want);
    }
}
