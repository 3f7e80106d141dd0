//! The DreamSchedule controller: owns the CronJob `<schedule>-dream` that
//! runs `reverie dream --publish` over the store's volume, starts a Job from
//! it for every new `reverie.dev/dream-now` token, and reports the last dream.

use std::sync::Arc;
use std::time::Duration;

use super::agent::watched_api;
use super::trim;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::ResourceExt;

use super::jobs::{
    cron_job_name, dream_cron_job, dream_now_job_name, job_from_cron, job_state, parse_result,
    pod_termination, DreamResult, JobState, SCHEDULE_LABEL,
};
use super::status::{conditions, Health};
use super::writes::{apply_if_changed, event, now, write_status};
use super::{workers, Context, Error};
use crate::api::{DreamSchedule, MemoryStore};

/// The annotation that asks for a dream now; its value is any token (an
/// RFC 3339 time, say): each new token starts one dream.
pub const DREAM_NOW_ANNOTATION: &str = "reverie.dev/dream-now";

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const MACROS: [&str; 7] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

/// Checks a cron expression the way the CronJob controller reads it: a
/// macro, or 5 fields (minute, hour, day of month, month, day of week) of
/// `*`, `?`, numbers or names, ranges `a-b`, steps `/n` and lists `a,b`.
/// The error names the field and what is wrong with it.
pub fn validate_cron(expr: &str) -> Result<(), String> {
    let expr = expr.trim();
    if expr.starts_with('@') {
        return if MACROS.contains(&expr) {
            Ok(())
        } else {
            Err(format!(
                "unknown macro {expr:?}; use one of {}",
                MACROS.join(", ")
            ))
        };
    }
    if expr.starts_with("TZ=") || expr.starts_with("CRON_TZ=") {
        return Err("a time zone inside the schedule is not allowed; use spec.timeZone".into());
    }
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
            fields.len()
        ));
    }
    let specs: [(&str, u32, u32, &[&str], u32); 5] = [
        ("minute", 0, 59, &[], 0),
        ("hour", 0, 23, &[], 0),
        ("day of month", 1, 31, &[], 0),
        ("month", 1, 12, &MONTHS, 1),
        ("day of week", 0, 7, &DAYS, 0),
    ];
    for (field, (what, min, max, names, base)) in fields.iter().zip(specs) {
        validate_field(field, min, max, names, base)
            .map_err(|e| format!("{what} field {field:?}: {e}"))?;
    }
    Ok(())
}

fn validate_field(
    field: &str,
    min: u32,
    max: u32,
    names: &[&str],
    base: u32,
) -> Result<(), String> {
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32 + base);
        }
        let v: u32 = s.parse().map_err(|_| {
            format!(
                "{s:?} is not a number{}",
                if names.is_empty() { "" } else { " or a name" }
            )
        })?;
        if v < min || v > max {
            return Err(format!("{v} is outside {min}-{max}"));
        }
        Ok(v)
    };
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        if let Some(s) = step {
            let n: u32 = s
                .parse()
                .map_err(|_| format!("step {s:?} is not a number"))?;
            if n == 0 {
                return Err("a step of 0 never fires".to_string());
            }
        }
        match range {
            "*" | "?" => {}
            "" => return Err("empty list item".to_string()),
            r => match r.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (value(a)?, value(b)?);
                    if a > b {
                        return Err(format!("range {a}-{b} runs backwards"));
                    }
                }
                None => {
                    value(r)?;
                }
            },
        }
    }
    Ok(())
}

/// The dream-now token to act on: the annotation's value when it differs
/// from the last one acted on.
pub fn new_dream_now_token(schedule: &DreamSchedule) -> Option<String> {
    let token = schedule
        .annotations()
        .get(DREAM_NOW_ANNOTATION)?
        .trim()
        .to_string();
    let last = schedule
        .status
        .as_ref()
        .and_then(|s| s.last_dream_now.as_deref());
    (!token.is_empty() && last != Some(token.as_str())).then_some(token)
}

/// When a Job finished: its completion time, or when it was marked failed.
pub fn finished_at(job: &Job) -> Option<Time> {
    let status = job.status.as_ref()?;
    status.completion_time.clone().or_else(|| {
        status
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "Failed" && c.status == "True")
            .and_then(|c| c.last_transition_time.clone())
    })
}

