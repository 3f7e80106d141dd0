//! The fleet scheduler: drives every multi-store `DreamSchedule`
//! (`spec.storeSelector`) from one loop, so the concurrency limits and the
//! fair queue hold across all schedules and namespaces.
//!
//! Each pass reads the watched objects from in-memory caches (schedules,
//! stores, dream Jobs, their pods, agent sessions), plans every schedule's
//! current cycle with the pure functions of [`super::scheduler`], starts the
//! dreams that are due and fit under the limits, removes the Jobs of old
//! cycles and writes each schedule's status when it changed. It then sleeps
//! until the next slot, budget release or cycle, or until a watched object
//! changes: no polling.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use futures::{Stream, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use tokio::sync::Notify;

use super::dreamschedule::new_dream_now_token;
use super::jobs::{
    cycle_run_key, dream_now_run_key, fleet_dream_job, fleet_job_name, job_state, parse_result,
    pod_termination, DreamResult, JobState, ROLE_LABEL, RUN_LABEL, SCHEDULE_LABEL,
};
use super::scheduler::{self, Cron, Due, Limits};
use super::status::{conditions, Health};
use super::writes::{now, write_status};
use super::{workers, Context};
use crate::api::{
    AgentSession, CycleCounts, CycleStatus, DreamSchedule, DreamScheduleStatus, MemoryStore,
    STORE_LABEL,
};

/// Annotation on a MemoryStore that a writer of transcripts other than a
/// reverie agent (a log shipper, a CI job) sets to the time it last added
/// sessions, so a store it feeds is not taken for idle.
pub const SESSIONS_UPDATED_ANNOTATION: &str = "reverie.dev/sessions-updated";

/// The longest sleep between passes when nothing changes.
const MAX_SLEEP: Duration = Duration::from_secs(300);
/// A schedule's status is written at most this often while only its counts
/// move (a change of reason is written at once), to bound API writes.
const STATUS_INTERVAL: Duration = Duration::from_secs(2);
/// How long a Job this loop created counts as running before the cache
/// shows it (so two passes in a row never overshoot the limits).
const CREATED_GRACE: Duration = Duration::from_secs(60);

static LIMITS: OnceLock<Limits> = OnceLock::new();

/// Sets the operator-wide limits (from `reverie controller` flags) once,
/// before the controllers start; later calls are ignored. Unset means no
/// limit.
pub fn set_limits(limits: Limits) {
    let _ = LIMITS.set(limits);
}

fn limits() -> Limits {
    LIMITS.get().copied().unwrap_or_default()
}

/// The caches the loop plans from.
struct Caches {
    schedules: Store<DreamSchedule>,
    stores: Store<MemoryStore>,
    jobs: Store<Job>,
    pods: Store<Pod>,
    sessions: Store<AgentSession>,
}

/// What the loop remembers between passes (nothing of it is needed after a
/// restart: the Jobs are the record).
#[derive(Default)]
struct Memory {
    /// Jobs created and not yet seen in the cache: (namespace, name) → when.
    created: BTreeMap<(String, String), Instant>,
    /// When each schedule's status was last written.
    written: BTreeMap<(String, String), Instant>,
}

fn to_chrono(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)
}

fn to_time(t: DateTime<Utc>) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    k8s_openapi::jiff::Timestamp::new(t.timestamp(), t.timestamp_subsec_nanos() as i32)
        .ok()
        .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time)
}

/// The newest sign of new sessions on a store: the sessions-updated
/// annotation, and agent sessions whose transcript is on the store (their
/// end, or their start while they run).
fn last_activity(store: &MemoryStore, sessions: &[Arc<AgentSession>]) -> Option<DateTime<Utc>> {
    let annotated = store
        .annotations()
        .get(SESSIONS_UPDATED_ANNOTATION)
        .and_then(|v| DateTime::parse_from_rfc3339(v.trim()).ok())
        .map(|t| t.with_timezone(&Utc));
    let prefix = format!("{}:", store.name_any());
    let from_sessions = sessions
        .iter()
        .filter(|s| s.namespace() == store.namespace())
        .filter_map(|s| {
            let st = s.status.as_ref()?;
            if !st.transcript.as_deref()?.starts_with(&prefix) {
                return None;
            }
            st.completion_time
                .as_ref()
                .or(st.start_time.as_ref())
                .and_then(to_chrono)
        })
        .max();
    annotated.max(from_sessions)
}

/// One store's dream in the plan of a schedule.
enum Place {
    /// A Job exists for this run.
    Job(JobState),
    /// Not yet: its slot is ahead (or it joined after its slot passed).
    Pending,
    SkippedIdle,
    DelayedBudget,
    /// Due; may start now.
    Due(Due, Arc<MemoryStore>, String, DateTime<Utc>),
}

