//! The real `outcome-meter serve` as a child process: spawn it on a free port,
//! wait until it is ready, SIGKILL or SIGTERM it, read its memory use.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A free loopback address (the port is released for the child to bind).
pub fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "127.0.0.1:0".into())
}

/// How to start the binary.
#[derive(Clone, Debug)]
pub struct ServeCommand {
    pub binary: PathBuf,
    pub config: PathBuf,
    /// Working directory (relative paths in the config resolve here).
    pub dir: PathBuf,
    /// Extra arguments after `serve` (e.g. `--no-receiver`).
    pub args: Vec<String>,
    /// `RUST_LOG` for the child; its stderr is inherited when `show_logs`.
    pub log: String,
    pub show_logs: bool,
    /// Append the child's stderr (its logs) to this file instead (wins over `show_logs`).
    pub log_file: Option<PathBuf>,
}

impl ServeCommand {
    pub fn new(binary: &Path, config: &Path, dir: &Path) -> ServeCommand {
        ServeCommand {
            binary: binary.to_path_buf(),
            config: config.to_path_buf(),
            dir: dir.to_path_buf(),
            args: Vec::new(),
            log: "error".into(),
            show_logs: true,
            log_file: None,
        }
    }

    /// Start `serve` listening on `addr` (webhooks), with its admin listener
    /// (health, readiness, metrics) on another free loopback port.
    pub fn spawn_on(&self, addr: &str) -> std::io::Result<ServeProcess> {
        let admin = free_addr();
        let stderr = match &self.log_file {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
            None if self.show_logs => Stdio::inherit(),
            None => Stdio::null(),
        };
        let child = Command::new(&self.binary)
            .arg("--config")
            .arg(&self.config)
            .args(["serve", "--listen", addr, "--admin-listen", &admin])
            .args(&self.args)
            .current_dir(&self.dir)
            .env("RUST_LOG", &self.log)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()?;
        Ok(ServeProcess {
            child,
            addr: addr.to_string(),
            admin_addr: admin,
            alive: true,
        })
    }

    /// Start `serve` on a free port.
    pub fn spawn(&self) -> std::io::Result<ServeProcess> {
        self.spawn_on(&free_addr())
    }
}

/// A running child; killed when dropped.
pub struct ServeProcess {
    child: Child,
    pub addr: String,
    /// The admin listener: `/healthz`, `/readyz`, `/metrics`.
    pub admin_addr: String,
    pub alive: bool,
}

impl ServeProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// Poll `/readyz` until it answers 200.
    pub async fn wait_ready(
        &mut self,
        http: &reqwest::Client,
        limit: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.alive = false;
                return Err(format!("outcome-meter on {} exited: {status}", self.addr));
            }
            if let Ok(r) = http.get(self.admin_url("/readyz")).send().await {
                if r.status() == 200 {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(format!("outcome-meter on {} never became ready", self.addr))
    }

    /// SIGKILL: no cleanup, no flush, as a crash or an OOM kill would leave it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.alive = false;
    }

    /// SIGTERM, then wait for the exit (SIGKILL after `limit`).
    pub async fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        let pid = libc::pid_t::try_from(self.child.id()).ok()?;
        // SAFETY: sending a signal to our own child process id.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.alive = false;
                return Some(status);
            }
            if Instant::now() >= deadline {
                self.kill();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// (current, peak) resident set size in KiB, from `/proc` (Linux).
    pub fn rss_kib(&self) -> Option<(u64, u64)> {
        rss_kib(self.child.id())
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if self.alive {
            self.kill();
        }
    }
}

/// CPU time (user + system) a process has used so far, from `/proc` (Linux);
/// `pid` 0 is this process.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let path = if pid == 0 {
        "/proc/self/stat".to_string()
    } else {
        format!("/proc/{pid}/stat")
    };
    Some(parse_stat(&std::fs::read_to_string(path).ok()?)?.1)
}

/// A `/proc/…/stat` line: the command name and the CPU time (user + system)
/// in seconds.
fn parse_stat(stat: &str) -> Option<(&str, f64)> {
    // "pid (comm) state …": the name (which may hold spaces) is between the
    // first '(' and the last ')'; after it, utime and stime are the 12th and
    // 13th fields, in clock ticks (100 a second).
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    Some((
        stat.get(open + 1..close)?,
        (ticks(11)? + ticks(12)?) as f64 / 100.0,
    ))
}

/// CPU time (user + system) each thread of process `pid` whose name starts
/// with `prefix` has used so far, by thread id, from `/proc` (Linux). SQLite's
/// connections each run on a thread of their own (`sqlx-sqlite-worker-N`, cut
/// to 15 characters by the kernel), so this tells how busy each connection is.
pub fn thread_cpu_secs(pid: u32, prefix: &str) -> std::collections::BTreeMap<u32, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let Some((name, secs)) = parse_stat(&stat) {
            if name.starts_with(prefix) {
                out.insert(tid, secs);
            }
        }
    }
    out
}

/// (VmRSS, VmHWM) of a process in KiB.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    use super::parse_stat;

    #[test]
    fn a_stat_line_gives_its_name_and_cpu_even_with_spaces_and_parentheses_in_the_name() {
        let line = "4242 (sqlx-sqlite (x) 1) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 1 0";
        let (name, secs) = parse_stat(line).expect("a stat line");
        assert_eq!(name, "sqlx-sqlite (x) 1");
        assert!(
            (secs - 4.0).abs() < 1e-9,
            "250 + 150 ticks at 100 a second: {secs}"
        );
        assert_eq!(parse_stat("4242 (cut"), None);
    }
}