/// Finished jobs, newest first (ties by name, so the order is stable).
pub fn newest_first(mut jobs: Vec<Job>) -> Vec<Job> {
    jobs.retain(|j| job_state(j) != JobState::Running);
    jobs.sort_by(|a, b| {
        let key = |j: &Job| finished_at(j).map(|t| t.0);
        key(b)
            .cmp(&key(a))
            .then_with(|| b.name_any().cmp(&a.name_any()))
    });
    jobs
}

/// What the schedule's dream jobs say: the last successful dream and its
/// result, and the newest job when it failed (name, message).
struct Dreams {
    last_success: Option<(Job, DreamResult)>,
    newest_failure: Option<(String, String)>,
}

async fn dreams(ctx: &Context, ns: &str, schedule: &str) -> Result<Dreams, Error> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let finished = newest_first(
        jobs.list(&ListParams::default().labels(&format!("{SCHEDULE_LABEL}={schedule}")))
            .await?
            .items,
    );
    let mut out = Dreams {
        last_success: None,
        newest_failure: None,
    };
    for (i, job) in finished.into_iter().enumerate() {
        let terms: Vec<_> = pods
            .list(&ListParams::default().labels(&format!("job-name={}", job.name_any())))
            .await?
            .items
            .iter()
            .filter_map(pod_termination)
            .collect();
        if job_state(&job) == JobState::Failed {
            if i == 0 {
                let message = terms
                    .iter()
                    .map(|t| t.message.trim().to_string())
                    .find(|m| !m.is_empty())
                    .unwrap_or_else(|| "no message from the dream pod".to_string());
                out.newest_failure = Some((job.name_any(), message));
            }
            continue;
        }
        if let Some(result) = terms
            .iter()
            .find_map(|t| parse_result::<DreamResult>(&t.message))
        {
            out.last_success = Some((job, result));
            break;
        }
    }
    Ok(out)
}

/// The tail of a message, at most `max` bytes, cut on a character boundary.
fn tail(message: &str, max: usize) -> &str {
    let mut start = message.len().saturating_sub(max);
    while !message.is_char_boundary(start) {
        start += 1;
    }
    &message[start..]
}

