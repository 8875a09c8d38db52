//! The faults of a run, drawn from `--seed`: the same seed, duration and
//! fleet give the same faults in the same order at the same offsets.

use std::time::Duration;

use super::services::StopMode;

/// A small deterministic generator (SplitMix64): the run needs repeatable
/// draws, not a cryptographic source.
#[derive(Debug, Clone)]
pub struct Draws(u64);

impl Draws {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A whole number in `0..bound` (`bound` at least 1).
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound.max(1) as u64) as usize
    }

    /// A duration between `low` and `high` seconds, whole seconds.
    pub fn seconds(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_secs(low + self.next_u64() % (high - low + 1))
    }

    /// `true` with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// One fault and how long it lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 of a worker (its sessions in flight), restarted after `down`.
    KillWorker { slot: usize, down: Duration },
    /// kill -9 of the scheduler that leads, restarted after `down`.
    KillLeader { down: Duration },
    /// kill -9 of both schedulers, restarted after `down`.
    KillBothSchedulers { down: Duration },
    /// kill -9 of the api, restarted on its address after `down`.
    KillApi { down: Duration },
    /// RabbitMQ stopped (`rabbitmqctl stop`), started after `down`; the api
    /// and a worker are restarted while it is down.
    StopRabbit { down: Duration },
    /// RabbitMQ's node killed -9, started after `down`.
    KillRabbit { down: Duration },
    /// Redis killed -9, restarted empty after `down`.
    KillRedis { down: Duration },
    /// PostgreSQL stopped with `mode`, started after `down`; the api and a
    /// scheduler are restarted while it is down (and a worker joins, once).
    StopPostgres { mode: StopMode, down: Duration },
    /// The SMTP server refuses connections (421) for `down`.
    SmtpDown { down: Duration },
    /// The SMTP server answers 451 to the next `times` emails.
    Smtp451 { times: u32 },
    /// Providers answer 5xx (Graph 503, Gmail 500, EWS busy, Salesforce 503)
    /// to a share of the calls for `down`.
    ProviderErrors { down: Duration },
    /// Salesforce answers UNABLE_TO_LOCK_ROW to the next writes of some orgs.
    LockFaults { times: u32 },
}

impl Fault {
    /// The fault's name in the report.
    pub fn name(&self) -> String {
        match self {
            Self::KillWorker { slot, .. } => format!("kill -9 worker-{}", slot + 1),
            Self::KillLeader { .. } => "kill -9 leading scheduler".to_owned(),
            Self::KillBothSchedulers { .. } => "kill -9 both schedulers".to_owned(),
            Self::KillApi { .. } => "kill -9 api".to_owned(),
            Self::StopRabbit { .. } => "RabbitMQ stopped".to_owned(),
            Self::KillRabbit { .. } => "RabbitMQ node killed -9".to_owned(),
            Self::KillRedis { .. } => "Redis killed -9".to_owned(),
            Self::StopPostgres { mode, .. } => format!("PostgreSQL stopped ({})", mode.as_str()),
            Self::SmtpDown { .. } => "SMTP down".to_owned(),
            Self::Smtp451 { times } => format!("SMTP answers 451 to {times} emails"),
            Self::ProviderErrors { .. } => "provider 5xx".to_owned(),
            Self::LockFaults { times } => format!("Salesforce UNABLE_TO_LOCK_ROW x{times}"),
        }
    }

    /// The fault's kind, the same for every fault of it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::KillWorker { .. } => "kill_worker",
            Self::KillLeader { .. } => "kill_leader",
            Self::KillBothSchedulers { .. } => "kill_both_schedulers",
            Self::KillApi { .. } => "kill_api",
            Self::StopRabbit { .. } => "stop_rabbitmq",
            Self::KillRabbit { .. } => "kill_rabbitmq",
            Self::KillRedis { .. } => "kill_redis",
            Self::StopPostgres { .. } => "stop_postgresql",
            Self::SmtpDown { .. } => "smtp_down",
            Self::Smtp451 { .. } => "smtp_451",
            Self::ProviderErrors { .. } => "provider_5xx",
            Self::LockFaults { .. } => "lock_faults",
        }
    }

    /// How long the fault is held (zero for one-shot faults).
    pub fn down(&self) -> Duration {
        match self {
            Self::KillWorker { down, .. }
            | Self::KillLeader { down }
            | Self::KillBothSchedulers { down }
            | Self::KillApi { down }
            | Self::StopRabbit { down }
            | Self::KillRabbit { down }
            | Self::KillRedis { down }
            | Self::StopPostgres { down, .. }
            | Self::SmtpDown { down }
            | Self::ProviderErrors { down } => *down,
            Self::Smtp451 { .. } | Self::LockFaults { .. } => Duration::ZERO,
        }
    }
}

/// A fault and when it starts, from the start of the fault phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub at: Duration,
    pub fault: Fault,
}

/// Which faults a run draws from.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub seed: u64,
    pub duration: Duration,
    pub workers: usize,
    /// The short version: worker kills, PostgreSQL restarts, Redis kills and
    /// RabbitMQ restarts only, shorter outages.
    pub short: bool,
    /// Whether PostgreSQL is the run's own (else it is never stopped).
    pub private_postgres: bool,
}

/// The kinds of fault, as drawn: each kind once first (in a drawn order),
/// then drawn at random until the duration is filled.
const ALL_KINDS: usize = 12;
const SHORT_KINDS: [usize; 4] = [WORKER_KILL, 7, 6, 4];
/// The kind of a worker's kill -9.
const WORKER_KILL: usize = 0;

