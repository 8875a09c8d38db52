//! Fleet-wide limits on the calls made with one outside account (L1-L4),
//! shared by every worker through Redis: one atomic Lua script checks the
//! account's cooldown, takes a concurrency lease and spends from its request
//! rate, or answers how long to wait.
//!
//! - **Rate**: GCRA ("generic cell rate algorithm") with a small burst, tuned
//!   so that no sliding window of the configured length ever holds more than
//!   the configured number of calls, while the long-run rate stays within a
//!   few percent of it.
//! - **Concurrency**: a sorted set of leases scored by their expiry; a lease
//!   whose worker died holding it expires and is reclaimed by the next
//!   acquisition.
//! - **Cooldown**: a `Retry-After` or `BackOffMilliseconds` answer seen by one
//!   worker stops every worker for that account until it passes.
//!
//! The admissions and releases of all the calls in flight in a worker go to
//! Redis together: one script evaluates a batch of them in order, each as it
//! would alone, so the limits hold exactly as they would call by call while a
//! busy worker makes one round trip for many calls (a short linger, set by
//! the worker, lets a batch gather). The batch's keys span accounts: a
//! standalone Redis (or one shard) is assumed, as the fleet deploys it.
//!
//! A rate-only limit (Gmail's quota units) is smoothed in process: each call
//! that goes to Redis takes a few units ahead, which the next calls of this
//! worker spend without a round trip within a quarter of a second; the shared
//! limit holds back what may be in flight that way.
//!
//! When Redis cannot be reached the limiter fails closed to a conservative
//! local share of each limit: the limit divided by the expected number of
//! workers, kept by the same GCRA in process, so that the shares of every
//! worker together stay within the limit in any window. A call of any cost
//! (a Gmail call of several quota units) waits its turn there as it would on
//! Redis; taking credits ahead is for Redis only. The limiter goes back to
//! Redis on its own once it answers again.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use redis::{Script, aio::ConnectionManager};

use crate::batch::Batcher;
use secrecy::{ExposeSecret, SecretString};
use tracing::warn;
use uuid::Uuid;

/// The limits of one outside account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// At most this many calls (or units) per `window`; `None`: no rate limit.
    pub rate: Option<(u64, Duration)>,
    /// At most this many calls in flight at once; `None`: no concurrency limit.
    pub concurrency: Option<u32>,
}

/// What an acquisition answered.
#[derive(Debug)]
pub enum Admission {
    /// Go: the permit holds a concurrency lease, if the limit has one, until
    /// it is released (or expires).
    Granted(Permit),
    /// Not now: try again after this long.
    Wait(Duration),
}

/// A granted call. Release it when the call is over; a permit dropped
/// without release frees its lease when the lease expires.
#[derive(Debug)]
pub struct Permit {
    account: String,
    held: Held,
}

/// What a permit holds until it is released.
#[derive(Debug)]
enum Held {
    /// Nothing: a rate-only call (from Redis or from credits).
    Nothing,
    /// A concurrency lease in the sorted set `key` of Redis.
    Lease { key: String, lease: String },
    /// A slot of the local share.
    Local,
}

/// The limiter every worker of the fleet shares.
#[derive(Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

struct Inner {
    link: Arc<Link>,
    /// The admissions and releases on their way to Redis, started on first
    /// use (it needs a runtime).
    batcher: std::sync::OnceLock<Batcher<Op, Option<(i64, i64)>>>,
    linger: Duration,
    prefix: String,
    lease_ttl: Duration,
    fallback_share: u32,
    local: Mutex<HashMap<String, Local>>,
    credits: Mutex<HashMap<String, Credit>>,
    /// After Redis told this worker to wait for an account, its other calls
    /// wait too, without asking again before then.
    blocked_until: Mutex<HashMap<String, (Limit, std::time::Instant)>>,
}

/// The connection to Redis, shared by the limiter and its batcher.
struct Link {
    redis: tokio::sync::Mutex<Option<ConnectionManager>>,
    /// After a failed connection, no new attempt before this instant: calls
    /// meanwhile go to the local share at once.
    retry_at: Mutex<Option<std::time::Instant>>,
    url: SecretString,
    script: Script,
    round_trips: std::sync::atomic::AtomicU64,
}