async fn reconcile(schedule: Arc<DreamSchedule>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = schedule
        .namespace()
        .ok_or_else(|| Error::Invalid("DreamSchedule without namespace".to_string()))?;
    let name = schedule.name_any();
    let client = &ctx.client;
    let api: Api<DreamSchedule> = Api::namespaced(client.clone(), &ns);
    let previous = schedule.status.clone().unwrap_or_default();
    let mut status = previous.clone();
    status.observed_generation = schedule.metadata.generation;

    // A multi-store schedule (`storeSelector`) is driven by the fleet
    // scheduler, not by a CronJob.
    let Some(store_ref) = &schedule.spec.store_ref else {
        return Ok(Action::await_change());
    };
    let store_name = &store_ref.name;
    let store = Api::<MemoryStore>::namespaced(client.clone(), &ns)
        .get_opt(store_name)
        .await?;
    let health = match (store, validate_cron(&schedule.spec.schedule)) {
        (_, Err(why)) => Health::stalled(
            "InvalidSchedule",
            format!("spec.schedule {:?} is not a valid cron expression: {why}", schedule.spec.schedule),
        ),
        (None, Ok(())) => Health::stalled(
            "StoreNotFound",
            format!("spec.storeRef names MemoryStore {store_name}, which does not exist in namespace {ns}"),
        ),
        (Some(store), Ok(())) => {
            workers::ensure(client, &ns, &ctx.config.worker_service_account).await?;
            let cron_api: Api<CronJob> = Api::namespaced(client.clone(), &ns);
            let desired = dream_cron_job(
                &schedule,
                &store,
                &ctx.config.image,
                &ctx.config.worker_service_account,
            )?;
            match apply_if_changed(&cron_api, desired).await {
                Ok(wrote) => {
                    if wrote {
                        tracing::info!(namespace = ns, name, "dream CronJob applied");
                    }
                    status.cron_job = Some(cron_job_name(&name));
                    if let Some(token) = new_dream_now_token(&schedule) {
                        dream_now(&ctx, &ns, &schedule, &token).await?;
                        status.last_dream_now = Some(token);
                    }
                    let cron = cron_api.get_opt(&cron_job_name(&name)).await?;
                    status.last_schedule_time = cron
                        .and_then(|c| c.status)
                        .and_then(|s| s.last_schedule_time)
                        .or(status.last_schedule_time);
                    let dreams = dreams(&ctx, &ns, &name).await?;
                    if let Some((job, result)) = dreams.last_success {
                        status.last_dream = job
                            .status
                            .and_then(|s| s.completion_time)
                            .or(status.last_dream);
                        status.last_patch = result.patches.last().cloned().or(status.last_patch);
                    }
                    if let Some((job, message)) = dreams.newest_failure {
                        // The schedule itself is sound (the next run may
                        // succeed), so Ready stays True; the reason and an
                        // event say what the last dream hit.
                        Health::ready(
                            "LastDreamFailed",
                            format!("the last dream, Job {job}, failed: {}", tail(&message, 512)),
                        )
                    } else if schedule.spec.suspend {
                        Health::ready("Suspended", "the schedule is suspended; dream-now still works")
                    } else {
                        Health::ready("Scheduled", format!("CronJob {} runs {:?}", cron_job_name(&name), schedule.spec.schedule))
                    }
                }
                Err(Error::Kube(kube::Error::Api(e))) if e.code == 422 => Health::stalled(
                    "CronJobRejected",
                    format!("the apiserver refused the CronJob (check spec.timeZone and spec.schedule): {}", e.message),
                ),
                Err(e) => return Err(e),
            }
        }
    };
    status.conditions = conditions(
        &health,
        schedule.metadata.generation,
        &previous.conditions,
        &now(),
    );
    let reason = |c: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]| {
        c.first().map(|c| c.reason.clone())
    };
    let changed = reason(&previous.conditions) != reason(&status.conditions);
    write_status(&api, &schedule, schedule.status.as_ref(), &status).await?;
    if changed {
        let (warning, reason, msg) = match &health {
            Health::Ready { reason, message } => (reason == "LastDreamFailed", reason, message),
            Health::Reconciling { reason, message } | Health::Stalled { reason, message } => {
                (true, reason, message)
            }
        };
        tracing::info!(namespace = ns, name, reason, "schedule health changed");
        event(client, schedule.as_ref(), warning, reason, msg.clone()).await;
    }
    Ok(match health {
        Health::Ready { .. } => Action::requeue(Duration::from_secs(300)),
        // The store may appear; a person fixes a bad schedule by editing it
        // (which triggers a reconcile anyway).
        _ => Action::requeue(Duration::from_secs(30)),
    })
}