impl Plan {
    /// The run's faults, in order; the first starts after a few seconds of
    /// normal work, the last ends before `duration`.
    pub fn faults(&self) -> Vec<Planned> {
        let mut draws = Draws::new(self.seed);
        let kinds: Vec<usize> = if self.short {
            SHORT_KINDS.to_vec()
        } else {
            (0..ALL_KINDS).collect()
        };
        let kinds: Vec<usize> = kinds
            .into_iter()
            .filter(|kind| self.private_postgres || *kind != 7)
            .collect();
        let mut order = kinds.clone();
        // Fisher-Yates: every kind once, in the seed's order.
        for index in (1..order.len()).rev() {
            order.swap(index, draws.below(index + 1));
        }
        let mut planned = Vec::new();
        let mut at = draws.seconds(5, 10);
        let mut next = 0;
        loop {
            let kind = match order.get(next) {
                Some(kind) => *kind,
                // Worker kills, the commonest fault of a deployment, weigh more.
                None if draws.chance(50) => WORKER_KILL,
                None => kinds[draws.below(kinds.len())],
            };
            next += 1;
            let fault = self.fault(kind, &mut draws);
            let end = at + fault.down();
            if end > self.duration {
                break;
            }
            planned.push(Planned { at, fault });
            // Time for the fleet to work between faults.
            at = end
                + if self.short {
                    draws.seconds(4, 8)
                } else {
                    draws.seconds(6, 16)
                };
        }
        planned
    }

    fn fault(&self, kind: usize, draws: &mut Draws) -> Fault {
        let short = self.short;
        match kind {
            0 => Fault::KillWorker {
                slot: draws.below(self.workers),
                down: draws.seconds(1, 4),
            },
            1 => Fault::KillLeader {
                down: draws.seconds(2, 6),
            },
            2 => Fault::KillBothSchedulers {
                down: draws.seconds(4, 10),
            },
            3 => Fault::KillApi {
                down: draws.seconds(1, 4),
            },
            4 => Fault::StopRabbit {
                down: if short {
                    draws.seconds(3, 6)
                } else {
                    draws.seconds(5, 15)
                },
            },
            5 => Fault::KillRabbit {
                down: draws.seconds(5, 12),
            },
            6 => Fault::KillRedis {
                down: if short {
                    draws.seconds(12, 18)
                } else {
                    draws.seconds(25, 35)
                },
            },
            7 => Fault::StopPostgres {
                mode: if draws.chance(50) {
                    StopMode::Immediate
                } else {
                    StopMode::Fast
                },
                down: if short {
                    draws.seconds(4, 8)
                } else {
                    draws.seconds(5, 15)
                },
            },
            8 => Fault::SmtpDown {
                down: draws.seconds(10, 25),
            },
            9 => Fault::Smtp451 {
                times: 1 + draws.below(5) as u32,
            },
            10 => Fault::ProviderErrors {
                down: draws.seconds(10, 20),
            },
            _ => Fault::LockFaults {
                times: 1 + draws.below(3) as u32,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(seed: u64, short: bool, private_postgres: bool) -> Plan {
        Plan {
            seed,
            duration: Duration::from_secs(if short { 90 } else { 480 }),
            workers: 3,
            short,
            private_postgres,
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_faults_and_another_seed_others() {
        assert_eq!(plan(7, false, true).faults(), plan(7, false, true).faults());
        assert_ne!(plan(7, false, true).faults(), plan(8, false, true).faults());
    }

    #[test]
    fn a_long_run_meets_every_kind_of_fault_in_order_within_its_duration() {
        let faults = plan(42, false, true).faults();
        let kinds: std::collections::BTreeSet<&str> = faults.iter().map(|planned| planned.fault.kind()).collect();
        assert_eq!(kinds.len(), ALL_KINDS, "{kinds:?}");
        for pair in faults.windows(2) {
            assert!(pair[0].at + pair[0].fault.down() < pair[1].at, "{pair:?}");
        }
        let last = faults.last().unwrap();
        assert!(last.at + last.fault.down() <= Duration::from_secs(480));
    }

    #[test]
    fn workers_are_killed_most_often() {
        for seed in 0..20 {
            let faults = plan(seed, false, true).faults();
            let kills = faults
                .iter()
                .filter(|planned| matches!(planned.fault, Fault::KillWorker { .. }))
                .count();
            assert!(
                kills >= 4 && kills * 6 >= faults.len(),
                "seed {seed}: {kills} of {}",
                faults.len()
            );
        }
    }

    #[test]
    fn the_short_version_keeps_to_the_four_kinds_that_matter_most() {
        let faults = plan(3, true, true).faults();
        assert!(faults.len() >= 6, "{faults:?}");
        for planned in &faults {
            assert!(
                matches!(
                    planned.fault,
                    Fault::KillWorker { .. }
                        | Fault::StopPostgres { .. }
                        | Fault::KillRedis { .. }
                        | Fault::StopRabbit { .. }
                ),
                "{planned:?}"
            );
        }
    }

    #[test]
    fn the_shared_postgresql_is_never_stopped() {
        for seed in 0..20 {
            for short in [true, false] {
                assert!(
                    plan(seed, short, false)
                        .faults()
                        .iter()
                        .all(|planned| !matches!(planned.fault, Fault::StopPostgres { .. }))
                );
            }
        }
    }
}