/// The plan of one schedule at one pass.
struct Plan {
    schedule: Arc<DreamSchedule>,
    status: DreamScheduleStatus,
    health: Health,
    due: Vec<(Due, Arc<MemoryStore>, String, DateTime<Utc>)>,
    counts: CycleCounts,
    wake: Option<DateTime<Utc>>,
    /// Runs whose finished Jobs may be removed: all but these.
    keep_runs: BTreeSet<String>,
    /// The dream-now token, when all its Jobs exist after this pass.
    token: Option<String>,
}

fn invalid(schedule: &Arc<DreamSchedule>, reason: &str, message: String) -> Plan {
    let mut status = schedule.status.clone().unwrap_or_default();
    status.observed_generation = schedule.metadata.generation;
    Plan {
        schedule: schedule.clone(),
        status,
        health: Health::stalled(reason, message),
        due: Vec::new(),
        counts: CycleCounts::default(),
        wake: None,
        keep_runs: BTreeSet::new(),
        token: None,
    }
}

/// Plans one schedule: where each selected store's dream of the current
/// cycle is, which are due, and when to look again.
fn plan(
    schedule: &Arc<DreamSchedule>,
    stores: &[Arc<MemoryStore>],
    jobs: &[Arc<Job>],
    pods: &[Arc<Pod>],
    sessions: &[Arc<AgentSession>],
    now: DateTime<Utc>,
) -> Plan {
    let spec = &schedule.spec;
    let ns = schedule.namespace().unwrap_or_default();
    let name = schedule.name_any();
    let cron = match Cron::parse(&spec.schedule) {
        Ok(c) => c,
        Err(why) => {
            return invalid(
                schedule,
                "InvalidSchedule",
                format!(
                    "spec.schedule {:?} is not a valid cron expression: {why}",
                    spec.schedule
                ),
            )
        }
    };
    if let Some(tz) = spec
        .time_zone
        .as_deref()
        .filter(|tz| !matches!(*tz, "UTC" | "Etc/UTC"))
    {
        return invalid(
            schedule,
            "UnsupportedTimeZone",
            format!("spec.timeZone {tz:?}: a storeSelector schedule runs in UTC; remove timeZone or set UTC"),
        );
    }
    let window = match scheduler::parse_window(spec.window.as_deref()) {
        Ok(w) => w,
        Err(why) => return invalid(schedule, "InvalidWindow", format!("spec.window: {why}")),
    };
    let selector = spec.store_selector.clone().unwrap_or_default();
    let mut selected: Vec<&Arc<MemoryStore>> = stores
        .iter()
        .filter(|s| s.namespace().as_deref() == Some(ns.as_str()))
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .filter(|s| scheduler::selector_matches(&selector, s.labels()))
        .collect();
    selected.sort_by_key(|s| s.name_any());

    // This schedule's fleet Jobs by (store, run).
    let mine: BTreeMap<(String, String), &Arc<Job>> = jobs
        .iter()
        .filter(|j| j.namespace().as_deref() == Some(ns.as_str()))
        .filter(|j| j.labels().get(SCHEDULE_LABEL) == Some(&name))
        .filter_map(|j| {
            let store = j.labels().get(STORE_LABEL)?.clone();
            let run = j.labels().get(RUN_LABEL)?.clone();
            Some(((store, run), j))
        })
        .collect();

    // Token budget: tokens of this schedule's dreams that ended in the last hour.
    let limit = spec.budget.as_ref().map(|b| b.tokens_per_hour);
    let usage: Vec<(DateTime<Utc>, u64)> = if limit.is_some() {
        let mut by_job: BTreeMap<(Option<String>, &str), Vec<&Arc<Pod>>> = BTreeMap::new();
        for p in pods {
            if let Some(job) = p.labels().get("job-name") {
                by_job
                    .entry((p.namespace(), job.as_str()))
                    .or_default()
                    .push(p);
            }
        }
        mine.values()
            .filter(|j| job_state(j) != JobState::Running)
            .filter_map(|j| {
                let ended = super::dreamschedule::finished_at(j).and_then(|t| to_chrono(&t))?;
                let job_name = j.name_any();
                let tokens = by_job
                    .get(&(j.namespace(), job_name.as_str()))?
                    .iter()
                    .filter_map(|p| pod_termination(p))
                    .find_map(|t| parse_result::<DreamResult>(&t.message))?
                    .llm_tokens();
                Some((ended, tokens))
            })
            .collect()
    } else {
        Vec::new()
    };
    let (used, budget_free_at) = scheduler::budget(&usage, limit, now);

    let created = schedule
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(to_chrono)
        .unwrap_or(now);
    let cycle = cron.latest_at_or_before(now);
    let next = cron.next_after(now);
    let mut wake = next;
    let mut counts = CycleCounts::default();
    let mut due = Vec::new();
    let mut keep_runs = BTreeSet::new();
    let mut next_run: Option<DateTime<Utc>> = None;
    let note = |t: DateTime<Utc>, slot: &mut Option<DateTime<Utc>>| {
        *slot = Some(slot.map_or(t, |s: DateTime<Utc>| s.min(t)));
    };

    if let Some(c) = cycle {
        let run = cycle_run_key(c.timestamp());
        keep_runs.insert(run.clone());
        let prev = cron.latest_at_or_before(c - chrono::Duration::minutes(1));
        if let Some(prev) = prev {
            keep_runs.insert(cycle_run_key(prev.timestamp()));
        }
        let prev_run = prev.map(|p| (p, cycle_run_key(p.timestamp())));
        let ew = scheduler::effective_window(window, c, next);
        let after_next = next.and_then(|n| cron.next_after(n));
        for store in &selected {
            let store_name = store.name_any();
            let slot = scheduler::slot(c, &ns, &store_name, ew);
            let store_created = store
                .metadata
                .creation_timestamp
                .as_ref()
                .and_then(to_chrono)
                .unwrap_or(now);
            let place = if let Some(job) = mine.get(&(store_name.clone(), run.clone())) {
                Place::Job(job_state(job))
            } else if slot < created || slot < store_created || slot > now || spec.suspend {
                // Slots before the schedule or the store existed are not
                // owed; a suspended schedule starts nothing.
                if slot > now && !spec.suspend {
                    note(slot, &mut wake);
                }
                Place::Pending
            } else if spec.skip_idle
                && scheduler::is_idle(
                    store
                        .status
                        .as_ref()
                        .and_then(|s| s.last_dream.as_ref())
                        .and_then(to_chrono),
                    last_activity(store, sessions),
                )
            {
                Place::SkippedIdle
            } else if let Some(free) = budget_free_at {
                note(free, &mut wake);
                Place::DelayedBudget
            } else {
                let job = fleet_job_name(&name, &store_name, &run);
                // A store whose dream of the previous cycle never started
                // (the limits held it until the tick) queues at its place
                // of that cycle, ahead of this cycle's: under overload the
                // stores with late slots would otherwise never dream.
                let queue_at = prev_run
                    .as_ref()
                    .filter(|(p, r)| {
                        let prev_slot = scheduler::slot(
                            *p,
                            &ns,
                            &store_name,
                            scheduler::effective_window(window, *p, Some(c)),
                        );
                        prev_slot >= created
                            && prev_slot >= store_created
                            && !mine.contains_key(&(store_name.clone(), r.clone()))
                    })
                    .map(|(p, _)| {
                        scheduler::slot(
                            *p,
                            &ns,
                            &store_name,
                            scheduler::effective_window(window, *p, Some(c)),
                        )
                    })
                    .unwrap_or(slot);
                Place::Due(
                    Due {
                        namespace: ns.clone(),
                        slot: queue_at,
                        id: job,
                    },
                    (*store).clone(),
                    run.clone(),
                    slot,
                )
            };
            match place {
                Place::Job(JobState::Running) => counts.running += 1,
                Place::Job(JobState::Succeeded) => counts.succeeded += 1,
                Place::Job(JobState::Failed) => counts.failed += 1,
                Place::Pending => {
                    counts.pending += 1;
                    let upcoming = if slot > now && slot >= created && slot >= store_created {
                        Some(slot)
                    } else {
                        next.map(|n| {
                            scheduler::slot(
                                n,
                                &ns,
                                &store_name,
                                scheduler::effective_window(window, n, after_next),
                            )
                        })
                    };
                    if let Some(u) = upcoming.filter(|_| !spec.suspend) {
                        note(u, &mut next_run);
                    }
                }
                Place::SkippedIdle => counts.skipped_idle += 1,
                Place::DelayedBudget => counts.delayed_budget += 1,
                Place::Due(d, s, r, at) => {
                    counts.queued += 1;
                    note(at, &mut next_run);
                    due.push((d, s, r, at));
                }
            }
        }
    }

    // dream-now: every selected store once more, idle or not, under the
    // same limits and budget.
    let token = new_dream_now_token(schedule);
    let mut token_done = None;
    let mut blocked_token = false;
    if let Some(tok) = &token {
        let run = dream_now_run_key(tok);
        keep_runs.insert(run.clone());
        let mut missing = 0;
        for store in &selected {
            let store_name = store.name_any();
            if mine.contains_key(&(store_name.clone(), run.clone())) {
                continue;
            }
            missing += 1;
            if budget_free_at.is_some() {
                continue;
            }
            due.push((
                Due {
                    namespace: ns.clone(),
                    slot: now,
                    id: fleet_job_name(&name, &store_name, &run),
                },
                (*store).clone(),
                run.clone(),
                now,
            ));
        }
        if missing == 0 {
            token_done = Some(tok.clone());
        }
        if missing > 0 && budget_free_at.is_some() {
            // Held back by the budget: the token is not done after this pass.
            blocked_token = true;
        }
    }
    if let Some(last) = schedule
        .status
        .as_ref()
        .and_then(|s| s.last_dream_now.as_deref())
    {
        keep_runs.insert(dream_now_run_key(last));
    }

    let mut status = schedule.status.clone().unwrap_or_default();
    status.observed_generation = schedule.metadata.generation;
    status.cron_job = None;
    status.stores = Some(selected.len() as u32);
    status.next_run = next_run.and_then(to_time);
    status.last_cycle = cycle.and_then(to_time).map(|start| CycleStatus {
        start,
        counts: counts.clone(),
    });
    status.last_schedule_time = cycle.and_then(to_time);
    status.tokens_last_hour = limit.map(|_| used);
    status.last_dream = mine
        .values()
        .filter(|j| job_state(j) == JobState::Succeeded)
        .filter_map(|j| j.status.as_ref()?.completion_time.clone())
        .max_by_key(|t| t.0)
        .or(status.last_dream);
    if let Some(tok) = &token_done {
        status.last_dream_now = Some(tok.clone());
    }
    let health = if spec.suspend {
        Health::ready(
            "Suspended",
            format!(
                "the schedule is suspended; {} stores selected; dream-now still works",
                selected.len()
            ),
        )
    } else if counts.delayed_budget > 0 {
        Health::ready(
            "DelayedBudget",
            format!(
                "{} dreams wait for the token budget ({used} of {} tokens used in the last hour)",
                counts.delayed_budget,
                limit.unwrap_or_default()
            ),
        )
    } else {
        Health::ready(
            "Scheduled",
            format!(
                "{} stores selected, each dreaming once per tick of {:?} at its place in a window of {}",
                selected.len(),
                spec.schedule,
                spec.window.as_deref().unwrap_or("0s")
            ),
        )
    };
    Plan {
        schedule: schedule.clone(),
        status,
        health,
        due,
        counts,
        wake,
        keep_runs,
        token: token.filter(|_| !blocked_token),
    }
}