/// One admission or release of a batch.
enum Op {
    Acquire {
        /// The account's cooldown, rate and leases keys.
        keys: [String; 3],
        cost: u32,
        interval: f64,
        burst: f64,
        concurrency: u32,
        lease: String,
        lease_ttl_ms: u64,
    },
    Release {
        key: String,
        lease: String,
    },
}

/// Most operations in one script call.
const MAX_BATCH: usize = 64;
/// Script calls in flight at once.
const BATCH_SLOTS: usize = 4;

/// Units of a rate limit taken from Redis ahead of the calls that spend them.
struct Credit {
    units: u32,
    expires: std::time::Instant,
}

/// How long taken credits may be spent: short, so that calls stay close to
/// when the shared limit counted them.
const CREDIT_LIFETIME: Duration = Duration::from_millis(250);

/// Units taken ahead with each call that goes to Redis for a rate-only limit
/// of `max` per window: none for small limits (every call asks), up to 20.
pub fn credit_batch(max: u64) -> u32 {
    u32::try_from(max / 500).unwrap_or(u32::MAX).min(20)
}

/// The local share of one account's limits, used while Redis is unreachable.
struct Local {
    /// The limit the share was cut from: a changed limit cuts a new share.
    limit: Limit,
    rate: Option<LocalRate>,
    in_flight: u32,
    concurrency: Option<u32>,
}

/// The shared GCRA of [`ACQUIRE`], kept in process. Its burst grows to the
/// largest call's cost (a GCRA never admits a call costing more than its
/// burst), with the sustained rate lowered to match, so a window still holds
/// at most `max` units.
struct LocalRate {
    max: u64,
    window: Duration,
    /// Time per unit.
    interval: Duration,
    /// Units that may go at once.
    burst: f64,
    /// The theoretical arrival time of the next unit.
    tat: std::time::Instant,
}

impl LocalRate {
    /// The GCRA of `max` per `window`.
    fn new(max: u64, window: Duration) -> Self {
        let (interval_ms, burst) = gcra(max, window);
        Self {
            max,
            window,
            interval: Duration::from_secs_f64(interval_ms / 1000.0),
            burst,
            tat: std::time::Instant::now(),
        }
    }

    /// Spends `cost` units now, or answers how long to wait for them.
    fn spend(&mut self, cost: u32) -> Result<(), Duration> {
        let now = std::time::Instant::now();
        if f64::from(cost) > self.burst {
            self.widen(f64::from(cost), now);
        }
        let tat = self.tat.max(now);
        let new_tat = tat + self.interval.mul_f64(f64::from(cost));
        let allowed_at = new_tat.checked_sub(self.interval.mul_f64(self.burst)).unwrap_or(now);
        if allowed_at > now {
            return Err((allowed_at - now).max(Duration::from_millis(1)));
        }
        self.tat = new_tat;
        Ok(())
    }

    /// Raises the burst to `burst` and slows the sustained rate so that any
    /// window still holds at most `max`. The backlog carries over in units,
    /// plus the burst's growth: the units admitted at the faster rate during
    /// the last window are counted against the new one.
    fn widen(&mut self, burst: f64, now: std::time::Instant) {
        let backlog = self.tat.saturating_duration_since(now).as_secs_f64() / self.interval.as_secs_f64();
        let sustained = (self.max as f64 - burst).max(1.0);
        let interval = self.window.div_f64(sustained);
        self.tat = now + interval.mul_f64(backlog + (burst - self.burst));
        self.interval = interval;
        self.burst = burst;
    }
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Limiter")
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

/// The atomic admission of a batch, in order: for each acquisition the
/// account's cooldown, then concurrency (expired leases reclaimed), then the
/// GCRA rate, writing nothing unless it grants (or cuts a backlog a raised
/// limit makes impossible); for each release the lease freed. Time is Redis'
/// own clock, read once for the batch, so workers' clocks never disagree.
///
/// `ARGV[1]` is the number of operations; each is `a` with cost, interval,
/// burst, concurrency, lease and lease TTL and three keys (cooldown, rate,
/// leases), or `r` with the lease and its key. The answer is a pair per
/// operation: granted (1) or not (0), and how long to wait.
const ACQUIRE: &str = r#"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000

local function acquire(cooldown_key, rate_key, leases_key, cost, interval, burst, concurrency, lease, lease_ttl)
  local cooldown = redis.call('PTTL', cooldown_key)
  if cooldown > 0 then
    return 0, cooldown
  end

