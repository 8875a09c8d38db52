//! The fleet's processes, started from the binaries beside the load test's
//! own, as a deployment runs them: each with its settings in its environment,
//! its output in a log file, its ops port for `/readyz` and `/metrics`.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::Context;
use tokio::process::{Child, Command};

/// A free port on the loopback, for a process to listen on.
pub fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Where the fleet's binaries are: beside the running load test (the same
/// build profile), unless `SYNCFLEET_BIN_DIR` says otherwise.
pub fn binary_dir() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("SYNCFLEET_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe()?;
    Ok(exe.parent().context("the load test's binary has no folder")?.to_owned())
}

/// One running process of the fleet.
pub struct Process {
    /// Its name in the report and its log file's name.
    pub name: String,
    /// Where its `/readyz` and `/metrics` answer.
    pub ops: SocketAddr,
    child: Child,
}

impl Process {
    /// Starts `binary` with `settings` added to this process's environment,
    /// its output going to `logs/<name>.log`.
    pub fn start(
        binary: &str,
        name: &str,
        ops: SocketAddr,
        settings: &[(String, String)],
        logs: &Path,
    ) -> anyhow::Result<Self> {
        let path = binary_dir()?.join(binary);
        anyhow::ensure!(
            path.exists(),
            "{} is missing: build the fleet's binaries first (cargo build --bins, with --release for figures)",
            path.display()
        );
        let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
        let child = Command::new(&path)
            .envs(settings.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", path.display()))?;
        Ok(Self {
            name: name.to_owned(),
            ops,
            child,
        })
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits until `path` on the ops port answers 2xx; fails if the process
    /// exits first or `patience` runs out.
    pub async fn ready(&mut self, http: &reqwest::Client, path: &str, patience: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + patience;
        let url = format!("http://{}{path}", self.ops);
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("{} exited at start ({status}); see its log", self.name);
            }
            if let Ok(response) = http.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{} was not ready at {url} within {patience:?}; see its log",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fails if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!("{} exited during the run ({status}); see its log", self.name);
        }
        Ok(())
    }

    /// Kills the process at once (SIGKILL: no drain) and reaps it.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// Asks the process to stop (SIGTERM: the graceful drain), waits for it
    /// up to `patience`, then kills it.
    pub async fn stop(mut self, patience: Duration) -> anyhow::Result<()> {
        if let Some(pid) = self.pid() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        match tokio::time::timeout(patience, self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                eprintln!("{} did not stop within {patience:?}: killed", self.name);
                self.child.kill().await?;
            }
        }
        Ok(())
    }
}

/// Clock ticks per second of `/proc`'s CPU times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds (user and system) a process has used, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    process_cpu_seconds(&stat)
}

/// utime + stime of a `/proc/<pid>/stat` line (fields 14 and 15; the command
/// name in parentheses may hold spaces, so count from its closing one).
fn process_cpu_seconds(stat: &str) -> Option<f64> {
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index)?.parse::<f64>().ok();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    Some((ticks(11)? + ticks(12)?) / TICKS_PER_SECOND)
}

/// CPU seconds a process and its reaped children have used (utime, stime,
/// cutime and cstime): a server's children that came and went (PostgreSQL's
/// backends) are counted in their parent once it has waited for them.
pub fn cpu_seconds_with_children(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)? + ticks(13)? + ticks(14)?) / TICKS_PER_SECOND)
}

/// The machine's busy and total CPU seconds over all cores, from `/proc/stat`.
pub fn machine_cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    machine_cpu(&stat)
}

fn machine_cpu(stat: &str) -> Option<(f64, f64)> {
    let values: Vec<f64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|value| value.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is in user).
    let total: f64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4)?;
    Some(((total - idle) / TICKS_PER_SECOND, total / TICKS_PER_SECOND))
}

/// A process's memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss: u64,
    pub peak: u64,
}

impl Memory {
    /// Reads `VmRSS` and `VmHWM` of a `/proc/<pid>/status` text.
    pub fn parse(status: &str) -> Option<Self> {
        let kilobytes = |field: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        };
        Some(Self {
            rss: kilobytes("VmRSS:")? * 1024,
            peak: kilobytes("VmHWM:")? * 1024,
        })
    }
}

/// The sum of every series of `name` in a Prometheus text exposition.
pub fn metric_sum(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let value = if rest.starts_with('{') {
                rest.split_once("} ")?.1
            } else {
                rest.strip_prefix(' ')?
            };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_sums_its_series_and_no_other() {
        let exposition = "# HELP syncfleet_sessions_total Sync sessions\n\
                          syncfleet_sessions_total{status=\"succeeded\"} 12\n\
                          syncfleet_sessions_total{status=\"failed\"} 3\n\
                          syncfleet_sessions_total_created 99\n\
                          syncfleet_worker_in_flight 7\n";
        assert_eq!(metric_sum(exposition, "syncfleet_sessions_total"), 15.0);
        assert_eq!(metric_sum(exposition, "syncfleet_worker_in_flight"), 7.0);
        assert_eq!(metric_sum(exposition, "syncfleet_absent"), 0.0);
    }

    #[test]
    fn cpu_times_are_read_from_proc() {
        let stat = "4242 (syncfleet worker) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(process_cpu_seconds(stat), Some(3.0));
        assert_eq!(process_cpu_seconds("garbage"), None);
        let machine = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n";
        assert_eq!(machine_cpu(machine), Some((1.5, 10.0)));
        assert!(cpu_seconds(std::process::id()).is_some());
        assert!(machine_cpu_seconds().is_some_and(|(busy, total)| busy <= total));
    }

    #[test]
    fn memory_is_read_from_a_proc_status() {
        let status = "Name:\tsyncfleet-worker\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t4\n";
        let memory = Memory::parse(status).unwrap();
        assert_eq!((memory.rss, memory.peak), (100 * 1024 * 1024, 200 * 1024 * 1024));
        assert!(Memory::parse("Name:\tgone\n").is_none());
        assert!(Memory::parse(&std::fs::read_to_string("/proc/self/status").unwrap()).is_some_and(|m| m.rss > 0));
    }
}