/// Dream Jobs running per namespace: every unfinished `reverie.dev/role:
/// dream` Job (CronJob dreams too), plus the ones just created.
fn running(jobs: &[Arc<Job>], memory: &mut Memory) -> BTreeMap<String, u32> {
    let mut out: BTreeMap<String, u32> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for j in jobs {
        let key = (j.namespace().unwrap_or_default(), j.name_any());
        seen.insert(key.clone());
        if j.labels().get(ROLE_LABEL).map(String::as_str) == Some("dream")
            && job_state(j) == JobState::Running
        {
            *out.entry(key.0).or_default() += 1;
        }
    }
    memory
        .created
        .retain(|k, at| !seen.contains(k) && at.elapsed() < CREATED_GRACE);
    for (ns, _) in memory.created.keys() {
        *out.entry(ns.clone()).or_default() += 1;
    }
    out
}

/// One pass over every multi-store schedule; returns when to look again.
async fn pass(ctx: &Context, caches: &Caches, memory: &mut Memory) -> DateTime<Utc> {
    let now = Utc::now();
    let schedules: Vec<Arc<DreamSchedule>> = {
        let mut s: Vec<_> = caches
            .schedules
            .state()
            .into_iter()
            .filter(|s| s.spec.store_selector.is_some() && s.spec.store_ref.is_none())
            .filter(|s| s.metadata.deletion_timestamp.is_none())
            .collect();
        s.sort_by_key(|s| (s.namespace(), s.name_any()));
        s
    };
    let stores = caches.stores.state();
    let jobs = caches.jobs.state();
    let pods = caches.pods.state();
    let sessions = caches.sessions.state();
    let mut plans: Vec<Plan> = schedules
        .iter()
        .map(|s| plan(s, &stores, &jobs, &pods, &sessions, now))
        .collect();

    // Start what fits, fairly across namespaces, over all schedules at once.
    let all_due: Vec<(usize, usize)> = plans
        .iter()
        .enumerate()
        .flat_map(|(p, plan)| (0..plan.due.len()).map(move |d| (p, d)))
        .collect();
    let queue: Vec<Due> = all_due
        .iter()
        .map(|&(p, d)| plans[p].due[d].0.clone())
        .collect();
    let mut load = running(&jobs, memory);
    let limits = limits();
    let mut started: BTreeSet<(usize, usize)> = BTreeSet::new();
    let mut ensured: BTreeSet<String> = BTreeSet::new();
    for i in scheduler::pick(&queue, &load, limits) {
        let (p, d) = all_due[i];
        let plan = &plans[p];
        let (due, store, run, slot) = &plan.due[d];
        if ensured.insert(due.namespace.clone()) {
            if let Err(e) = workers::ensure(
                &ctx.client,
                &due.namespace,
                &ctx.config.worker_service_account,
            )
            .await
            {
                tracing::warn!(namespace = due.namespace, error = %e, "cannot ensure the worker identity");
                continue;
            }
        }
        let slot_text = slot.to_rfc3339_opts(SecondsFormat::Millis, true);
        let job = match fleet_dream_job(
            &plan.schedule,
            store,
            &ctx.config.image,
            &ctx.config.worker_service_account,
            run,
            &slot_text,
        ) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(job = due.id, error = %e, "cannot build the dream Job");
                continue;
            }
        };
        let api: Api<Job> = Api::namespaced(ctx.client.clone(), &due.namespace);
        match api.create(&PostParams::default(), &job).await {
            Ok(_) => {
                tracing::info!(
                    namespace = due.namespace,
                    job = due.id,
                    schedule = plan.schedule.name_any(),
                    slot = slot_text,
                    "dream started"
                );
                memory
                    .created
                    .insert((due.namespace.clone(), due.id.clone()), Instant::now());
                *load.entry(due.namespace.clone()).or_default() += 1;
                started.insert((p, d));
            }
            // Created by an earlier pass whose Job the cache has not shown yet.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                memory
                    .created
                    .insert((due.namespace.clone(), due.id.clone()), Instant::now());
            }
            Err(e) => {
                tracing::warn!(namespace = due.namespace, job = due.id, error = %e, "cannot create the dream Job");
            }
        }
    }

    let mut wake = now + chrono::Duration::from_std(MAX_SLEEP).unwrap_or_default();
    for (p, plan) in plans.iter_mut().enumerate() {
        let mut started_here = 0;
        for d in 0..plan.due.len() {
            if started.contains(&(p, d)) {
                started_here += 1;
            }
        }
        // Dream-now runs are not part of the cycle's counts.
        let cycle_started = plan
            .due
            .iter()
            .enumerate()
            .filter(|(d, (_, _, run, _))| started.contains(&(p, *d)) && run.starts_with('c'))
            .count() as u32;
        plan.counts.queued -= cycle_started;
        plan.counts.running += cycle_started;
        if let Some(c) = plan.status.last_cycle.as_mut() {
            c.counts = plan.counts.clone();
        }
        let all_now_started = plan.token.is_some()
            && plan
                .due
                .iter()
                .enumerate()
                .filter(|(_, (_, _, run, _))| !run.starts_with('c'))
                .all(|(d, _)| started.contains(&(p, d)));
        if all_now_started {
            plan.status.last_dream_now = plan.token.clone();
        }
        if plan.counts.queued > 0 && started_here < plan.due.len() {
            plan.health = Health::ready(
                "Queued",
                format!(
                    "{} due dreams wait for a place (at most {} dreams at once in the cluster, {} per namespace)",
                    plan.counts.queued,
                    limits.cluster.map_or("any".to_string(), |n| n.to_string()),
                    limits.per_namespace.map_or("any".to_string(), |n| n.to_string()),
                ),
            );
        }
        if let Some(w) = plan.wake {
            wake = wake.min(w);
        }
        if let Some(w) = write(ctx, plan, memory).await {
            wake = wake.min(w);
        }
        cleanup(ctx, plan, &jobs).await;
    }
    wake
}

