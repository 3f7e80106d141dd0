//! Conditions that kstatus, Argo CD and Flux read without custom code:
//! `Ready`, plus `Reconciling` and `Stalled`, which are present (True) only
//! when abnormal.

use crate::api::condition::{READY, RECONCILING, STALLED};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// What a reconcile concluded about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Everything the spec asks for exists and works.
    Ready { reason: String, message: String },
    /// Work is under way (a Job runs, a claim binds); it should settle by itself.
    Reconciling { reason: String, message: String },
    /// It cannot progress until a person changes something; the message says what.
    Stalled { reason: String, message: String },
}

impl Health {
    pub fn ready(reason: &str, message: impl Into<String>) -> Self {
        Health::Ready {
            reason: reason.to_string(),
            message: message.into(),
        }
    }
    pub fn reconciling(reason: &str, message: impl Into<String>) -> Self {
        Health::Reconciling {
            reason: reason.to_string(),
            message: message.into(),
        }
    }
    pub fn stalled(reason: &str, message: impl Into<String>) -> Self {
        Health::Stalled {
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Condition {
    // Keep the transition time while the status stays the same, so an
    // unchanged object produces an identical status (and no write).
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// The conditions for `health`, keeping transition times from `previous`.
pub fn conditions(
    health: &Health,
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Vec<Condition> {
    let c = |t: &str, s: &str, r: &str, m: &str| condition(t, s, r, m, generation, previous, now);
    match health {
        Health::Ready { reason, message } => vec![c(READY, "True", reason, message)],
        Health::Reconciling { reason, message } => vec![
            c(READY, "False", reason, message),
            c(RECONCILING, "True", reason, message),
        ],
        Health::Stalled { reason, message } => vec![
            c(READY, "False", reason, message),
            c(STALLED, "True", reason, message),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        Time(s.parse().expect("time"))
    }

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged() {
        let first = conditions(
            &Health::ready("Ok", "fine"),
            Some(1),
            &[],
            &t("2026-01-01T00:00:00Z"),
        );
        let again = conditions(
            &Health::ready("Ok", "fine"),
            Some(1),
            &first,
            &t("2026-01-02T00:00:00Z"),
        );
        assert_eq!(first, again);
        let stalled = conditions(
            &Health::stalled("NoSecret", "x"),
            Some(2),
            &again,
            &t("2026-01-03T00:00:00Z"),
        );
        assert_eq!(stalled.len(), 2);
        assert_eq!(stalled[0].status, "False");
        assert_eq!(stalled[0].last_transition_time, t("2026-01-03T00:00:00Z"));
        assert_eq!(stalled[1].type_, STALLED);
    }
}
