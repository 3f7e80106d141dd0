//! The pure side of cluster-level dream scheduling (multi-store
//! `DreamSchedule`s): cron ticks, where each store's dream sits in the
//! spread window, which due dreams start under the concurrency limits, idle
//! stores and the token budget. Nothing here reads a clock or talks to the
//! API: the fleet loop ([`super::fleet`]) and `kubectl reverie status` call
//! these with the time and the objects they read, so all of it is
//! unit-tested.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Datelike, Duration as Span, NaiveDate, TimeZone, Timelike, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::dreamschedule::validate_cron;

/// A parsed 5-field cron expression (or macro), evaluated in UTC.
///
/// Day of month and day of week follow cron's rule: when both are
/// restricted, a day matching either fires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    any_day_of_month: bool,
    any_day_of_week: bool,
}

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Far enough to find the next 29 February of any expression that can fire
/// at all; an expression such as `0 0 30 2 *` never does.
const SEARCH_STEPS: usize = 100_000;

impl Cron {
    /// Parses what [`validate_cron`] accepts; its message on error.
    pub fn parse(expr: &str) -> Result<Cron, String> {
        validate_cron(expr)?;
        let expr = expr.trim();
        let expanded = match expr {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            e => e,
        };
        let f: Vec<&str> = expanded.split_whitespace().collect();
        let (dom, dom_any) = field_bits(f[2], 1, 31, &[], 0)?;
        let (dow, dow_any) = field_bits(f[4], 0, 7, &DAY_NAMES, 0)?;
        // Sunday may be written 7.
        let dow = (dow | (dow >> 7)) & 0x7f;
        Ok(Cron {
            minutes: field_bits(f[0], 0, 59, &[], 0)?.0,
            hours: field_bits(f[1], 0, 23, &[], 0)?.0 as u32,
            days_of_month: dom as u32,
            months: field_bits(f[3], 1, 12, &MONTH_NAMES, 1)?.0 as u16,
            days_of_week: dow as u8,
            any_day_of_month: dom_any,
            any_day_of_week: dow_any,
        })
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        let dom = self.days_of_month >> date.day() & 1 == 1;
        let dow = self.days_of_week >> date.weekday().num_days_from_sunday() & 1 == 1;
        match (self.any_day_of_month, self.any_day_of_week) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    /// The first tick strictly after `t`; `None` when the expression never
    /// fires (e.g. 30 February).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut t = minute_floor(t) + Span::minutes(1);
        for _ in 0..SEARCH_STEPS {
            if self.months >> t.month() & 1 == 0 {
                let (y, m) = if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                };
                t = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single()?;
            } else if !self.day_matches(t.date_naive()) {
                t = day_floor(t)? + Span::days(1);
            } else if self.hours >> t.hour() & 1 == 0 {
                t = hour_floor(t)? + Span::hours(1);
            } else if self.minutes >> t.minute() & 1 == 0 {
                t += Span::minutes(1);
            } else {
                return Some(t);
            }
        }
        None
    }

    /// The last tick at or before `t`; `None` when there is none.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut t = minute_floor(t);
        for _ in 0..SEARCH_STEPS {
            if self.months >> t.month() & 1 == 0 {
                t = Utc
                    .with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
                    .single()?
                    - Span::minutes(1);
            } else if !self.day_matches(t.date_naive()) {
                t = day_floor(t)? - Span::minutes(1);
            } else if self.hours >> t.hour() & 1 == 0 {
                t = hour_floor(t)? - Span::minutes(1);
            } else if self.minutes >> t.minute() & 1 == 0 {
                t -= Span::minutes(1);
            } else {
                return Some(t);
            }
        }
        None
    }
}

fn minute_floor(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = t.timestamp().div_euclid(60) * 60;
    Utc.timestamp_opt(secs, 0).single().unwrap_or(t)
}

fn hour_floor(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Utc.with_ymd_and_hms(t.year(), t.month(), t.day(), t.hour(), 0, 0)
        .single()
}

fn day_floor(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Utc.with_ymd_and_hms(t.year(), t.month(), t.day(), 0, 0, 0)
        .single()
}