/// Writes a schedule's status when it changed, at most every
/// [`STATUS_INTERVAL`] unless the condition's reason changed; returns when
/// to come back for a deferred write.
async fn write(ctx: &Context, plan: &mut Plan, memory: &mut Memory) -> Option<DateTime<Utc>> {
    let schedule = &plan.schedule;
    let previous = schedule.status.clone().unwrap_or_default();
    plan.status.conditions = conditions(
        &plan.health,
        schedule.metadata.generation,
        &previous.conditions,
        &now(),
    );
    if schedule.status.as_ref() == Some(&plan.status) {
        return None;
    }
    let reason = |c: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]| {
        c.first().map(|c| c.reason.clone())
    };
    let key = (
        schedule.namespace().unwrap_or_default(),
        schedule.name_any(),
    );
    let urgent = reason(&previous.conditions) != reason(&plan.status.conditions)
        || previous.last_dream_now != plan.status.last_dream_now
        || previous.stores != plan.status.stores;
    if let Some(at) = memory.written.get(&key) {
        let since = at.elapsed();
        if !urgent && since < STATUS_INTERVAL {
            let left = STATUS_INTERVAL - since;
            return Some(Utc::now() + chrono::Duration::from_std(left).unwrap_or_default());
        }
    }
    let api: Api<DreamSchedule> = Api::namespaced(ctx.client.clone(), &key.0);
    match write_status(
        &api,
        schedule.as_ref(),
        schedule.status.as_ref(),
        &plan.status,
    )
    .await
    {
        Ok(_) => {
            memory.written.insert(key, Instant::now());
            None
        }
        Err(e) => {
            tracing::warn!(namespace = key.0, name = key.1, error = %e, "cannot write the schedule status");
            Some(Utc::now() + chrono::Duration::seconds(5))
        }
    }
}

