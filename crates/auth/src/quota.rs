//! Quotas per principal: requests per minute, tokens per minute and a daily
//! token budget, counted atomically.
//!
//! Per-minute limits are token buckets (capacity = the limit, refilled
//! evenly over a minute), so a burst of `limit` is allowed and then one
//! more every `60 / limit` seconds; a fixed window would let twice the
//! limit through across a minute boundary. The daily budget resets at
//! midnight UTC.
//!
//! Tokens are only known once a generation ends, so admission reserves what
//! the request may use at most (its `max_tokens`) and [`Admission`] settles
//! the real count when it is dropped. Check and reservation happen under
//! one lock, so concurrent requests can never all see the same headroom:
//! with a limit of 10 requests a minute, exactly 10 of 50 simultaneous
//! requests get in. Tokens can overshoot a limit only by what requests
//! admitted under it generate beyond their reservation; the overshoot is
//! owed, and the next request waits until it is paid back.
//!
//! Pure logic: the clock is an argument, so tests need neither sleeps nor
//! a server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What one principal may use. `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    pub tokens_per_day: Option<u64>,
}

impl Limits {
    pub fn is_unlimited(&self) -> bool {
        *self == Limits::default()
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    RequestsPerMinute,
    TokensPerMinute,
    TokensPerDay,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::RequestsPerMinute => "requests_per_minute",
            LimitKind::TokensPerMinute => "tokens_per_minute",
            LimitKind::TokensPerDay => "tokens_per_day",
        }
    }
}

/// A request over one of its principal's limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} limit of {limit} reached; retry in {retry_after_secs} s", kind.as_str())]
pub struct QuotaExceeded {
    pub kind: LimitKind,
    pub limit: u64,
    /// Whole seconds until the request would be admitted (at least 1).
    pub retry_after_secs: u64,
}

/// What is left of a principal's limits right after an admission, for
/// `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Remaining {
    /// (limit, remaining) requests this minute.
    pub requests: Option<(u64, u64)>,
    /// (limit, remaining) tokens this minute.
    pub tokens: Option<(u64, u64)>,
}

/// Every principal's accounts.
#[derive(Default)]
pub struct Quotas {
    accounts: Mutex<HashMap<String, Account>>,
}

/// One principal's counters. Buckets hold what may still be spent, in
/// 1/60000ths of a unit: a bucket of `limit` per minute then gains exactly
/// `limit` sub-units per millisecond, so refills never round.
#[derive(Debug, Default)]
struct Account {
    requests: Bucket,
    tokens: Bucket,
    /// Day number (Unix days) `day_settled` counts.
    day: u64,
    /// Tokens requests that ended have used today.
    day_settled: u64,
    /// Tokens reserved by requests still running.
    day_reserved: u64,
    /// Settled usage changed since [`Quotas::take_changes`] last looked.
    dirty: bool,
}

impl Account {
    fn day_used(&self) -> u64 {
        self.day_settled.saturating_add(self.day_reserved)
    }

    /// Moves the daily count to `today`. Reservations of requests still
    /// running carry over, so the new day's count stays an upper bound.
    fn roll_to(&mut self, today: u64) {
        if self.day != today {
            self.day = today;
            self.day_settled = 0;
        }
    }
}

/// The day (Unix days) a Unix-milliseconds time falls on, as daily
/// budgets count it.
pub fn day_of(now_ms: u64) -> u64 {
    now_ms / MS_PER_DAY
}

/// One account's settled usage on one day, to keep across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyUsage {
    pub account: String,
    /// Unix days.
    pub day: u64,
    pub tokens: u64,
}

const UNIT: i128 = 60_000;
const MS_PER_DAY: u64 = 86_400_000;

/// A token bucket of `limit` per minute; `level` may go negative when
/// settled usage exceeds what was reserved.
#[derive(Debug, Default)]
struct Bucket {
    /// In [`UNIT`]s; `None` until first used (starts full).
    level: Option<i128>,
    at_ms: u64,
}

impl Bucket {
    /// Refills up to `limit` for the time since the last call.
    fn refill(&mut self, limit: u64, now_ms: u64) -> i128 {
        let full = limit as i128 * UNIT;
        let level = match self.level {
            None => full,
            Some(level) => {
                let elapsed = now_ms.saturating_sub(self.at_ms) as i128;
                (level + elapsed * limit as i128).min(full)
            }
        };
        self.level = Some(level);
        self.at_ms = self.at_ms.max(now_ms);
        level
    }

