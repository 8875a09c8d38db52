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
    fn memory_is_read_from_a_proc_status() {
        let status = "Name:\tsyncfleet-worker\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t4\n";
        let memory = Memory::parse(status).unwrap();
        assert_eq!((memory.rss, memory.peak), (100 * 1024 * 1024, 200 * 1024 * 1024));
        assert!(Memory::parse("Name:\tgone\n").is_none());
        assert!(Memory::parse(&std::fs::read_to_string("/proc/self/status").unwrap()).is_some_and(|m| m.rss > 0));
    }
}