/// The bits of one cron field, and whether it is unrestricted (`*`/`?`).
fn field_bits(
    field: &str,
    min: u32,
    max: u32,
    names: &[&str],
    base: u32,
) -> Result<(u64, bool), String> {
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32 + base);
        }
        s.parse()
            .map_err(|_| format!("{s:?} is not a number in {field:?}"))
    };
    let mut bits = 0u64;
    let mut any = true;
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().map_err(|e| format!("step {s:?}: {e}"))?),
            None => (item, 1),
        };
        let (lo, hi) = match range {
            "*" | "?" => (min, max),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                // `a/n` means from a to the end, every n.
                None if step > 1 => (value(r)?, max),
                None => {
                    let v = value(r)?;
                    (v, v)
                }
            },
        };
        if !matches!(range, "*" | "?") || step > 1 {
            any = false;
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step.max(1);
        }
    }
    Ok((bits, any))
}

/// Parses a window (`40s`, `30m`, `2h`); absent means no spread.
pub fn parse_window(window: Option<&str>) -> Result<Duration, String> {
    let Some(w) = window.map(str::trim).filter(|w| !w.is_empty()) else {
        return Ok(Duration::ZERO);
    };
    let split = w.len() - w.chars().last().map_or(0, char::len_utf8);
    let (digits, unit) = w.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{w:?} is not a duration such as 40s, 30m or 2h"))?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        _ => None,
    }
    .ok_or_else(|| format!("{w:?} is not a duration such as 40s, 30m or 2h"))?;
    Ok(Duration::from_secs(secs))
}

/// Where a store sits in the window: a hash of `namespace/name` modulo the
/// window (millisecond steps), so it is the same every cycle and on every
/// replica, and the stores of a schedule are spread evenly.
pub fn slot_offset(namespace: &str, name: &str, window: Duration) -> Duration {
    let ms = window.as_millis() as u64;
    if ms == 0 {
        return Duration::ZERO;
    }
    let h = xxhash_rust::xxh3::xxh3_64(format!("{namespace}/{name}").as_bytes());
    Duration::from_millis(h % ms)
}

/// The window actually used for a cycle: the schedule's, but never longer
/// than the gap to the next tick (so the cycles never overlap).
pub fn effective_window(
    window: Duration,
    cycle: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
) -> Duration {
    match next.and_then(|n| (n - cycle).to_std().ok()) {
        Some(gap) => window.min(gap),
        None => window,
    }
}

/// The time a store's dream is placed at in the cycle that starts at `cycle`.
pub fn slot(cycle: DateTime<Utc>, namespace: &str, name: &str, window: Duration) -> DateTime<Utc> {
    let off = slot_offset(namespace, name, window);
    cycle + Span::milliseconds(off.as_millis() as i64)
}

/// The next run of each store at or after `now` (from the same placement
/// as the controller): its slot in the current cycle if still ahead, else
/// its slot in the next one. Sorted by time, then store.
pub fn next_runs<'a>(
    cron: &Cron,
    window: Duration,
    now: DateTime<Utc>,
    stores: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<(String, String, DateTime<Utc>)> {
    let current = cron.latest_at_or_before(now);
    let next = cron.next_after(now);
    let after_next = next.and_then(|n| cron.next_after(n));
    let mut out: Vec<(String, String, DateTime<Utc>)> = stores
        .into_iter()
        .filter_map(|(ns, name)| {
            let in_current = current.map(|c| slot(c, ns, name, effective_window(window, c, next)));
            let at = match in_current {
                Some(t) if t >= now => Some(t),
                _ => next.map(|n| slot(n, ns, name, effective_window(window, n, after_next))),
            }?;
            Some((ns.to_string(), name.to_string(), at))
        })
        .collect();
    out.sort_by(|a, b| a.2.cmp(&b.2).then_with(|| (&a.0, &a.1).cmp(&(&b.0, &b.1))));
    out
}

/// Operator-wide limits on dreams running at once (`--max-concurrent-dreams`,
/// `--max-concurrent-dreams-per-namespace`); `None` is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub cluster: Option<u32>,
    pub per_namespace: Option<u32>,
}

/// A dream that is due and waits to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    /// The namespace the dream runs in (the store's).
    pub namespace: String,
    /// Its slot (or when it was asked for, for dream-now).
    pub slot: DateTime<Utc>,
    /// A unique name (the Job's), the last tie-break.
    pub id: String,
}

