//! `HOST:PORT` arguments (`--peer`, `--dht-bootstrap`, `--stun`): validated when parsed, resolved
//! later by the layer that uses them (a name that does not resolve yet is a retried state, never
//! a failed start). Pure.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// A host (IP address or DNS name) and a port, as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    host: String,
    port: u16,
}

/// Why a `HOST:PORT` argument was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostPortError {
    /// No `:PORT` part (or an IPv6 address without brackets).
    #[error("{0:?} is not HOST:PORT (IPv6 addresses go in brackets: [2001:db8::1]:51821)")]
    Shape(String),
    /// The host part is empty or not a plausible name.
    #[error("{0:?} has no valid host (an IP address or a DNS name)")]
    Host(String),
    /// The port is not an integer in 1..=65535.
    #[error("{0:?} has no valid port (1-65535)")]
    Port(String),
}

impl HostPort {
    /// The host: an IP address (without brackets) or a DNS name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address itself when the host is an IP literal (no DNS needed).
    pub fn as_socket_addr(&self) -> Option<SocketAddr> {
        self.host
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }
}

impl FromStr for HostPort {
    type Err = HostPortError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return Err(HostPortError::Port(s.to_owned()));
            }
            return Ok(Self {
                host: addr.ip().to_string(),
                port: addr.port(),
            });
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| HostPortError::Shape(s.to_owned()))?;
        if host.contains(':') || host.starts_with('[') {
            return Err(HostPortError::Shape(s.to_owned()));
        }
        let valid_name = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !valid_name {
            return Err(HostPortError::Host(s.to_owned()));
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| HostPortError::Port(s.to_owned()))?;
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_socket_addr() {
            Some(addr) => addr.fmt(f),
            None => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        #[rustfmt::skip]
        let ok = [
            ("192.168.1.1:51821", "192.168.1.1", 51821, "192.168.1.1:51821"),
            ("[2001:db8::1]:6881", "2001:db8::1", 6881, "[2001:db8::1]:6881"),
            ("Router.Example.org:6881", "router.example.org", 6881, "router.example.org:6881"),
            ("localhost:1", "localhost", 1, "localhost:1"),
        ];
        for (input, host, port, shown) in ok {
            let hp: HostPort = input.parse().unwrap();
            assert_eq!((hp.host(), hp.port()), (host, port), "{input}");
            assert_eq!(hp.to_string(), shown);
        }
        #[rustfmt::skip]
        let bad = [
            ("192.168.1.1", HostPortError::Shape("192.168.1.1".into())),
            ("2001:db8::1:80", HostPortError::Shape("2001:db8::1:80".into())),
            (":80", HostPortError::Host(":80".into())),
            ("bad_name:80", HostPortError::Host("bad_name:80".into())),
            ("-x.org:80", HostPortError::Host("-x.org:80".into())),
            ("host:0", HostPortError::Port("host:0".into())),
            ("1.2.3.4:0", HostPortError::Port("1.2.3.4:0".into())),
            ("host:65536", HostPortError::Port("host:65536".into())),
            ("host:http", HostPortError::Port("host:http".into())),
        ];
        for (input, want) in bad {
            assert_eq!(input.parse::<HostPort>(), Err(want), "{input}");
        }
        assert_eq!(
            "1.2.3.4:9".parse::<HostPort>().unwrap().as_socket_addr(),
            Some("1.2.3.4:9".parse().unwrap())
        );
        assert_eq!("a.b:9".parse::<HostPort>().unwrap().as_socket_addr(), None);
    }
}
