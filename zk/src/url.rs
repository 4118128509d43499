//! `zk://host:port,host:port/path` URLs.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A parsed `zk://h1:2181,h2:2181/mezzo` URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ZkUrl {
    /// Comma-separated `host:port` list, as the ZooKeeper client takes it (`h1:2181,h2:2181`).
    pub servers: String,
    /// Absolute znode path (`/mezzo`), without a trailing slash (except the root `/`).
    pub path: String,
}

impl ZkUrl {
    /// Parses `zk://host:port[,host:port...]/path`. The path is required and must start
    /// with `/`; every server needs a host and a numeric port. Errors name the bad part.
    pub fn parse(url: &str) -> Result<ZkUrl> {
        let bad = |reason: String| Error::InvalidUrl {
            url: url.to_string(),
            reason,
        };
        let rest = url
            .trim()
            .strip_prefix("zk://")
            .ok_or_else(|| bad("must start with \"zk://\"".to_string()))?;
        let (servers, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => {
                return Err(bad(
                    "missing znode path after the servers (e.g. zk://host:2181/mezzo)".to_string(),
                ))
            }
        };
        if servers.is_empty() {
            return Err(bad("no servers before the path".to_string()));
        }
        for server in servers.split(',') {
            let (host, port) = server
                .rsplit_once(':')
                .ok_or_else(|| bad(format!("server {server:?} has no port (host:port)")))?;
            if host.is_empty() {
                return Err(bad(format!("server {server:?} has an empty host")));
            }
            match port.parse::<u16>() {
                Ok(p) if p > 0 => {}
                _ => {
                    return Err(bad(format!(
                        "server {server:?} has an invalid port {port:?}"
                    )))
                }
            }
        }
        let trimmed = path.trim_end_matches('/');
        let path = if trimmed.is_empty() { "/" } else { trimmed };
        if path.contains("//") {
            return Err(bad(format!("path {path:?} has an empty segment")));
        }
        if path.split('/').any(|s| s == "." || s == "..") {
            return Err(bad(format!("path {path:?} has a relative segment")));
        }
        Ok(ZkUrl {
            servers: servers.to_string(),
            path: path.to_string(),
        })
    }

    /// True if `s` looks like a ZooKeeper URL (starts with `zk://`).
    pub fn is_zk_url(s: &str) -> bool {
        s.trim().starts_with("zk://")
    }

    /// Absolute path of a child of [`ZkUrl::path`].
    pub fn child(&self, name: &str) -> String {
        crate::util::join(&self.path, name)
    }
}

impl FromStr for ZkUrl {
    type Err = Error;
    fn from_str(s: &str) -> Result<ZkUrl> {
        ZkUrl::parse(s)
    }
}

impl fmt::Display for ZkUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "zk://{}{}", self.servers, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_servers_and_path() {
        let u = ZkUrl::parse("zk://h1:2181,h2:2181/mezzo").unwrap();
        assert_eq!(u.servers, "h1:2181,h2:2181");
        assert_eq!(u.path, "/mezzo");
        assert_eq!(u.to_string(), "zk://h1:2181,h2:2181/mezzo");
        let u = ZkUrl::parse("zk://127.0.0.1:2181/a/b/").unwrap();
        assert_eq!(u.path, "/a/b");
        assert_eq!(u.child("x"), "/a/b/x");
        let u: ZkUrl = "zk://h:1/".parse().unwrap();
        assert_eq!(u.path, "/");
        assert_eq!(u.child("x"), "/x");
    }

    #[test]
    fn errors_name_the_bad_part() {
        let msg = |s: &str| ZkUrl::parse(s).unwrap_err().to_string();
        assert!(msg("http://h:1/x").contains("zk://"));
        assert!(msg("zk://h1:2181").contains("missing znode path"));
        assert!(msg("zk:///x").contains("no servers"));
        assert!(msg("zk://h1/x").contains("\"h1\" has no port"));
        assert!(msg("zk://h1:abc/x").contains("invalid port \"abc\""));
        assert!(msg("zk://h1:1,:2/x").contains("empty host"));
        assert!(msg("zk://h1:1/a//b").contains("empty segment"));
        assert!(msg("zk://h1:1/a/../b").contains("relative segment"));
    }
}