/// Which due dreams start now, in start order (indices into `due`), given
/// the dreams already running per namespace.
///
/// The queue is fair across namespaces: each next place goes to the
/// namespace with the fewest dreams running or just started (ties: the
/// earliest slot, then the namespace name), and within a namespace by slot.
/// So one tenant with 500 stores cannot hold every place while another
/// tenant's dream waits.
pub fn pick(due: &[Due], running: &BTreeMap<String, u32>, limits: Limits) -> Vec<usize> {
    let total: u32 = running.values().sum();
    let mut free = limits.cluster.map_or(u32::MAX, |c| c.saturating_sub(total));
    let mut order: Vec<usize> = (0..due.len()).collect();
    order.sort_by(|&a, &b| (due[a].slot, &due[a].id).cmp(&(due[b].slot, &due[b].id)));
    let mut queues: BTreeMap<&str, VecDeque<usize>> = BTreeMap::new();
    for i in order {
        queues
            .entry(due[i].namespace.as_str())
            .or_default()
            .push_back(i);
    }
    let mut load: BTreeMap<&str, u32> = queues
        .keys()
        .map(|ns| (*ns, running.get(*ns).copied().unwrap_or(0)))
        .collect();
    let mut out = Vec::new();
    while free > 0 {
        let best = queues
            .iter()
            .filter_map(|(ns, q)| {
                let head = *q.front()?;
                let l = load.get(ns).copied().unwrap_or(0);
                (limits.per_namespace.is_none_or(|m| l < m)).then_some((l, due[head].slot, *ns))
            })
            .min();
        let Some((_, _, ns)) = best else { break };
        if let Some(i) = queues.get_mut(ns).and_then(VecDeque::pop_front) {
            out.push(i);
            *load.entry(ns).or_default() += 1;
            free -= 1;
        }
    }
    out
}

/// Whether a store is idle: it has dreamt, and no session ended (or
/// started) after that dream.
pub fn is_idle(last_dream: Option<DateTime<Utc>>, last_activity: Option<DateTime<Utc>>) -> bool {
    match (last_dream, last_activity) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(d), Some(a)) => a <= d,
    }
}

/// The tokens a schedule's dreams used in the hour before `now`, from
/// `(finished, tokens)` of its dreams; and, when that reaches `limit`,
/// when enough of them will be older than an hour for the next dream to
/// start.
pub fn budget(
    usage: &[(DateTime<Utc>, u64)],
    limit: Option<u64>,
    now: DateTime<Utc>,
) -> (u64, Option<DateTime<Utc>>) {
    let hour = Span::hours(1);
    let mut recent: Vec<(DateTime<Utc>, u64)> = usage
        .iter()
        .copied()
        .filter(|(t, _)| *t > now - hour && *t <= now)
        .collect();
    recent.sort();
    let used: u64 = recent.iter().map(|(_, n)| n).sum();
    let Some(limit) = limit else {
        return (used, None);
    };
    if used < limit {
        return (used, None);
    }
    let mut left = used;
    for (t, n) in &recent {
        left -= n;
        if left < limit {
            return (used, Some(*t + hour));
        }
    }
    (used, Some(now + hour))
}