  if concurrency > 0 then
    redis.call('ZREMRANGEBYSCORE', leases_key, '-inf', now)
    if redis.call('ZCARD', leases_key) >= concurrency then
      local first = redis.call('ZRANGE', leases_key, 0, 0, 'WITHSCORES')
      local until_free = tonumber(first[2]) - now
      return 0, math.max(1, math.min(until_free, 25))
    end
  end

  if interval > 0 then
    local tat = tonumber(redis.call('GET', rate_key) or '0')
    if tat < now then
      tat = now
    end
    -- A backlog the current limit could never have built (the limit was
    -- raised) is cut to the most it allows.
    if tat > now + interval * burst then
      tat = now + interval * burst
      redis.call('SET', rate_key, string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1000)
    end
    local new_tat = tat + interval * cost
    local allowed_at = new_tat - interval * burst
    if allowed_at > now then
      return 0, math.ceil(allowed_at - now)
    end
    redis.call('SET', rate_key, string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1000)
  end

  if concurrency > 0 then
    redis.call('ZADD', leases_key, now + lease_ttl, lease)
    redis.call('PEXPIRE', leases_key, lease_ttl * 2)
  end
  return 1, 0
end

local answers = {}
local key = 1
local arg = 2
for _ = 1, tonumber(ARGV[1]) do
  if ARGV[arg] == 'a' then
    local granted, wait = acquire(KEYS[key], KEYS[key + 1], KEYS[key + 2],
      tonumber(ARGV[arg + 1]), tonumber(ARGV[arg + 2]), tonumber(ARGV[arg + 3]),
      tonumber(ARGV[arg + 4]), ARGV[arg + 5], tonumber(ARGV[arg + 6]))
    answers[#answers + 1] = granted
    answers[#answers + 1] = wait
    key = key + 3
    arg = arg + 7
  else
    redis.call('ZREM', KEYS[key], ARGV[arg + 1])
    answers[#answers + 1] = 1
    answers[#answers + 1] = 0
    key = key + 1
    arg = arg + 2
  end
end
return answers
"#;

/// How long the limiter keeps to the local share before it tries to reach an
/// unreachable Redis again.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// Sets a cooldown (its value says why) unless a longer one is already
/// running; answers whether it set it.
const COOL_DOWN: &str = r#"
local ttl = redis.call('PTTL', KEYS[1])
if ttl < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
  return 1
end
return 0
"#;

/// A cooldown running now, as the operator console lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct Cooldown {
    /// The limiter's account, e.g. `graph:tenant.example` or `salesforce:00d...`.
    pub account: String,
    /// When it ends (milliseconds since the epoch, by the clock of the
    /// worker that set it).
    pub until_ms: i64,
    /// Why, as the worker that set it wrote it.
    pub reason: Option<String>,
}

fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

/// The GCRA emission interval (ms per unit) and burst (units) that keep any
/// sliding window of `window` within `limit`: the burst is a small fraction
/// of the limit, and the rate leaves room for it.
pub fn gcra(limit: u64, window: Duration) -> (f64, f64) {
    let burst = (limit / 100).clamp(1, 50) as f64;
    // In any window of length W a GCRA of interval T and burst B admits at
    // most W/T + B units: keep that at the limit.
    let sustained = (limit as f64 - burst).max(1.0);
    (window.as_secs_f64() * 1000.0 / sustained, burst)
}

impl Limiter {
    /// A limiter on the Redis at `url`; it connects lazily and keeps
    /// reconnecting. Keys start with `prefix`; concurrency leases expire after
    /// `lease_ttl`; without Redis each worker takes `1 / fallback_share` of
    /// every limit.
    pub fn new(url: SecretString, prefix: &str, lease_ttl: Duration, fallback_share: u32) -> Self {
        Self::lingering(url, prefix, lease_ttl, fallback_share, Duration::ZERO)
    }

    /// [`Limiter::new`], where a call going to Redis waits up to `linger`
    /// for others to join its round trip (none: the calls queued while a
    /// round trip runs go together with the next one).
    pub fn lingering(
        url: SecretString,
        prefix: &str,
        lease_ttl: Duration,
        fallback_share: u32,
        linger: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                link: Arc::new(Link {
                    redis: tokio::sync::Mutex::new(None),
                    retry_at: Mutex::new(None),
                    url,
                    script: Script::new(ACQUIRE),
                    round_trips: std::sync::atomic::AtomicU64::new(0),
                }),
                batcher: std::sync::OnceLock::new(),
                linger,
                prefix: prefix.to_owned(),
                lease_ttl,
                fallback_share: fallback_share.max(1),
                local: Mutex::new(HashMap::new()),
                credits: Mutex::new(HashMap::new()),
                blocked_until: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn batcher(&self) -> &Batcher<Op, Option<(i64, i64)>> {
        self.inner.batcher.get_or_init(|| {
            let link = self.inner.link.clone();
            Batcher::start_lingering(MAX_BATCH, BATCH_SLOTS, self.inner.linger, move |ops| {
                let link = link.clone();
                async move { link.run(ops).await }
            })
        })
    }

    async fn connection(&self) -> Option<ConnectionManager> {
        self.inner.link.connection().await
    }
}

impl Link {
    async fn connection(&self) -> Option<ConnectionManager> {
        let mut slot = self.redis.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Some(connection.clone());
        }
        let now = std::time::Instant::now();
        {
            let mut retry_at = self.retry_at.lock().unwrap_or_else(PoisonError::into_inner);
            if retry_at.is_some_and(|at| now < at) {
                return None;
            }
            *retry_at = Some(now + RECONNECT_PAUSE);
        }
        let client = redis::Client::open(self.url.expose_secret()).ok()?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(1);
        match tokio::time::timeout(
            Duration::from_secs(1),
            ConnectionManager::new_with_config(client, config),
        )
        .await
        {
            Ok(Ok(connection)) => {
                *slot = Some(connection.clone());
                Some(connection)
            }
            _ => None,
        }
    }

    /// Drops a connection that failed: calls go to the local share at once
    /// until a new connection is tried, after [`RECONNECT_PAUSE`].
    async fn forget_connection(&self) {
        *self.redis.lock().await = None;
        *self.retry_at.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(std::time::Instant::now() + RECONNECT_PAUSE);
    }

    /// Runs a batch in one script call: an answer per operation, all `None`
    /// when Redis cannot be reached or did not answer.
    async fn run(&self, ops: Vec<Op>) -> Vec<Option<(i64, i64)>> {
        let unanswered = || ops.iter().map(|_| None).collect();
        let Some(mut connection) = self.connection().await else {
            return unanswered();
        };
        self.round_trips.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(ops.len());
        for op in &ops {
            match op {
                Op::Acquire {
                    keys,
                    cost,
                    interval,
                    burst,
                    concurrency,
                    lease,
                    lease_ttl_ms,
                } => {
                    invocation
                        .key(&keys[0])
                        .key(&keys[1])
                        .key(&keys[2])
                        .arg("a")
                        .arg(cost)
                        .arg(interval)
                        .arg(burst)
                        .arg(concurrency)
                        .arg(lease)
                        .arg(lease_ttl_ms);
                }
                Op::Release { key, lease } => {
                    invocation.key(key).arg("r").arg(lease);
                }
            }
        }
        let answer: redis::RedisResult<Vec<i64>> = invocation.invoke_async(&mut connection).await;
        match answer {
            Ok(flat) if flat.len() == 2 * ops.len() => flat.chunks(2).map(|pair| Some((pair[0], pair[1]))).collect(),
            Ok(flat) => {
                warn!(
                    answers = flat.len(),
                    operations = ops.len(),
                    "Redis answered the rate limiter's batch with the wrong number of answers; using the local share of the limits."
                );
                unanswered()
            }
            Err(error) => {
                warn!(%error, "Redis did not answer the rate limiter; using the local share of the limits.");
                self.forget_connection().await;
                unanswered()
            }
        }
    }
}

impl Limiter {
    fn keys(&self, account: &str) -> [String; 3] {
        let base = format!("{}:rl:{{{account}}}", self.inner.prefix);
        [
            format!("{base}:cooldown"),
            format!("{base}:rate"),
            format!("{base}:leases"),
        ]
    }

    /// Asks to make a call costing `cost` units with `account` under `limit`.
    pub async fn acquire(&self, account: &str, limit: Limit, cost: u32) -> Admission {
        if let Some(wait) = self.blocked(account, limit) {
            return Admission::Wait(wait);
        }
        let admission = self.admit(account, limit, cost).await;
        if let Admission::Wait(wait) = &admission {
            self.inner
                .blocked_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(account.to_owned(), (limit, std::time::Instant::now() + *wait));
        }
        admission
    }

    /// How long this worker still waits for `account` under `limit`, if Redis
    /// said so (a changed limit asks again).
    fn blocked(&self, account: &str, limit: Limit) -> Option<Duration> {
        let blocked = self.inner.blocked_until.lock().unwrap_or_else(PoisonError::into_inner);
        let (under, until) = *blocked.get(account)?;
        if under != limit {
            return None;
        }
        until
            .checked_duration_since(std::time::Instant::now())
            .filter(|wait| !wait.is_zero())
    }

    async fn admit(&self, account: &str, limit: Limit, cost: u32) -> Admission {
        // A rate-only limit is served from credits taken from Redis a few
        // units at a time, so most calls need no round trip.
        let mut asked = (limit, cost, 0);
        if let (Some((max, window)), None) = (limit.rate, limit.concurrency) {
            let extra = credit_batch(max);
            if extra > 0 {
                if self.spend_credit(account, cost) {
                    return Admission::Granted(Permit {
                        account: account.to_owned(),
                        held: Held::Nothing,
                    });
                }
                // Credits in flight are held back from the shared limit, so
                // that spending them a little later never overfills a window.
                let reduced = Limit {
                    rate: Some((
                        max.saturating_sub(u64::from(extra) * u64::from(self.inner.fallback_share))
                            .max(1),
                        window,
                    )),
                    concurrency: None,
                };
                asked = (reduced, cost + extra, extra);
            }
        }
        let (shared_limit, shared_cost, extra) = asked;
        match self.acquire_shared(account, shared_limit, shared_cost).await {
            Some(admission) => {
                if extra > 0 && matches!(admission, Admission::Granted(_)) {
                    self.add_credit(account, extra);
                }
                admission
            }
            // Without Redis the call spends its own cost from the local
            // share of the account's own limit: no credits are taken ahead.
            None => self.acquire_locally(account, limit, cost),
        }
    }

    /// Spends `cost` units of the account's local credits, if they suffice
    /// and have not expired.
    fn spend_credit(&self, account: &str, cost: u32) -> bool {
        let mut credits = self.inner.credits.lock().unwrap_or_else(PoisonError::into_inner);
        match credits.get_mut(account) {
            Some(credit) if credit.expires > std::time::Instant::now() && credit.units >= cost => {
                credit.units -= cost;
                true
            }
            _ => false,
        }
    }

    fn add_credit(&self, account: &str, units: u32) {
        let mut credits = self.inner.credits.lock().unwrap_or_else(PoisonError::into_inner);
        credits.insert(
            account.to_owned(),
            Credit {
                units,
                expires: std::time::Instant::now() + CREDIT_LIFETIME,
            },
        );
    }

    /// Round trips to Redis for admissions and releases so far (each
    /// carries a batch of them).
    pub fn round_trips(&self) -> u64 {
        self.inner.link.round_trips.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Asks Redis for `cost` units of `limit`; `None` when Redis cannot be
    /// reached or did not answer.
    async fn acquire_shared(&self, account: &str, limit: Limit, cost: u32) -> Option<Admission> {
        let keys = self.keys(account);
        let (interval, burst) = limit.rate.map_or((0.0, 0.0), |(max, window)| gcra(max, window));
        let lease = Uuid::new_v4().simple().to_string();
        let leases = keys[2].clone();
        let answer = self
            .batcher()
            .submit(Op::Acquire {
                keys,
                cost,
                interval,
                burst,
                concurrency: limit.concurrency.unwrap_or(0),
                lease: lease.clone(),
                lease_ttl_ms: self.inner.lease_ttl.as_millis() as u64,
            })
            .await
            .flatten()?;
        Some(match answer {
            (1, _) => Admission::Granted(Permit {
                account: account.to_owned(),
                held: match limit.concurrency {
                    Some(_) => Held::Lease { key: leases, lease },
                    None => Held::Nothing,
                },
            }),
            (_, wait) => Admission::Wait(Duration::from_millis(wait.max(1) as u64)),
        })
    }

    /// Ends a granted call: its concurrency lease is freed at once, with the
    /// next round trip (if Redis is unreachable, it expires on its own).
    pub async fn release(&self, permit: Permit) {
        let (key, lease) = match permit.held {
            Held::Nothing => return,
            Held::Local => {
                let mut local = self.inner.local.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(entry) = local.get_mut(&permit.account) {
                    entry.in_flight = entry.in_flight.saturating_sub(1);
                }
                return;
            }
            Held::Lease { key, lease } => (key, lease),
        };
        // A freed slot may let this worker's waiting calls in at once.
        self.inner
            .blocked_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&permit.account);
        // Unanswered (Redis unreachable, said once by the batch): the lease
        // expires on its own.
        let _ = self.batcher().submit(Op::Release { key, lease }).await;
    }

    /// Puts `account` on cooldown for every worker for `delay` (a provider's
    /// `Retry-After` or `BackOffMilliseconds`); a longer cooldown already set
    /// is kept. `reason` is what the console shows. A cooldown set is also
    /// indexed (`{prefix}:rl:cooldowns`, by its end) for the console: a second
    /// round trip, on throttled answers only, kept apart from the account's
    /// own keys so that each command stays within one hash slot.
    pub async fn cool_down(&self, account: &str, delay: Duration, reason: &str) {
        let millis = delay.as_millis().max(1) as u64;
        if let Some(mut connection) = self.connection().await {
            let [cooldown, _, _] = self.keys(account);
            let set: redis::RedisResult<i64> = Script::new(COOL_DOWN)
                .key(&cooldown)
                .arg(millis)
                .arg(reason)
                .invoke_async(&mut connection)
                .await;
            let indexed = match set {
                Ok(1) => {
                    let now = epoch_ms();
                    redis::pipe()
                        .zadd(self.cooldown_index(), account, now + millis as i64)
                        .ignore()
                        .zrembyscore(self.cooldown_index(), "-inf", now)
                        .ignore()
                        .exec_async(&mut connection)
                        .await
                }
                Ok(_) => Ok(()),
                Err(error) => Err(error),
            };
            if let Err(error) = indexed {
                warn!(%error, "Could not share a cooldown through Redis.");
            }
        }
    }

    fn cooldown_index(&self) -> String {
        format!("{}:rl:cooldowns", self.inner.prefix)
    }

    /// The cooldowns running now, soonest to end first, with their reasons.
    pub async fn cooldowns(&self) -> redis::RedisResult<Vec<Cooldown>> {
        let Some(mut connection) = self.connection().await else {
            return Err(redis::RedisError::from((redis::ErrorKind::Io, "Redis is unreachable")));
        };
        let now = epoch_ms();
        let running: Vec<(String, i64)> = redis::cmd("ZRANGE")
            .arg(self.cooldown_index())
            .arg(now)
            .arg("+inf")
            .arg("BYSCORE")
            .arg("WITHSCORES")
            .query_async(&mut connection)
            .await?;
        if running.is_empty() {
            return Ok(Vec::new());
        }
        let mut reasons = redis::pipe();
        for (account, _) in &running {
            let [cooldown, _, _] = self.keys(account);
            reasons.get(cooldown);
        }
        let reasons: Vec<Option<String>> = reasons.query_async(&mut connection).await?;
        Ok(running
            .into_iter()
            .zip(reasons)
            // A cooldown a longer one replaced, or one Redis already expired.
            .filter(|(_, reason)| reason.is_some())
            .map(|((account, until_ms), reason)| Cooldown {
                account,
                until_ms,
                reason: reason.filter(|reason| reason != "1"),
            })
            .collect())
    }

    /// The local share of `limit` while Redis is unreachable: the rate and the
    /// concurrency divided by the expected number of workers, so that the
    /// shares of all of them together stay within the limit.
    fn acquire_locally(&self, account: &str, limit: Limit, cost: u32) -> Admission {
        let share = self.inner.fallback_share;
        let mut local = self.inner.local.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = local
            .entry(account.to_owned())
            .or_insert_with(|| Local::share_of(limit, share));
        if entry.limit != limit {
            *entry = Local {
                in_flight: entry.in_flight,
                ..Local::share_of(limit, share)
            };
        }
        if let Some(max) = entry.concurrency
            && entry.in_flight >= max
        {
            return Admission::Wait(Duration::from_millis(25));
        }
        if let Some(rate) = &mut entry.rate
            && let Err(wait) = rate.spend(cost)
        {
            return Admission::Wait(wait);
        }
        entry.in_flight += 1;
        Admission::Granted(Permit {
            account: account.to_owned(),
            held: Held::Local,
        })
    }
}

impl Local {
    /// One worker's share of `limit` when `share` workers split it.
    fn share_of(limit: Limit, share: u32) -> Self {
        Self {
            limit,
            rate: limit
                .rate
                .map(|(max, window)| LocalRate::new((max / u64::from(share)).max(1), window)),
            in_flight: 0,
            concurrency: limit.concurrency.map(|max| (max / share).max(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_rate_admits_calls_costing_more_than_its_burst_within_the_limit() {
        // 100 units per second: a burst of 1, then calls of 1 and 25 units.
        let window = Duration::from_secs(1);
        let mut rate = LocalRate::new(100, window);
        let started = std::time::Instant::now();
        let mut spent: Vec<(Duration, u32)> = Vec::new();
        while started.elapsed() < Duration::from_millis(2500) {
            let cost = if spent.len() % 3 == 2 { 25 } else { 1 };
            match rate.spend(cost) {
                Ok(()) => spent.push((started.elapsed(), cost)),
                Err(wait) => {
                    assert!(wait <= window, "a call of {cost} was told to wait {wait:?}");
                    std::thread::sleep(wait);
                }
            }
        }
        let large = spent.iter().filter(|(_, cost)| *cost == 25).count();
        assert!(large >= 3, "calls of 25 units went {large} times");
        for (first, (start, _)) in spent.iter().enumerate() {
            let in_window: u32 = spent[first..]
                .iter()
                .take_while(|(at, _)| *at < *start + window)
                .map(|(_, cost)| cost)
                .sum();
            assert!(in_window <= 100, "{in_window} units in the window from {start:?}");
        }
    }

    #[test]
    fn gcra_never_admits_more_than_the_limit_in_any_window() {
        for (limit, window) in [
            (10_000, Duration::from_secs(600)),
            (100, Duration::from_secs(1)),
            (4, Duration::from_secs(1)),
        ] {
            let (interval, burst) = gcra(limit, window);
            let admitted_in_window = window.as_secs_f64() * 1000.0 / interval + burst;
            assert!(
                admitted_in_window <= limit as f64 + 1e-6,
                "{limit}: {admitted_in_window}"
            );
            assert!(
                admitted_in_window >= limit as f64 * 0.98,
                "{limit}: {admitted_in_window}"
            );
        }
    }
}
