//! The fleet's processes in the fault run: the simulators, the api, two
//! schedulers and W workers, each of which can be killed -9 and started
//! again (a restarted worker has a new id, so its sessions are told from
//! the killed one's; every start has a log file of its own; a worker slot
//! keeps its token spool across its kills).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use chrono::{DateTime, Utc};

use crate::fleet::processes::{self, Process, free_port};

/// A slot of the fleet: one process at a time, started again after a kill.
struct Slot {
    binary: &'static str,
    name: String,
    ops: SocketAddr,
    generation: usize,
    process: Option<Process>,
}

/// A process that exited on its own: a fault test failure.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Exit {
    pub process: String,
    pub at: DateTime<Utc>,
    pub status: String,
}

/// The fleet of the run.
pub struct Fleet {
    settings: Vec<(String, String)>,
    pub logs: PathBuf,
    http: reqwest::Client,
    simulators: Process,
    api: Slot,
    schedulers: Vec<Slot>,
    workers: Vec<Slot>,
    /// Worker ids killed -9, and when: their sessions ended no later.
    pub worker_kills: Vec<(String, DateTime<Utc>)>,
    /// Processes that exited without being killed.
    pub exits: Vec<Exit>,
}

impl Fleet {
    /// Starts the simulators with `settings` (the others share them).
    pub async fn start_simulators(
        settings: Vec<(String, String)>,
        simulators_listen: SocketAddr,
        logs: PathBuf,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
        let simulators = crate::fleet::start_simulators(simulators_listen, &settings, &logs, &http).await?;
        let slot = |binary, name: String| -> anyhow::Result<Slot> {
            Ok(Slot {
                binary,
                name,
                ops: free_port()?,
                generation: 0,
                process: None,
            })
        };
        Ok(Self {
            api: slot("syncfleet-api", "api".to_owned())?,
            schedulers: (1..=2)
                .map(|index| slot("syncfleet-scheduler", format!("scheduler-{index}")))
                .collect::<anyhow::Result<_>>()?,
            workers: Vec::new(),
            settings,
            logs,
            http,
            simulators,
            worker_kills: Vec::new(),
            exits: Vec::new(),
        })
    }

