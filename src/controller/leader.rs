//! Leader election on a `coordination.k8s.io/v1` Lease: with several
//! replicas, only the holder runs the controllers (and so writes status).
//!
//! Safety comes from optimistic concurrency: every take-over or renewal is a
//! `replace` carrying the resourceVersion last read, so two candidates racing
//! for an expired lease cannot both win. A lease is deemed expired when its
//! holder and renew time have not changed for `lease_duration` as measured on
//! this process's monotonic clock (as client-go does), so clock skew between
//! nodes does not matter. A holder that cannot renew within the duration
//! stops: the caller exits and the Deployment restarts it, which is simpler
//! and safer than trying to stop controllers half-way.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::time::Instant;

use super::Error;

/// Which Lease to hold, as whom, and how fast.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// The Lease's name.
    pub name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// This candidate's identity (the pod name, usually).
    pub identity: String,
    /// How long a lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews (well below `lease_duration`).
    pub renew_every: Duration,
}

impl LeaseConfig {
    /// A config with the usual timings: 15 s lease, renewed every 5 s.
    pub fn new(name: &str, namespace: &str, identity: &str) -> Self {
        LeaseConfig {
            name: name.to_string(),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }
}

/// Parses a duration flag: whole seconds, with or without an `s` suffix
/// (`15`, `15s`); at least one second.
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let digits = s.trim().strip_suffix('s').unwrap_or(s.trim());
    match digits.parse::<u64>() {
        Ok(0) => Err(format!("{s:?}: must be at least 1s")),
        Ok(n) => Ok(Duration::from_secs(n)),
        Err(_) => Err(format!("{s:?} is not a number of seconds like 15s")),
    }
}

impl LeaseConfig {
    /// Sets the lease duration and renew period; the holder must renew at
    /// least twice per duration, or a slow renewal would hand the lease
    /// over while the holder still works.
    pub fn with_timings(
        mut self,
        lease_duration: Duration,
        renew_every: Duration,
    ) -> Result<Self, String> {
        if renew_every * 2 > lease_duration {
            return Err(format!(
                "the renew period ({renew_every:?}) must be at most half the lease duration ({lease_duration:?})"
            ));
        }
        self.lease_duration = lease_duration;
        self.renew_every = renew_every;
        Ok(self)
    }
}

/// What this candidate last saw of the lease, to judge expiry locally.
struct Observed {
    holder: Option<String>,
    renew: Option<MicroTime>,
    since: Instant,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn lease_seconds(cfg: &LeaseConfig) -> i32 {
    i32::try_from(cfg.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
}

/// One attempt to take or renew the lease. Returns whether this candidate
/// holds it afterwards.
async fn try_acquire(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    seen: &mut Option<Observed>,
) -> Result<bool, Error> {
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(lease_seconds(cfg)),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            // Another candidate created it first.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let mine = holder.as_deref() == Some(cfg.identity.as_str());
    let changed = seen
        .as_ref()
        .is_none_or(|o| o.holder != holder || o.renew != spec.renew_time);
    if changed {
        *seen = Some(Observed {
            holder: holder.clone(),
            renew: spec.renew_time.clone(),
            since: Instant::now(),
        });
    }
    let held_for = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(cfg.lease_duration, Duration::from_secs);
    let expired = seen.as_ref().is_some_and(|o| o.since.elapsed() >= held_for);
    if !(mine || holder.is_none() || expired) {
        return Ok(false);
    }
    let mut next = spec;
    if !mine {
        next.acquire_time = Some(now());
        next.lease_transitions = Some(next.lease_transitions.unwrap_or(0) + 1);
    }
    next.holder_identity = Some(cfg.identity.clone());
    next.lease_duration_seconds = Some(lease_seconds(cfg));
    next.renew_time = Some(now());
    lease.spec = Some(next);
    // `replace` sends the resourceVersion read above: a concurrent writer
    // makes this fail with 409 instead of both believing they hold it.
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Waits until this candidate holds the lease.
pub async fn acquire(client: &Client, cfg: &LeaseConfig) -> Result<(), Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let mut seen = None;
    loop {
        match try_acquire(&api, cfg, &mut seen).await {
            Ok(true) => {
                tracing::info!(lease = cfg.name, identity = cfg.identity, "lease acquired");
                return Ok(());
            }
            Ok(false) => {}
            // Standing by: a failed read is retried, not fatal.
            Err(e) => tracing::warn!(lease = cfg.name, error = %e, "lease check failed"),
        }
        tokio::time::sleep(cfg.renew_every).await;
    }
}

/// Renews the lease until a renewal fails for a whole lease duration or
/// another candidate took it; returns the reason it was lost.
pub async fn hold(client: &Client, cfg: &LeaseConfig) -> Error {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let mut last_renewed = Instant::now();
    let mut seen = None;
    loop {
        tokio::time::sleep(cfg.renew_every).await;
        match try_acquire(&api, cfg, &mut seen).await {
            Ok(true) => last_renewed = Instant::now(),
            Ok(false) => {
                return Error::Invalid(format!(
                    "lease {}/{} was taken by another replica",
                    cfg.namespace, cfg.name
                ))
            }
            Err(e) => {
                tracing::warn!(lease = cfg.name, error = %e, "lease renewal failed");
                if last_renewed.elapsed() >= cfg.lease_duration {
                    return Error::Invalid(format!(
                        "could not renew lease {}/{} for {:?}: {e}",
                        cfg.namespace, cfg.name, cfg.lease_duration
                    ));
                }
            }
        }
    }
}

/// Acquires the lease, then runs `work` while holding it. Returns `Err`
/// when the lease is lost (the caller should exit) and `work`'s own result
/// when it ends first.
pub async fn run_as_leader<F>(client: &Client, cfg: &LeaseConfig, work: F) -> Result<(), Error>
where
    F: std::future::Future<Output = Result<(), Error>>,
{
    acquire(client, cfg).await?;
    tokio::select! {
        lost = hold(client, cfg) => Err(lost),
        r = work => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_parse_and_must_leave_room_to_renew() {
        assert_eq!(parse_seconds("4s"), Ok(Duration::from_secs(4)));
        assert_eq!(parse_seconds("15"), Ok(Duration::from_secs(15)));
        assert!(parse_seconds("0s").is_err());
        assert!(parse_seconds("1m").is_err());
        let c = LeaseConfig::new("reverie", "ns", "pod-a");
        let short = c
            .clone()
            .with_timings(Duration::from_secs(4), Duration::from_secs(1))
            .expect("valid");
        assert_eq!(lease_seconds(&short), 4);
        assert!(c
            .with_timings(Duration::from_secs(4), Duration::from_secs(3))
            .is_err());
    }

    #[test]
    fn default_timings_renew_well_within_the_lease() {
        let c = LeaseConfig::new("reverie", "ns", "pod-a");
        assert!(c.renew_every * 2 < c.lease_duration);
        assert_eq!(lease_seconds(&c), 15);
    }
}