/// Starts the Job for a dream-now token (AlreadyExists means a previous
/// run of the controller started it: fine).
async fn dream_now(
    ctx: &Context,
    ns: &str,
    schedule: &DreamSchedule,
    token: &str,
) -> Result<(), Error> {
    let name = schedule.name_any();
    let cron = Api::<CronJob>::namespaced(ctx.client.clone(), ns)
        .get(&cron_job_name(&name))
        .await?;
    let job_name = dream_now_job_name(&name, token);
    let job = job_from_cron(&cron, &job_name, token)?;
    match Api::<Job>::namespaced(ctx.client.clone(), ns)
        .create(&PostParams::default(), &job)
        .await
    {
        Ok(_) => {
            crate::memory::apply::fault_point("dream-job-created");
            tracing::info!(
                namespace = ns,
                name,
                job = job_name,
                "dream-now job created"
            );
            event(
                &ctx.client,
                schedule,
                false,
                "DreamNow",
                format!("started Job {job_name} for dream-now token {token:?}"),
            )
            .await;
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn error_policy(schedule: Arc<DreamSchedule>, error: &Error, _ctx: Arc<Context>) -> Action {
    super::retry_after_error(schedule.as_ref(), error, super::DREAM_LOOP_RETRY)
}

/// Runs the DreamSchedule controller until the stream ends.
pub async fn run(ctx: Arc<Context>) {
    let schedules = watched_api::<DreamSchedule>(&ctx);
    let crons = watched_api::<PartialObjectMeta<CronJob>>(&ctx);
    let jobs = watched_api::<PartialObjectMeta<Job>>(&ctx);
    let stores = watched_api::<PartialObjectMeta<MemoryStore>>(&ctx);
    // Trimmed streams (see `trim`): CronJobs, Jobs and stores as metadata only.
    let (reader, schedules) = trim::reflected(schedules, watcher::Config::default());
    let crons = trim::metadata_trigger(crons, watcher::Config::default().labels(SCHEDULE_LABEL));
    let jobs = trim::metadata_trigger(jobs, watcher::Config::default().labels(SCHEDULE_LABEL));
    let stores = trim::metadata_trigger(stores, watcher::Config::default());
    Controller::for_stream(schedules, reader.clone())
        .with_config(trim::controller_config())
        .owns_stream(crons)
        .watches_stream(jobs, |job: PartialObjectMeta<Job>| {
            let ns = job.namespace();
            job.labels()
                .get(SCHEDULE_LABEL)
                .cloned()
                .and_then(|s| ns.map(|ns| ObjectRef::new(&s).within(&ns)))
        })
        // A store that appears (or changes its limits) changes the schedules on it.
        .watches_stream(stores, move |store: PartialObjectMeta<MemoryStore>| {
            let ns = store.namespace();
            let name = store.name_any();
            reader
                .state()
                .into_iter()
                .filter(|s| {
                    s.namespace() == ns && s.spec.store_ref.as_ref().is_some_and(|r| r.name == name)
                })
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        })
        .run(
            super::metrics::observe("dreamschedule", reconcile),
            error_policy,
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DreamScheduleStatus;

    #[test]
    fn valid_crons_pass() {
        for c in [
            "0 3 * * *",
            "*/15 * * * *",
            "0 0 1,15 * MON-FRI",
            "30 2 ? JAN-MAR 0",
            "@daily",
            "5 4 * * 7",
        ] {
            assert_eq!(validate_cron(c), Ok(()), "{c}");
        }
    }

    #[test]
    fn invalid_crons_say_what_is_wrong() {
        let e = validate_cron("61 * * * *").expect_err("minute");
        assert!(
            e.contains("minute") && e.contains("61 is outside 0-59"),
            "{e}"
        );
        let e = validate_cron("0 3 * *").expect_err("fields");
        assert!(e.contains("expected 5 fields"), "{e}");
        let e = validate_cron("0 25 * * *").expect_err("hour");
        assert!(e.contains("hour"), "{e}");
        assert!(validate_cron("*/0 * * * *").is_err());
        assert!(validate_cron("0 3 * FOO *").is_err());
        assert!(validate_cron("0 3 10-2 * *").is_err());
        assert!(validate_cron("@sometimes").is_err());
        assert!(validate_cron("TZ=UTC 0 3 * * *").is_err());
        assert!(validate_cron("a b c d e").is_err());
    }

    fn job(name: &str, state: &str, at: &str) -> Job {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": match state {
                "Complete" => serde_json::json!({"completionTime": at, "conditions": [{"type": "Complete", "status": "True"}]}),
                "Failed" => serde_json::json!({"conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": at}]}),
                _ => serde_json::json!({}),
            }
        }))
        .expect("job")
    }

    #[test]
    fn finished_jobs_newest_first() {
        let order = newest_first(vec![
            job("a", "Complete", "2026-11-30T10:00:00Z"),
            job("running", "", ""),
            job("b", "Failed", "2026-11-30T11:00:00Z"),
            job("c", "Complete", "2026-11-30T09:00:00Z"),
        ]);
        let names: Vec<String> = order.iter().map(|j| j.name_any()).collect();
        assert_eq!(names, ["b", "a", "c"]);
        assert_eq!(tail("héllo", 4), "llo");
    }

    #[test]
    fn dream_now_token_fires_once() {
        let mut s = DreamSchedule::new(
            "nightly",
            serde_json::from_value(serde_json::json!({
                "storeRef": {"name": "team"}, "schedule": "0 3 * * *"
            }))
            .expect("spec"),
        );
        assert_eq!(new_dream_now_token(&s), None);
        s.metadata.annotations = Some(
            [(DREAM_NOW_ANNOTATION.to_string(), "t1".to_string())]
                .into_iter()
                .collect(),
        );
        assert_eq!(new_dream_now_token(&s).as_deref(), Some("t1"));
        s.status = Some(DreamScheduleStatus {
            last_dream_now: Some("t1".to_string()),
            ..Default::default()
        });
        assert_eq!(new_dream_now_token(&s), None);
    }
}