/// Whether `labels` match a Kubernetes label selector (`matchLabels` and
/// `matchExpressions` with `In`, `NotIn`, `Exists`, `DoesNotExist`); an
/// unknown operator matches nothing, so a typo never selects every store.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// An RFC 3339 time in UTC, for the tests of scheduling code.
#[cfg(test)]
pub(crate) fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("time")
        .with_timezone(&Utc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::utc as t;

    #[test]
    fn next_and_latest_ticks() {
        let c = Cron::parse("0 3 * * *").expect("cron");
        assert_eq!(
            c.next_after(t("2026-11-30T02:59:59Z")),
            Some(t("2026-11-30T03:00:00Z"))
        );
        assert_eq!(
            c.next_after(t("2026-11-30T03:00:00Z")),
            Some(t("2026-12-01T03:00:00Z"))
        );
        assert_eq!(
            c.latest_at_or_before(t("2026-11-30T03:00:00Z")),
            Some(t("2026-11-30T03:00:00Z"))
        );
        assert_eq!(
            c.latest_at_or_before(t("2026-11-30T02:00:00Z")),
            Some(t("2026-11-29T03:00:00Z"))
        );
        let every = Cron::parse("*/15 * * * *").expect("cron");
        assert_eq!(
            every.next_after(t("2026-12-31T23:50:10Z")),
            Some(t("2027-01-01T00:00:00Z"))
        );
        assert_eq!(
            every.latest_at_or_before(t("2027-01-01T00:14:59Z")),
            Some(t("2027-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn days_months_names_and_macros() {
        // Mondays to Fridays at 09:30; 2026-11-28 is a Saturday.
        let c = Cron::parse("30 9 * * MON-FRI").expect("cron");
        assert_eq!(
            c.next_after(t("2026-11-27T10:00:00Z")),
            Some(t("2026-11-30T09:30:00Z"))
        );
        // Day of month OR day of week when both are restricted.
        let c = Cron::parse("0 0 1 * SUN").expect("cron");
        assert_eq!(
            c.next_after(t("2026-11-28T00:00:00Z")),
            Some(t("2026-11-29T00:00:00Z"))
        );
        assert_eq!(
            c.next_after(t("2026-11-29T00:00:00Z")),
            Some(t("2026-12-01T00:00:00Z"))
        );
        // Sunday as 7, months by name, a leap day.
        let c = Cron::parse("0 12 29 FEB *").expect("cron");
        assert_eq!(
            c.next_after(t("2026-03-01T00:00:00Z")),
            Some(t("2028-02-29T12:00:00Z"))
        );
        assert_eq!(
            Cron::parse("0 0 * * 7").expect("cron"),
            Cron::parse("0 0 * * 0").expect("cron")
        );
        assert_eq!(
            Cron::parse("@daily").expect("macro"),
            Cron::parse("0 0 * * *").expect("cron")
        );
        assert_eq!(
            Cron::parse("5/20 * * * *")
                .expect("cron")
                .next_after(t("2026-01-01T00:26:00Z")),
            Some(t("2026-01-01T00:45:00Z"))
        );
        assert_eq!(
            Cron::parse("0 0 30 2 *")
                .expect("cron")
                .next_after(t("2026-01-01T00:00:00Z")),
            None
        );
        assert!(Cron::parse("61 * * * *").is_err());
    }

    #[test]
    fn windows_parse() {
        assert_eq!(parse_window(None), Ok(Duration::ZERO));
        assert_eq!(parse_window(Some("40s")), Ok(Duration::from_secs(40)));
        assert_eq!(parse_window(Some("2h")), Ok(Duration::from_secs(7200)));
        assert!(parse_window(Some("2 h")).is_err());
        assert!(parse_window(Some("2d")).is_err());
    }

    #[test]
    fn placement_is_stable_and_spread() {
        let w = Duration::from_secs(600);
        let c1 = t("2026-11-30T03:00:00Z");
        let c2 = t("2026-12-01T03:00:00Z");
        let names: Vec<String> = (0..200).map(|i| format!("store-{i}")).collect();
        let mut buckets = [0u32; 10];
        for n in &names {
            let a = slot(c1, "team-a", n, w);
            let b = slot(c2, "team-a", n, w);
            assert_eq!(a - c1, b - c2, "{n} moved between days");
            assert!(a >= c1 && a < c1 + Span::seconds(600));
            buckets[((a - c1).num_seconds() / 60) as usize] += 1;
        }
        // 200 stores over 10 minutes: every minute gets some, none gets
        // more than a third.
        assert!(buckets.iter().all(|&b| b > 0 && b < 67), "{buckets:?}");
        assert_ne!(
            slot_offset("team-a", "x", w),
            slot_offset("team-b", "x", w),
            "the namespace is part of the identity"
        );
        assert_eq!(slot(c1, "ns", "x", Duration::ZERO), c1);
        assert_eq!(
            effective_window(w, c1, Some(c1 + Span::seconds(60))),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn next_runs_follow_the_placement() {
        let cron = Cron::parse("0 * * * *").expect("cron");
        let w = Duration::from_secs(1800);
        let now = t("2026-11-30T10:10:00Z");
        let runs = next_runs(&cron, w, now, [("ns", "a"), ("ns", "b"), ("ns", "c")]);
        assert_eq!(runs.len(), 3);
        for (ns, name, at) in &runs {
            let here = slot(t("2026-11-30T10:00:00Z"), ns, name, w);
            let want = if here >= now {
                here
            } else {
                slot(t("2026-11-30T11:00:00Z"), ns, name, w)
            };
            assert_eq!(*at, want);
        }
        assert!(runs.windows(2).all(|p| p[0].2 <= p[1].2));
    }

    fn due(ns: &str, secs: i64, id: &str) -> Due {
        Due {
            namespace: ns.to_string(),
            slot: t("2026-11-30T03:00:00Z") + Span::seconds(secs),
            id: id.to_string(),
        }
    }

    #[test]
    fn pick_respects_the_cluster_and_namespace_limits() {
        let q: Vec<Due> = (0..10).map(|i| due("a", i, &format!("a{i}"))).collect();
        let none = BTreeMap::new();
        let limits = Limits {
            cluster: Some(3),
            per_namespace: None,
        };
        assert_eq!(pick(&q, &none, limits), vec![0, 1, 2]);
        let running = BTreeMap::from([("a".to_string(), 2)]);
        assert_eq!(pick(&q, &running, limits), vec![0]);
        let running = BTreeMap::from([("other".to_string(), 3)]);
        assert!(pick(&q, &running, limits).is_empty());
        let per_ns = Limits {
            cluster: Some(10),
            per_namespace: Some(2),
        };
        assert_eq!(pick(&q, &none, per_ns), vec![0, 1]);
        assert_eq!(pick(&q, &none, Limits::default()).len(), 10);
    }

    #[test]
    fn pick_is_fair_across_namespaces() {
        // Namespace a has 6 due dreams, all earlier than b's 2 and c's 1.
        let mut q: Vec<Due> = (0..6).map(|i| due("a", i, &format!("a{i}"))).collect();
        q.push(due("b", 100, "b0"));
        q.push(due("b", 101, "b1"));
        q.push(due("c", 200, "c0"));
        let limits = Limits {
            cluster: Some(4),
            per_namespace: None,
        };
        let picked: Vec<&str> = pick(&q, &BTreeMap::new(), limits)
            .into_iter()
            .map(|i| q[i].id.as_str())
            .collect();
        assert_eq!(picked, ["a0", "b0", "c0", "a1"]);
        // A namespace that already runs dreams waits for the others.
        let running = BTreeMap::from([("a".to_string(), 2)]);
        let picked: Vec<&str> = pick(&q, &running, limits)
            .into_iter()
            .map(|i| q[i].id.as_str())
            .collect();
        assert_eq!(picked, ["b0", "c0"]);
        // The same input gives the same order.
        assert_eq!(
            pick(&q, &BTreeMap::new(), limits),
            pick(&q, &BTreeMap::new(), limits)
        );
    }

    #[test]
    fn idle_means_dreamt_and_nothing_since() {
        let d = Some(t("2026-11-30T03:00:00Z"));
        assert!(
            !is_idle(None, None),
            "a store that never dreamt is not idle"
        );
        assert!(is_idle(d, None));
        assert!(is_idle(d, Some(t("2026-11-30T02:00:00Z"))));
        assert!(!is_idle(d, Some(t("2026-11-30T04:00:00Z"))));
    }

    #[test]
    fn budget_waits_for_the_oldest_usage_to_age_out() {
        let now = t("2026-11-30T10:00:00Z");
        let usage = [
            (t("2026-11-30T08:30:00Z"), 9_000),
            (t("2026-11-30T09:10:00Z"), 400),
            (t("2026-11-30T09:20:00Z"), 500),
            (t("2026-11-30T09:50:00Z"), 300),
        ];
        assert_eq!(budget(&usage, None, now), (1200, None));
        assert_eq!(budget(&usage, Some(2000), now), (1200, None));
        // At 1000: dropping 09:10 (400) leaves 800 < 1000, so 10:10.
        assert_eq!(
            budget(&usage, Some(1000), now),
            (1200, Some(t("2026-11-30T10:10:00Z")))
        );
        assert_eq!(
            budget(&usage, Some(700), now),
            (1200, Some(t("2026-11-30T10:20:00Z")))
        );
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels = BTreeMap::from([
            ("tier".to_string(), "gold".to_string()),
            ("team".to_string(), "a".to_string()),
        ]);
        let mut sel = LabelSelector {
            match_labels: Some(BTreeMap::from([("tier".to_string(), "gold".to_string())])),
            ..Default::default()
        };
        assert!(selector_matches(&sel, &labels));
        let req = |op: &str, values: &[&str]| LabelSelectorRequirement {
            key: "team".to_string(),
            operator: op.to_string(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        };
        sel.match_expressions = Some(vec![req("In", &["a", "b"])]);
        assert!(selector_matches(&sel, &labels));
        sel.match_expressions = Some(vec![req("NotIn", &["a"])]);
        assert!(!selector_matches(&sel, &labels));
        sel.match_expressions = Some(vec![req("DoesNotExist", &[])]);
        assert!(!selector_matches(&sel, &labels));
        sel.match_expressions = Some(vec![req("Sometimes", &[])]);
        assert!(!selector_matches(&sel, &labels));
        assert!(selector_matches(&LabelSelector::default(), &labels));
    }
}