    /// Milliseconds until the level reaches `need`.
    fn wait_ms(level: i128, need: i128, limit: u64) -> u64 {
        let missing = (need - level).max(0);
        let per_ms = (limit as i128).max(1);
        ((missing + per_ms - 1) / per_ms) as u64
    }

    fn add(&mut self, delta: i128, limit: u64) {
        if let Some(level) = &mut self.level {
            *level = (*level + delta).min(limit as i128 * UNIT);
        }
    }
}

fn secs(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

impl Quotas {
    pub fn new() -> Arc<Quotas> {
        Arc::new(Quotas::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Account>> {
        self.accounts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits one request of `account` under `limits` at `now_ms` (Unix
    /// milliseconds), reserving `reserve_tokens`, or says which limit
    /// refuses it and for how long. Nothing is counted for a refused
    /// request.
    pub fn admit(
        self: &Arc<Self>,
        account: &str,
        limits: Limits,
        reserve_tokens: u64,
        now_ms: u64,
    ) -> Result<(Admission, Remaining), QuotaExceeded> {
        let mut accounts = self.lock();
        let a = accounts.entry(account.to_string()).or_default();
        a.roll_to(day_of(now_ms));
        let mut remaining = Remaining::default();
        let mut requests_level = None;
        if let Some(limit) = limits.requests_per_minute.map(u64::from) {
            let level = a.requests.refill(limit, now_ms);
            if level < UNIT {
                return Err(QuotaExceeded {
                    kind: LimitKind::RequestsPerMinute,
                    limit,
                    retry_after_secs: secs(Bucket::wait_ms(level, UNIT, limit)),
                });
            }
            requests_level = Some((limit, level));
        }
        if let Some(limit) = limits.tokens_per_minute {
            let level = a.tokens.refill(limit, now_ms);
            // Admitted while anything is left; the reservation may take
            // the bucket below zero, and later requests wait for it.
            if level <= 0 {
                return Err(QuotaExceeded {
                    kind: LimitKind::TokensPerMinute,
                    limit,
                    retry_after_secs: secs(Bucket::wait_ms(level, 1, limit)),
                });
            }
            let reserved = reserve_tokens.min(limit) as i128 * UNIT;
            a.tokens.add(-reserved, limit);
            remaining.tokens = Some((limit, ((level - reserved).max(0) / UNIT) as u64));
        }
        if let Some(limit) = limits.tokens_per_day {
            if a.day_used() >= limit {
                if let Some(limit) = limits.tokens_per_minute {
                    // Undo this request's reservation above.
                    a.tokens
                        .add(reserve_tokens.min(limit) as i128 * UNIT, limit);
                }
                return Err(QuotaExceeded {
                    kind: LimitKind::TokensPerDay,
                    limit,
                    retry_after_secs: secs(MS_PER_DAY - now_ms % MS_PER_DAY),
                });
            }
        }
        if let Some((limit, level)) = requests_level {
            a.requests.add(-UNIT, limit);
            remaining.requests = Some((limit, ((level - UNIT) / UNIT) as u64));
        }
        a.day_reserved = a.day_reserved.saturating_add(reserve_tokens);
        Ok((
            Admission {
                quotas: Arc::clone(self),
                account: account.to_string(),
                limits,
                reserved: reserve_tokens,
                used: 0,
            },
            remaining,
        ))
    }

    /// Tokens counted against `account` today, reservations included.
    pub fn used_today(&self, account: &str, now_ms: u64) -> u64 {
        self.lock()
            .get(account)
            .filter(|a| a.day == day_of(now_ms))
            .map_or(0, Account::day_used)
    }

    /// Settled usage of every account that changed since the last call,
    /// for the caller to persist.
    pub fn take_changes(&self) -> Vec<DailyUsage> {
        let mut accounts = self.lock();
        accounts
            .iter_mut()
            .filter(|(_, a)| a.dirty)
            .map(|(account, a)| {
                a.dirty = false;
                DailyUsage {
                    account: account.clone(),
                    day: a.day,
                    tokens: a.day_settled,
                }
            })
            .collect()
    }

    /// Marks `changes` (from [`Quotas::take_changes`]) as still to save,
    /// after saving them failed.
    pub fn unsaved(&self, changes: &[DailyUsage]) {
        let mut accounts = self.lock();
        for c in changes {
            if let Some(a) = accounts.get_mut(&c.account) {
                a.dirty = true;
            }
        }
    }

    /// Puts back usage persisted before a restart; only today's counts.
    pub fn restore(&self, usage: &DailyUsage, now_ms: u64) {
        let today = day_of(now_ms);
        if usage.day != today {
            return;
        }
        let mut accounts = self.lock();
        let a = accounts.entry(usage.account.clone()).or_default();
        a.roll_to(today);
        a.day_settled = a.day_settled.max(usage.tokens);
    }

    fn settle(&self, account: &str, limits: Limits, reserved: u64, used: u64) {
        let mut accounts = self.lock();
        let Some(a) = accounts.get_mut(account) else {
            return;
        };
        if let Some(limit) = limits.tokens_per_minute {
            let delta = reserved.min(limit) as i128 - used as i128;
            a.tokens.add(delta * UNIT, limit);
        }
        // A request admitted yesterday is charged to the day it ends on.
        a.day_reserved = a.day_reserved.saturating_sub(reserved);
        a.day_settled = a.day_settled.saturating_add(used);
        a.dirty |= used > 0;
    }
}

/// One admitted request's reservation. Record what it used with
/// [`Admission::used`] (or count it up with [`Admission::add`]); dropping
/// it settles the account: the reservation is returned and the usage
/// charged, nothing for a request that never generated.
#[derive(Debug)]
pub struct Admission {
    quotas: Arc<Quotas>,
    account: String,
    limits: Limits,
    reserved: u64,
    used: u64,
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quotas").finish_non_exhaustive()
    }
}

impl Admission {
    /// The tokens the request used (prompt and completion); a later call
    /// replaces an earlier one.
    pub fn used(&mut self, tokens: u64) {
        self.used = tokens;
    }

    /// Counts `tokens` more (pieces of a stream as they go out).
    pub fn add(&mut self, tokens: u64) {
        self.used = self.used.saturating_add(tokens);
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.quotas
            .settle(&self.account, self.limits, self.reserved, self.used);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_764_000_000_000; // some Unix milliseconds, mid-day

    fn rpm(n: u32) -> Limits {
        Limits {
            requests_per_minute: Some(n),
            ..Limits::default()
        }
    }

    #[test]
    fn a_burst_of_the_limit_then_one_per_interval() {
        let q = Quotas::new();
        let mut held = Vec::new();
        for _ in 0..10 {
            held.push(q.admit("k", rpm(10), 0, T0).unwrap());
        }
        let refused = q.admit("k", rpm(10), 0, T0).unwrap_err();
        assert_eq!(refused.kind, LimitKind::RequestsPerMinute);
        assert_eq!(refused.retry_after_secs, 6);
        // 5.999 s later, still nothing; at 6 s, exactly one more.
        assert!(q.admit("k", rpm(10), 0, T0 + 5_999).is_err());
        assert!(q.admit("k", rpm(10), 0, T0 + 6_000).is_ok());
        assert!(q.admit("k", rpm(10), 0, T0 + 6_000).is_err());
        // Another principal has its own bucket.
        assert!(q.admit("other", rpm(10), 0, T0).is_ok());
    }

    #[test]
    fn remaining_counts_down() {
        let q = Quotas::new();
        let (_a, r) = q.admit("k", rpm(3), 0, T0).unwrap();
        assert_eq!(r.requests, Some((3, 2)));
        let (_b, r) = q.admit("k", rpm(3), 0, T0).unwrap();
        assert_eq!(r.requests, Some((3, 1)));
    }

    #[test]
    fn concurrent_admissions_never_exceed_the_limit() {
        let q = Quotas::new();
        let admitted = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..50 {
                s.spawn(|| {
                    if let Ok(a) = q.admit("k", rpm(10), 0, T0) {
                        admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        std::mem::forget(a);
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 10);
    }

    #[test]
    fn tokens_per_minute_reserve_then_settle() {
        let q = Quotas::new();
        let tpm = Limits {
            tokens_per_minute: Some(100),
            ..Limits::default()
        };
        let (mut a, r) = q.admit("k", tpm, 80, T0).unwrap();
        assert_eq!(r.tokens, Some((100, 20)));
        // A second request fits in what is left (20 > 0), reserving 80:
        // the bucket goes below zero and the third must wait.
        let (b, _) = q.admit("k", tpm, 80, T0).unwrap();
        assert_eq!(
            q.admit("k", tpm, 1, T0).unwrap_err().kind,
            LimitKind::TokensPerMinute
        );
        // The first used only 10 of its 80, the second counted 25 as it
        // streamed: 100 - 10 - 25 = 65 left.
        a.used(10);
        drop(a);
        let mut b = b;
        for _ in 0..25 {
            b.add(1);
        }
        drop(b);
        let (_c, r) = q.admit("k", tpm, 0, T0).unwrap();
        assert_eq!(r.tokens, Some((100, 65)));
    }

    #[test]
    fn usage_beyond_the_reservation_is_owed() {
        let q = Quotas::new();
        let tpm = Limits {
            tokens_per_minute: Some(60),
            ..Limits::default()
        };
        let (mut a, _) = q.admit("k", tpm, 0, T0).unwrap();
        a.used(120); // 60 over the limit: a minute of debt
        drop(a);
        let refused = q.admit("k", tpm, 0, T0).unwrap_err();
        assert_eq!(refused.retry_after_secs, 61);
        assert!(q.admit("k", tpm, 0, T0 + 60_000).is_err());
        assert!(q.admit("k", tpm, 0, T0 + 61_000).is_ok());
    }

    #[test]
    fn the_daily_budget_counts_reservations_and_resets_at_midnight() {
        let q = Quotas::new();
        let day = Limits {
            tokens_per_day: Some(1000),
            ..Limits::default()
        };
        let (mut a, _) = q.admit("k", day, 600, T0).unwrap();
        let (b, _) = q.admit("k", day, 600, T0).unwrap();
        assert_eq!(q.used_today("k", T0), 1200);
        let refused = q.admit("k", day, 1, T0).unwrap_err();
        assert_eq!(refused.kind, LimitKind::TokensPerDay);
        let midnight = (T0 / MS_PER_DAY + 1) * MS_PER_DAY;
        assert_eq!(refused.retry_after_secs, secs(midnight - T0));
        a.used(100);
        drop(a);
        drop(b); // never generated: charged nothing
        assert_eq!(q.used_today("k", T0), 100);
        let (b, _) = q.admit("k", day, 600, T0).unwrap();
        assert!(q.admit("k", day, 0, T0).is_ok());
        let (c, _) = q.admit("k", day, 400, T0).unwrap();
        assert!(q.admit("k", day, 0, T0).is_err());
        // A new day forgets what was used, not what is still running: the
        // 1000 tokens reserved by requests in flight count against it.
        assert!(q.admit("k", day, 0, midnight).is_err());
        drop((b, c));
        assert!(q.admit("k", day, 0, midnight).is_ok());
    }

    #[test]
    fn settled_usage_survives_a_restart() {
        let q = Quotas::new();
        let day = Limits {
            tokens_per_day: Some(100),
            ..Limits::default()
        };
        let (mut a, _) = q.admit("k", day, 50, T0).unwrap();
        let (_running, _) = q.admit("k", day, 30, T0).unwrap();
        a.used(90);
        drop(a);
        // Only settled tokens are persisted, reservations are not.
        let saved = q.take_changes();
        assert_eq!(
            saved,
            [DailyUsage {
                account: "k".into(),
                day: T0 / MS_PER_DAY,
                tokens: 90
            }]
        );
        assert!(q.take_changes().is_empty(), "nothing changed since");
        let restarted = Quotas::new();
        for u in &saved {
            restarted.restore(u, T0);
        }
        assert_eq!(restarted.used_today("k", T0), 90);
        let held = restarted.admit("k", day, 10, T0).unwrap();
        assert!(restarted.admit("k", day, 0, T0).is_err());
        drop(held);
        // Yesterday's usage is not restored today.
        let tomorrow = Quotas::new();
        tomorrow.restore(&saved[0], T0 + MS_PER_DAY);
        assert_eq!(tomorrow.used_today("k", T0 + MS_PER_DAY), 0);
    }

    #[test]
    fn a_refused_request_costs_nothing() {
        let q = Quotas::new();
        let both = Limits {
            requests_per_minute: Some(10),
            tokens_per_minute: Some(100),
            tokens_per_day: Some(50),
        };
        let (mut a, _) = q.admit("k", both, 10, T0).unwrap();
        a.used(50);
        drop(a);
        // The budget refuses; neither bucket may have been charged.
        assert_eq!(
            q.admit("k", both, 30, T0).unwrap_err().kind,
            LimitKind::TokensPerDay
        );
        let unlimited_day = Limits {
            tokens_per_day: None,
            ..both
        };
        let (_b, r) = q.admit("k", unlimited_day, 0, T0).unwrap();
        assert_eq!(r.requests, Some((10, 8)));
        assert_eq!(r.tokens, Some((100, 50)));
    }
}