    /// The api's base URL (the same across restarts).
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api.ops)
    }

    /// Adds `count` worker slots.
    pub fn add_workers(&mut self, count: usize) -> anyhow::Result<()> {
        for _ in 0..count {
            self.workers.push(Slot {
                binary: "syncfleet-worker",
                name: format!("worker-{}", self.workers.len() + 1),
                ops: free_port()?,
                generation: 0,
                process: None,
            });
        }
        Ok(())
    }

    fn start(&mut self, which: Which) -> anyhow::Result<()> {
        let settings = self.settings.clone();
        let logs = self.logs.clone();
        let slot = self.slot(which);
        slot.generation += 1;
        let name = format!("{}.{}", slot.name, slot.generation);
        let mut extra = vec![
            ("SYNCFLEET_OPS_LISTEN".to_owned(), slot.ops.to_string()),
            ("SYNCFLEET_API_LISTEN".to_owned(), slot.ops.to_string()),
        ];
        if let Which::Worker(_) = which {
            extra.push(("SYNCFLEET_WORKER_ID".to_owned(), format!("faults-{name}")));
            // Each slot's token spool outlives its kills, as a pod's
            // emptyDir outlives its container's crashes.
            let spool = logs.with_file_name("spool").join(&slot.name);
            extra.push((
                "SYNCFLEET_TOKEN_SPOOL_DIR".to_owned(),
                spool.to_string_lossy().into_owned(),
            ));
        }
        let all: Vec<(String, String)> = settings.into_iter().chain(extra).collect();
        slot.process = Some(Process::start(slot.binary, &name, slot.ops, &all, &logs)?);
        Ok(())
    }

    fn slot(&mut self, which: Which) -> &mut Slot {
        match which {
            Which::Api => &mut self.api,
            Which::Scheduler(index) => &mut self.schedulers[index],
            Which::Worker(index) => &mut self.workers[index],
        }
    }

    /// Every slot.
    fn all(&self) -> Vec<Which> {
        std::iter::once(Which::Api)
            .chain((0..self.schedulers.len()).map(Which::Scheduler))
            .chain((0..self.workers.len()).map(Which::Worker))
            .collect()
    }

    /// Starts every process not running, and waits until each is ready.
    pub async fn start_all(&mut self) -> anyhow::Result<()> {
        for which in self.all() {
            if self.slot(which).process.is_none() {
                self.start(which)?;
            }
        }
        let http = self.http.clone();
        for which in self.all() {
            if let Some(process) = self.slot(which).process.as_mut() {
                process.ready(&http, "/readyz", Duration::from_secs(120)).await?;
            }
        }
        Ok(())
    }

    /// kill -9 of a process (it is started again by [`Fleet::restart`]).
    pub async fn kill(&mut self, which: Which) -> anyhow::Result<()> {
        let slot = self.slot(which);
        let worker_id = format!("faults-{}.{}", slot.name, slot.generation);
        if let Some(process) = slot.process.take() {
            process.kill().await?;
        }
        if let Which::Worker(_) = which {
            self.worker_kills.push((worker_id, Utc::now()));
        }
        Ok(())
    }

    /// Starts a killed process again without waiting for it to be ready: it
    /// must wait for its dependencies by itself.
    pub fn restart(&mut self, which: Which) -> anyhow::Result<()> {
        if self.slot(which).process.is_none() {
            self.start(which)?;
        }
        Ok(())
    }

    /// The workers' slots.
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// Deliveries a worker has in flight now (its gauge), if it answers.
    pub async fn in_flight(&self, index: usize) -> Option<f64> {
        let ops = self.workers[index].ops;
        let text = self
            .http
            .get(format!("http://{ops}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(processes::metric_sum(&text, "syncfleet_worker_in_flight"))
    }

    /// Each scheduler's `syncfleet_scheduler_leader` gauge (`None`: it does
    /// not answer), and how long reading them took (they are read at once: the readings
    /// are of the same moment give or take that time).
    pub async fn leader_gauges(&self) -> (Vec<Option<f64>>, Duration) {
        let started = tokio::time::Instant::now();
        let reads = self.schedulers.iter().map(|slot| async move {
            slot.process.as_ref()?;
            let response = self
                .http
                .get(format!("http://{}/metrics", slot.ops))
                .send()
                .await
                .ok()?;
            let text = response.text().await.ok()?;
            Some(processes::metric_sum(&text, "syncfleet_scheduler_leader"))
        });
        let gauges = futures_util::future::join_all(reads).await;
        (gauges, started.elapsed())
    }

    /// Records every process that exited on its own (and starts it again,
    /// so the run goes on).
    pub fn check(&mut self) -> anyhow::Result<()> {
        self.simulators.check_running()?;
        for which in self.all() {
            let slot = self.slot(which);
            let Some(process) = slot.process.as_mut() else {
                continue;
            };
            if let Err(error) = process.check_running() {
                let exit = Exit {
                    process: process.name.clone(),
                    at: Utc::now(),
                    status: format!("{error:#}"),
                };
                eprintln!("{} exited: {}", exit.process, exit.status);
                self.exits.push(exit);
                self.slot(which).process = None;
                self.start(which)?;
            }
        }
        Ok(())
    }

    /// Stops the schedulers gracefully (no new cadence jobs).
    pub async fn stop_schedulers(&mut self) -> anyhow::Result<()> {
        for index in 0..self.schedulers.len() {
            if let Some(process) = self.schedulers[index].process.take() {
                process.stop(Duration::from_secs(30)).await?;
            }
        }
        Ok(())
    }

    /// Stops the workers gracefully (each drains its sessions).
    pub async fn stop_workers(&mut self) -> anyhow::Result<()> {
        for index in 0..self.workers.len() {
            if let Some(process) = self.workers[index].process.take() {
                process.stop(Duration::from_secs(60)).await?;
            }
        }
        Ok(())
    }

    /// Stops whatever still runs.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop_schedulers().await?;
        self.stop_workers().await?;
        if let Some(api) = self.api.process.take() {
            api.stop(Duration::from_secs(30)).await?;
        }
        self.simulators.stop(Duration::from_secs(30)).await
    }
}

/// A slot of the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Api,
    Scheduler(usize),
    Worker(usize),
}
