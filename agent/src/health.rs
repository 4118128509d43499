//! Health checks run by the executor next to its task (Marathon's
//! MESOS_HTTP / MESOS_TCP / COMMAND checks): probing from the agent, not
//! from the framework, means a busy or failed-over framework never causes a
//! kill storm.
//!
//! The checker only reports: `healthy = true` on the first success and on
//! recovery, `healthy = false` once `consecutive_failures` checks in a row
//! failed. Failures before the first success within the grace period do not
//! count. Killing an unhealthy task is the framework's decision.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use crate::protocol::HealthSpec;

/// Tracks consecutive results and decides when health changes.
#[derive(Debug, Default)]
pub struct HealthState {
    consecutive_failures: u32,
    ever_healthy: bool,
    reported: Option<bool>,
}

impl HealthState {
    /// Feeds one check result; returns the new health when it changed.
    /// `in_grace` is true while the grace period since task start lasts.
    pub fn observe(&mut self, ok: bool, in_grace: bool, threshold: u32) -> Option<bool> {
        if ok {
            self.consecutive_failures = 0;
            self.ever_healthy = true;
            if self.reported != Some(true) {
                self.reported = Some(true);
                return Some(true);
            }
            return None;
        }
        if in_grace && !self.ever_healthy {
            return None;
        }
        self.consecutive_failures += 1;
        if self.consecutive_failures >= threshold.max(1) && self.reported != Some(false) {
            self.reported = Some(false);
            return Some(false);
        }
        None
    }
}

/// Runs one check; Ok(()) when healthy, Err(why) otherwise.
pub async fn check_once(
    spec: &HealthSpec,
    sandbox: &str,
    env: &[(String, String)],
) -> Result<(), String> {
    let timeout = Duration::from_secs_f64(spec.timeout_seconds.clamp(0.1, 3600.0));
    let fut = async {
        match spec.kind.as_str() {
            "tcp" => TcpStream::connect(("127.0.0.1", spec.port))
                .await
                .map(|_| ())
                .map_err(|e| format!("tcp connect to port {}: {e}", spec.port)),
            "http" => http_check(spec.port, &spec.path).await,
            "command" => command_check(&spec.command, sandbox, env).await,
            other => Err(format!("unknown health check kind '{other}'")),
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {timeout:?}")),
    }
}

/// A minimal HTTP/1.0 GET: a 2xx or 3xx status is healthy (Marathon's rule).
async fn http_check(port: u16, path: &str) -> Result<(), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("http connect to port {port}: {e}"))?;
    let path = if path.is_empty() { "/" } else { path };
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: mezzo-health\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("http write: {e}"))?;
    let mut buf = vec![0u8; 256];
    let mut n = 0;
    // The status line is all we need.
    while n < buf.len() {
        let r = s
            .read(&mut buf[n..])
            .await
            .map_err(|e| format!("http read: {e}"))?;
        if r == 0 {
            break;
        }
        n += r;
        if buf[..n].contains(&b'\n') {
            break;
        }
    }
    let line = String::from_utf8_lossy(&buf[..n]);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            format!(
                "http: no status line in {:?}",
                line.lines().next().unwrap_or("")
            )
        })?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("http status {code}"))
    }
}

async fn command_check(cmd: &str, sandbox: &str, env: &[(String, String)]) -> Result<(), String> {
    let mut c = tokio::process::Command::new("/bin/sh");
    c.arg("-c")
        .arg(cmd)
        .current_dir(sandbox)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let st = c
        .status()
        .await
        .map_err(|e| format!("command check: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("command check exited with {st}"))
    }
}

/// Runs checks forever, calling `report(healthy, why)` on every change.
pub async fn run(
    spec: HealthSpec,
    sandbox: String,
    env: Vec<(String, String)>,
    mut report: impl FnMut(bool, String),
) {
    let started = Instant::now();
    let grace = Duration::from_secs_f64(spec.grace_period_seconds.clamp(0.0, 86_400.0));
    let interval = Duration::from_secs_f64(spec.interval_seconds.clamp(0.1, 86_400.0));
    tokio::time::sleep(Duration::from_secs_f64(
        spec.delay_seconds.clamp(0.0, 86_400.0),
    ))
    .await;
    let mut state = HealthState::default();
    loop {
        let result = check_once(&spec, &sandbox, &env).await;
        let in_grace = started.elapsed() < grace;
        if let Err(why) = &result {
            debug!(why = %why, in_grace, "health check failed");
        }
        if let Some(h) = state.observe(result.is_ok(), in_grace, spec.consecutive_failures) {
            report(h, result.err().unwrap_or_default());
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_failures_do_not_count_before_first_success() {
        let mut h = HealthState::default();
        assert_eq!(h.observe(false, true, 1), None);
        assert_eq!(h.observe(false, true, 1), None);
        assert_eq!(h.observe(true, true, 1), Some(true));
        assert_eq!(h.observe(true, false, 1), None);
        // After the first success, failures count even within the grace period.
        assert_eq!(h.observe(false, true, 2), None);
        assert_eq!(h.observe(false, true, 2), Some(false));
        assert_eq!(h.observe(false, false, 2), None);
        assert_eq!(h.observe(true, false, 2), Some(true));
    }

    #[test]
    fn unhealthy_after_threshold_without_ever_passing() {
        let mut h = HealthState::default();
        assert_eq!(h.observe(false, false, 3), None);
        assert_eq!(h.observe(false, false, 3), None);
        assert_eq!(h.observe(false, false, 3), Some(false));
    }

    #[tokio::test]
    async fn tcp_http_and_command_checks() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let status = if req.starts_with("GET /ok") {
                    "200 OK"
                } else {
                    "503 Unavailable"
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let spec = |kind: &str, path: &str, command: &str| HealthSpec {
            kind: kind.into(),
            command: command.into(),
            port,
            path: path.into(),
            delay_seconds: 0.0,
            interval_seconds: 1.0,
            timeout_seconds: 2.0,
            consecutive_failures: 1,
            grace_period_seconds: 0.0,
        };
        assert!(check_once(&spec("tcp", "", ""), "/", &[]).await.is_ok());
        assert!(check_once(&spec("http", "/ok", ""), "/", &[]).await.is_ok());
        let e = check_once(&spec("http", "/bad", ""), "/", &[])
            .await
            .unwrap_err();
        assert!(e.contains("503"), "{e}");
        assert!(check_once(
            &spec("command", "", "test \"$X\" = 1"),
            "/",
            &[("X".into(), "1".into())]
        )
        .await
        .is_ok());
        assert!(check_once(&spec("command", "", "exit 1"), "/", &[])
            .await
            .is_err());
        let mut closed = spec("tcp", "", "");
        closed.port = 1;
        assert!(check_once(&closed, "/", &[]).await.is_err());
    }
}
