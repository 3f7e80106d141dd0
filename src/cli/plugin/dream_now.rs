//! `dream-now`: ask the controller for a dream at once, by annotating the
//! DreamSchedule with the time of the request.

use super::{api_status, is_not_found, strip_kind, DreamNowArgs, SCHEDULE_KINDS};
use crate::api::DreamSchedule;
use crate::cli::Exit;
use chrono::{DateTime, SecondsFormat, Utc};
use kube::api::{Api, Patch, PatchParams};

/// Annotation that asks the controller for a dream now: its value is the
/// RFC 3339 time of the request; the controller turns each new value into
/// one Job `<schedule>-now-<8 hex>`.
pub const DREAM_NOW_ANNOTATION: &str = "reverie.dev/dream-now";

/// The merge patch that requests a dream at `now`.
pub fn dream_now_patch(now: DateTime<Utc>) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"annotations": {DREAM_NOW_ANNOTATION: now.to_rfc3339_opts(SecondsFormat::Secs, true)}}
    })
}

/// The name of the Job the controller starts for a dream-now token:
/// `<schedule>-now-<first 8 hex digits of the token's SHA-256>`, the same
/// for the same token (so a restarted controller never starts it twice).
/// Names that would pass 63 characters are shortened by the controller;
/// then only the pattern is shown.
pub fn dream_now_job_name(schedule: &str, token: &str) -> String {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    let hash = digest.get(..8).unwrap_or(&digest);
    let name = format!("{schedule}-now-{hash}");
    if name.len() <= 63 {
        name
    } else {
        format!("{schedule}-now-<8 hex> (shortened to 63 characters)")
    }
}

/// Annotates the schedule named in `args` with `now`; returns what to print.
pub(super) async fn run(
    client: &kube::Client,
    ns: &str,
    args: &DreamNowArgs,
    now: DateTime<Utc>,
) -> anyhow::Result<String> {
    let name = strip_kind(&args.schedule, SCHEDULE_KINDS)?;
    let api: Api<DreamSchedule> = Api::namespaced(client.clone(), ns);
    let schedule = match api.get(name).await {
        Ok(s) => s,
        Err(e) if is_not_found(&e) => {
            return Err(Exit::new(
                1,
                format!("DreamSchedule {name} not found in namespace {ns}"),
            )
            .into())
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot read DreamSchedule {name} in namespace {ns}"
            )))
        }
    };
    let body = dream_now_patch(now);
    api.patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map_err(|e| match api_status(&e) {
            Some(s) => anyhow::Error::new(Exit::new(
                1,
                format!(
                    "the apiserver refused to annotate DreamSchedule {name} in namespace {ns}: {}",
                    s.message
                ),
            )),
            None => anyhow::Error::new(e).context(format!(
                "cannot annotate DreamSchedule {name} in namespace {ns}"
            )),
        })?;
    let stamp = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut text = match &schedule.spec.store_ref {
        Some(store) => format!(
            "dreamschedule/{name} annotated {DREAM_NOW_ANNOTATION}={stamp}: the controller starts a dream of store {} as Job {}\n",
            store.name,
            dream_now_job_name(name, &stamp)
        ),
        None => format!(
            "dreamschedule/{name} annotated {DREAM_NOW_ANNOTATION}={stamp}: the controller starts a dream of every selected store (idle ones too), within the concurrency limits\n"
        ),
    };
    if schedule.spec.suspend {
        text.push_str("note: the schedule is suspended; suspension stops scheduled dreams only\n");
    }
    text.push_str(&format!("follow it with: kubectl get jobs -n {ns} -w\n"));
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dream_now_job_name_hashes_the_token() {
        // sha256("2026-11-30T20:41:07Z") starts with these 8 hex digits.
        let digest = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(b"2026-11-30T20:41:07Z"))
        };
        assert_eq!(
            dream_now_job_name("nightly", "2026-11-30T20:41:07Z"),
            format!("nightly-now-{}", &digest[..8])
        );
        assert_eq!(
            dream_now_job_name("nightly", "2026-11-30T20:41:07Z"),
            dream_now_job_name("nightly", "2026-11-30T20:41:07Z")
        );
        assert_ne!(
            dream_now_job_name("nightly", "2026-11-30T20:41:07Z"),
            dream_now_job_name("nightly", "2026-11-30T20:41:08Z")
        );
        let long = "x".repeat(60);
        assert!(dream_now_job_name(&long, "t").contains("shortened"));
    }

    #[test]
    fn dream_now_patch_uses_the_injected_time() {
        let now = DateTime::parse_from_rfc3339("2026-11-30T20:41:07.123Z")
            .expect("valid time")
            .with_timezone(&Utc);
        assert_eq!(
            dream_now_patch(now),
            serde_json::json!({"metadata": {"annotations": {"reverie.dev/dream-now": "2026-11-30T20:41:07Z"}}})
        );
    }
}