/// Removes the finished Jobs of runs the schedule no longer reports (older
/// than the previous cycle, or of an earlier dream-now token).
async fn cleanup(ctx: &Context, plan: &Plan, jobs: &[Arc<Job>]) {
    let ns = plan.schedule.namespace().unwrap_or_default();
    let name = plan.schedule.name_any();
    let stale = jobs.iter().filter(|j| {
        j.namespace().as_deref() == Some(ns.as_str())
            && j.labels().get(SCHEDULE_LABEL) == Some(&name)
            && j.labels()
                .get(RUN_LABEL)
                .is_some_and(|r| !plan.keep_runs.contains(r))
            && job_state(j) != JobState::Running
            && j.metadata.deletion_timestamp.is_none()
    });
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    for job in stale {
        match api.delete(&job.name_any(), &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                tracing::warn!(namespace = ns, job = job.name_any(), error = %e, "cannot remove an old dream Job")
            }
        }
    }
}

/// Feeds a reflector and wakes the loop on every change.
fn drive<K, S>(stream: S, notify: Arc<Notify>) -> tokio::task::JoinHandle<()>
where
    K: Send + 'static,
    S: Stream<Item = Result<K, watcher::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            if let Err(e) = ev {
                tracing::debug!(error = %e, "fleet watch error (retried)");
            }
            notify.notify_one();
        }
    })
}

