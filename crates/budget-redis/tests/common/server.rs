//! A `redis-server` of the test's own, on a free loopback port, as a child
//! process: stopped, paused or restarted at will, killed on drop.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

fn bin() -> String {
    std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_up(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Whether the `redis-server` binary can be run.
pub fn binary_available() -> bool {
    Command::new(bin())
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl RedisServer {
    /// Starts `redis-server` (from `PATH`, or `REDIS_SERVER_BIN`) on a free
    /// port of 127.0.0.1, without persistence.
    pub fn start() -> RedisServer {
        let mut s = RedisServer {
            port: free_port(),
            child: None,
        };
        s.restart();
        s
    }

    /// Like [`start`](Self::start), or `None` after printing why `suite`
    /// is skipped when the binary cannot be run (a failure under
    /// `REQUIRE_EXTERNAL_TESTS=1`).
    pub fn start_or_skip(suite: &str) -> Option<RedisServer> {
        if binary_available() {
            return Some(Self::start());
        }
        super::skip(suite, &format!("cannot run {}", bin()));
        None
    }

    /// A server for the rest of this process: it is stopped by a watchdog
    /// shell when this process exits. Returns its port, or `None` when it
    /// cannot be started.
    pub fn start_detached() -> Option<u16> {
        if !binary_available() {
            return None;
        }
        let port = free_port();
        let script = format!(
            "{bin} --port {port} --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 & p=$!; \
             while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; kill $p",
            bin = bin(),
            parent = std::process::id(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        wait_up(port).then_some(port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        let bin = bin();
        let child = Command::new(&bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {bin} ({e}): install redis-server (apt-get install redis-server)"
                )
            });
        self.child = Some(child);
        assert!(wait_up(self.port), "redis-server did not come up");
    }

    /// Kills the server (its data is gone).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A paused process must be continued to die promptly.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill();
    }
}
