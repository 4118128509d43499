//! A private standalone ZooKeeper server for tests (Debian `zookeeper` jars).
//!
//! `ZkServer::start()` picks a free loopback port, writes `zoo.cfg` in a temp data dir and
//! runs `java ... QuorumPeerMain zoo.cfg`, returning once the server answers `srvr` as
//! serving. `stop()` kills it (SIGKILL, as a crash) keeping the data dir; `restart()` brings
//! it back on the same port with the same data (sessions and znodes survive). Drop kills it.
//! The server's output goes to `<data dir>/zookeeper.out` (see [`ZkServer::log_path`]).
//!
//! Behind the `testing` feature: used by this crate's tests and Mezzo's end-to-end tests.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Class path of Debian's ZooKeeper package.
const CLASSPATH: &str = "/usr/share/java/*:/etc/zookeeper/conf";
/// How long to wait for the server to serve.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running (or stopped) private ZooKeeper server.
pub struct ZkServer {
    /// The client port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl ZkServer {
    /// Starts a server on a free loopback port with a fresh temp data dir and waits
    /// (up to 20 s) until it serves.
    pub fn start() -> anyhow::Result<ZkServer> {
        let port = free_port()?;
        let dir = tempfile::Builder::new()
            .prefix("mezzo-zk-")
            .tempdir()
            .context("creating ZooKeeper data dir")?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).context("creating ZooKeeper data dir")?;
        let cfg = format!(
            "tickTime=500\n\
             initLimit=10\n\
             syncLimit=5\n\
             dataDir={}\n\
             clientPort={port}\n\
             clientPortAddress=127.0.0.1\n\
             admin.enableServer=false\n\
             maxClientCnxns=0\n\
             4lw.commands.whitelist=srvr,ruok,stat\n",
            data.display()
        );
        std::fs::write(dir.path().join("zoo.cfg"), cfg).context("writing zoo.cfg")?;
        let mut server = ZkServer {
            port,
            dir,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// `zk://127.0.0.1:<port><path>` (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("zk://127.0.0.1:{}{}", self.port, path)
    }

    /// `127.0.0.1:<port>`, the connect string of a plain ZooKeeper client.
    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The temp dir holding `zoo.cfg`, `data/` and the server output.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's stdout/stderr file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("zookeeper.out")
    }

    /// True while the server process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Kills the server (SIGKILL, like a crash) and reaps it; the data dir is kept.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same data dir and waits until it
    /// serves. Kills it first if it still runs.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening ZooKeeper output file")?;
        let err = out.try_clone().context("opening ZooKeeper output file")?;
        let child = Command::new("java")
            .arg("-Xmx256m")
            .arg("-cp")
            .arg(CLASSPATH)
            .arg(format!("-Dzookeeper.log.dir={}", self.dir.path().display()))
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(self.dir.path().join("zoo.cfg"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("starting java (is the Debian `zookeeper` package installed?)")?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if serving(self.port) {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                bail!(
                    "ZooKeeper exited with {status} during start-up; see {}",
                    self.log_path().display()
                );
            }
            if Instant::now() >= deadline {
                self.stop();
                bail!(
                    "ZooKeeper on port {} did not serve within {:?}; see {}",
                    self.port,
                    START_TIMEOUT,
                    self.log_path().display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free loopback port: bind port 0, note the port, release it.
fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a free loopback port")?;
    Ok(l.local_addr().context("reading the bound port")?.port())
}

/// True when the server answers the `srvr` four-letter word as a serving server.
fn serving(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"srvr").is_err() {
        return false;
    }
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.contains("Mode: ")
}