fn api<K>(client: &kube::Client, ns: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

macro_rules! cache {
    ($client:expr, $ns:expr, $ty:ty, $cfg:expr, $notify:expr) => {{
        let (reader, writer) = reflector::store::<$ty>();
        let stream = reflector(writer, watcher(api::<$ty>($client, $ns), $cfg))
            .default_backoff()
            .touched_objects();
        drive(stream, $notify.clone());
        reader
    }};
}

use kube::runtime::reflector::reflector;

/// Runs the fleet scheduler until the process stops.
pub async fn run(ctx: Arc<Context>) {
    let client = &ctx.client;
    let ns = ctx.config.namespace.as_deref();
    let notify = Arc::new(Notify::new());
    let caches = Caches {
        schedules: cache!(
            client,
            ns,
            DreamSchedule,
            watcher::Config::default(),
            notify
        ),
        stores: cache!(client, ns, MemoryStore, watcher::Config::default(), notify),
        jobs: cache!(
            client,
            ns,
            Job,
            watcher::Config::default().labels(&format!("{ROLE_LABEL}=dream")),
            notify
        ),
        pods: cache!(
            client,
            ns,
            Pod,
            watcher::Config::default().labels(RUN_LABEL),
            notify
        ),
        sessions: cache!(client, ns, AgentSession, watcher::Config::default(), notify),
    };
    for (what, ready) in [
        ("schedules", caches.schedules.wait_until_ready().await),
        ("stores", caches.stores.wait_until_ready().await),
        ("jobs", caches.jobs.wait_until_ready().await),
        ("pods", caches.pods.wait_until_ready().await),
        ("sessions", caches.sessions.wait_until_ready().await),
    ] {
        if let Err(e) = ready {
            tracing::error!(cache = what, error = %e, "the fleet scheduler's cache stopped; not scheduling");
            return;
        }
    }
    tracing::info!(limits = ?limits(), "fleet scheduler running");
    let mut memory = Memory::default();
    loop {
        let wake = pass(&ctx, &caches, &mut memory).await;
        let sleep = (wake - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .clamp(Duration::from_millis(50), MAX_SLEEP);
        tokio::select! {
            _ = notify.notified() => {
                // Let a burst of events (a Job and its pod) land together.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(name: &str, labels: &[(&str, &str)]) -> Arc<MemoryStore> {
        let mut s: MemoryStore = serde_json::from_value(serde_json::json!({
            "apiVersion": "reverie.dev/v1alpha1", "kind": "MemoryStore",
            "metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}"),
                         "creationTimestamp": "2026-11-01T00:00:00Z"},
            "spec": {}
        }))
        .expect("store");
        s.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        Arc::new(s)
    }

    fn schedule(extra: serde_json::Value) -> Arc<DreamSchedule> {
        let mut spec = serde_json::json!({
            "storeSelector": {"matchLabels": {"tier": "a"}},
            "schedule": "0 * * * *",
            "window": "30m"
        });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "reverie.dev/v1alpha1", "kind": "DreamSchedule",
                "metadata": {"name": "fleet", "namespace": "ns", "uid": "u-fleet",
                             "creationTimestamp": "2026-11-01T00:00:00Z"},
                "spec": spec
            }))
            .expect("schedule"),
        )
    }

    use crate::controller::scheduler::utc as t;

    /// A finished (Complete) fleet Job of store s0 of schedule `fleet`.
    fn done_job(run: &str, completed: &str) -> Job {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": fleet_job_name("fleet", "s0", run), "namespace": "ns",
                         "labels": {SCHEDULE_LABEL: "fleet", STORE_LABEL: "s0", RUN_LABEL: run, ROLE_LABEL: "dream"}},
            "status": {"conditions": [{"type": "Complete", "status": "True"}], "completionTime": completed}
        }))
        .expect("job")
    }

    #[test]
    fn plan_places_selected_stores_and_skips_idle_ones() {
        let stores: Vec<Arc<MemoryStore>> = (0..20)
            .map(|i| store(&format!("s{i}"), &[("tier", "a")]))
            .chain([store("other", &[("tier", "b")])])
            .collect();
        let now = t("2026-11-30T10:59:00Z");
        let p = plan(
            &schedule(serde_json::json!({})),
            &stores,
            &[],
            &[],
            &[],
            now,
        );
        assert_eq!(p.status.stores, Some(20));
        // At 10:59 every slot of the 10:00 cycle (10:00–10:30) has passed.
        assert_eq!(p.counts.queued, 20);
        assert_eq!(p.due.len(), 20);
        let run = cycle_run_key(t("2026-11-30T10:00:00Z").timestamp());
        assert!(p.due.iter().all(|(d, _, r, _)| *r == run && d.slot <= now));
        assert_eq!(p.wake, Some(t("2026-11-30T11:00:00Z")));

        // Half-way through the window some are still pending.
        let mid = t("2026-11-30T10:15:00Z");
        let p = plan(
            &schedule(serde_json::json!({})),
            &stores,
            &[],
            &[],
            &[],
            mid,
        );
        assert_eq!(p.counts.queued + p.counts.pending, 20);
        assert!(p.counts.pending > 0 && p.counts.queued > 0);
        let first_pending = p.wake.expect("wake");
        assert!(first_pending > mid && first_pending < t("2026-11-30T10:30:00Z"));

        // A store that dreamt with no session since is skipped.
        let mut idle = (*store("s0", &[("tier", "a")])).clone();
        idle.status = Some(crate::api::MemoryStoreStatus {
            last_dream: to_time(t("2026-11-30T09:10:00Z")),
            ..Default::default()
        });
        let mut busy = idle.clone();
        busy.metadata.name = Some("s1".to_string());
        busy.metadata.annotations = Some(BTreeMap::from([(
            SESSIONS_UPDATED_ANNOTATION.to_string(),
            "2026-11-30T09:30:00Z".to_string(),
        )]));
        let p = plan(
            &schedule(serde_json::json!({})),
            &[Arc::new(idle), Arc::new(busy)],
            &[],
            &[],
            &[],
            now,
        );
        assert_eq!((p.counts.skipped_idle, p.counts.queued), (1, 1));
        // With dream-now the idle store dreams too.
        let mut forced = (*schedule(serde_json::json!({"skipIdle": false}))).clone();
        forced.metadata.annotations = Some(BTreeMap::from([(
            super::super::dreamschedule::DREAM_NOW_ANNOTATION.to_string(),
            "t1".to_string(),
        )]));
        let p = plan(&Arc::new(forced), &stores[..2], &[], &[], &[], now);
        assert_eq!(p.due.len(), 4, "2 of the cycle and 2 of dream-now");
    }

    #[test]
    fn plan_delays_dreams_over_the_token_budget() {
        let stores = vec![store("s0", &[("tier", "a")]), store("s1", &[("tier", "a")])];
        let now = t("2026-11-30T10:59:00Z");
        let run = cycle_run_key(t("2026-11-30T10:00:00Z").timestamp());
        let job_name = fleet_job_name("fleet", "s0", &run);
        let job = done_job(&run, "2026-11-30T10:20:00Z");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"job-name": job_name}},
            "status": {"containerStatuses": [{"name": "dream", "image": "i", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": 0,
                "message": "{\"patches\":[],\"ops\":0,\"revision\":0,\"entries\":1,\"bytes\":9,\"sessions\":3,\"llm\":{\"provider\":\"openai\",\"inputTokens\":1000,\"outputTokens\":500}}"}}}]}
        }))
        .expect("pod");
        let llm = serde_json::json!({"llm": {"provider": "openai", "name": "m", "apiKeySecretRef": {"name": "k", "key": "k"}}});
        let mut over = llm.clone();
        over["budget"] = serde_json::json!({"tokensPerHour": 1000});
        let p = plan(
            &schedule(over),
            &stores,
            &[Arc::new(job.clone())],
            &[Arc::new(pod.clone())],
            &[],
            now,
        );
        assert_eq!((p.counts.succeeded, p.counts.delayed_budget), (1, 1));
        assert!(p.due.is_empty());
        assert_eq!(p.status.tokens_last_hour, Some(1500));
        // The next tick (11:00) comes before the budget frees up (11:20).
        assert_eq!(p.wake, Some(t("2026-11-30T11:00:00Z")));
        assert!(matches!(p.health, Health::Ready { ref reason, .. } if reason == "DelayedBudget"));
        let mut under = llm;
        under["budget"] = serde_json::json!({"tokensPerHour": 2000});
        let p = plan(
            &schedule(under),
            &stores,
            &[Arc::new(job)],
            &[Arc::new(pod)],
            &[],
            now,
        );
        assert_eq!((p.counts.delayed_budget, p.due.len()), (0, 1));
    }

    #[test]
    fn a_store_starved_last_cycle_queues_first() {
        let stores = vec![store("s0", &[("tier", "a")]), store("s1", &[("tier", "a")])];
        let now = t("2026-11-30T10:59:00Z");
        let prev = cycle_run_key(t("2026-11-30T09:00:00Z").timestamp());
        // s0 dreamt in the 09:00 cycle, s1 never started.
        let job = done_job(&prev, "2026-11-30T09:20:00Z");
        let p = plan(
            &schedule(serde_json::json!({})),
            &stores,
            &[Arc::new(job)],
            &[],
            &[],
            now,
        );
        let by_store: BTreeMap<String, (DateTime<Utc>, DateTime<Utc>)> = p
            .due
            .iter()
            .map(|(d, s, _, at)| (s.name_any(), (d.slot, *at)))
            .collect();
        let (s0_queue, s0_slot) = by_store["s0"];
        let (s1_queue, s1_slot) = by_store["s1"];
        assert_eq!(s0_queue, s0_slot, "s0 queues at its own slot");
        assert!(
            s1_queue < t("2026-11-30T10:00:00Z"),
            "s1 queues at its 09:00 place"
        );
        assert!(
            s1_slot >= t("2026-11-30T10:00:00Z"),
            "its Job still records this cycle's slot"
        );
        let order = scheduler::pick(
            &p.due.iter().map(|(d, ..)| d.clone()).collect::<Vec<_>>(),
            &BTreeMap::new(),
            Limits {
                cluster: Some(1),
                per_namespace: None,
            },
        );
        assert_eq!(p.due[order[0]].1.name_any(), "s1");
    }

    #[test]
    fn plan_counts_existing_jobs_and_refuses_time_zones() {
        let stores = vec![store("s0", &[("tier", "a")])];
        let now = t("2026-11-30T10:59:00Z");
        let run = cycle_run_key(t("2026-11-30T10:00:00Z").timestamp());
        let job = done_job(&run, "2026-11-30T10:20:00Z");
        let p = plan(
            &schedule(serde_json::json!({})),
            &stores,
            &[Arc::new(job)],
            &[],
            &[],
            now,
        );
        assert_eq!(p.counts.succeeded, 1);
        assert!(p.due.is_empty());
        assert!(p.keep_runs.contains(&run));
        let p = plan(
            &schedule(serde_json::json!({"timeZone": "Europe/Berlin"})),
            &stores,
            &[],
            &[],
            &[],
            now,
        );
        assert!(
            matches!(p.health, Health::Stalled { ref reason, .. } if reason == "UnsupportedTimeZone")
        );
        // A schedule created after the slots of its first cycle owes none of them.
        let mut late = (*schedule(serde_json::json!({}))).clone();
        late.metadata.creation_timestamp = to_time(t("2026-11-30T10:58:00Z"));
        let p = plan(&Arc::new(late), &stores, &[], &[], &[], now);
        assert_eq!((p.counts.pending, p.due.len()), (1, 0));
    }
}
