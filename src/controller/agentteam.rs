//! The `AgentTeam` controller: owns the shared workspace claim
//! `<team>-workspace` and reports `Ready` when the lead's and the members'
//! Agents are Ready.

use super::agent::{
    apply_status, now, publish, ready_status, shared_error_policy, watched_api, STALLED_RECHECK,
};
use super::status::{conditions, Health};
use super::{trim, Context, Error};
use crate::api::{Agent, AgentTeam, AgentTeamStatus};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The name of a team's workspace claim.
pub fn workspace_claim(team: &str) -> String {
    format!("{team}-workspace")
}

/// The workspace claim of `team`, owned by it.
pub fn build_workspace_pvc(team: &AgentTeam) -> PersistentVolumeClaim {
    let name = team.name_any();
    let ws = &team.spec.workspace;
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(workspace_claim(&name)),
            namespace: team.namespace(),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/name".to_string(), "reverie".to_string()),
                (
                    "app.kubernetes.io/component".to_string(),
                    "workspace".to_string(),
                ),
                ("reverie.dev/team".to_string(), name.clone()),
            ])),
            owner_references: team.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(
                ws.access_modes
                    .iter()
                    .map(|m| m.as_str().to_string())
                    .collect(),
            ),
            storage_class_name: ws.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(ws.size.clone()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

async fn reconcile(team: Arc<AgentTeam>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = team.namespace().unwrap_or_default();
    let name = team.name_any();
    let claim = workspace_claim(&name);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    // A claim's spec is mostly immutable: create it once, never rewrite it.
    if pvcs.get_opt(&claim).await?.is_none() {
        match pvcs
            .create(&PostParams::default(), &build_workspace_pvc(&team))
            .await
        {
            Ok(_) => tracing::info!(%ns, %claim, "workspace claim created"),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let agents: Api<Agent> = Api::namespaced(ctx.client.clone(), &ns);
    let mut refs = vec![("lead".to_string(), team.spec.lead.agent_ref.name.clone())];
    refs.extend(
        team.spec
            .members
            .iter()
            .map(|m| (format!("member {}", m.name), m.agent_ref.name.clone())),
    );
    let mut health = Health::ready(
        "AgentsReady",
        format!("lead and {} member(s) ready", team.spec.members.len()),
    );
    for (role, agent) in &refs {
        match agents.get_opt(agent).await? {
            None => {
                health =
                    Health::stalled("AgentNotFound", format!("Agent {agent} ({role}) not found"));
                break;
            }
            Some(a) => {
                let conds = a.status.map(|s| s.conditions).unwrap_or_default();
                if ready_status(&conds) != Some("True") {
                    health = Health::stalled(
                        "AgentNotReady",
                        format!("Agent {agent} ({role}) is not Ready"),
                    );
                    break;
                }
            }
        }
    }
    let old = team.status.clone().unwrap_or_default();
    let status = AgentTeamStatus {
        observed_generation: team.metadata.generation,
        conditions: conditions(&health, team.metadata.generation, &old.conditions, &now()),
        members: Some(team.spec.members.len() as u32),
        workspace_claim: Some(claim),
    };
    if status != old {
        let api: Api<AgentTeam> = Api::namespaced(ctx.client.clone(), &ns);
        apply_status(&api, team.as_ref(), &status).await?;
        if ready_status(&status.conditions) != ready_status(&old.conditions) {
            let (warning, reason, note) = match &health {
                Health::Ready { reason, message } => (false, reason, message),
                Health::Reconciling { reason, message } | Health::Stalled { reason, message } => {
                    (true, reason, message)
                }
            };
            publish(ctx.as_ref(), team.as_ref(), warning, reason, note.clone()).await;
        }
    }
    Ok(match health {
        Health::Ready { .. } => Action::await_change(),
        _ => Action::requeue(STALLED_RECHECK),
    })
}

/// Runs the AgentTeam controller until the watch ends.
pub async fn run(ctx: Arc<Context>) {
    // Trimmed streams (see `trim`): claims as metadata only.
    let (store, teams) =
        trim::reflected(watched_api::<AgentTeam>(&ctx), watcher::Config::default());
    let claims = trim::metadata_trigger(
        watched_api::<PartialObjectMeta<PersistentVolumeClaim>>(&ctx),
        watcher::Config::default().labels("app.kubernetes.io/component=workspace"),
    );
    let agents = trim::metadata_trigger(
        watched_api::<PartialObjectMeta<Agent>>(&ctx),
        watcher::Config::default(),
    );
    Controller::for_stream(teams, store.clone())
        .with_config(trim::controller_config())
        .owns_stream(claims)
        // An Agent turning Ready (or not) changes the health of its teams.
        .watches_stream(agents, move |a: PartialObjectMeta<Agent>| {
            let (ns, name) = (a.namespace(), a.name_any());
            store
                .state()
                .into_iter()
                .filter(|t| {
                    t.namespace() == ns
                        && (t.spec.lead.agent_ref.name == name
                            || t.spec.members.iter().any(|m| m.agent_ref.name == name))
                })
                .map(|t| ObjectRef::from_obj(t.as_ref()))
                .collect::<Vec<_>>()
        })
        .shutdown_on_signal()
        .run(
            super::metrics::observe("agentteam", reconcile),
            shared_error_policy,
            ctx,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!("agentteam controller: {e}");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AgentTeamSpec, LocalRef, TeamLead, TeamMember, WorkspaceSpec};

    #[test]
    fn workspace_claim_follows_the_spec_and_is_owned() {
        let mut team = AgentTeam::new(
            "devs",
            AgentTeamSpec {
                lead: TeamLead {
                    agent_ref: LocalRef::new("lead"),
                },
                members: vec![TeamMember {
                    name: "a".into(),
                    agent_ref: LocalRef::new("a"),
                    description: String::new(),
                }],
                workspace: WorkspaceSpec {
                    size: "2Gi".into(),
                    storage_class_name: Some("fast".into()),
                    access_modes: vec![crate::api::AccessMode::ReadWriteMany],
                },
                max_parallel: 2,
            },
        );
        team.metadata.namespace = Some("ns".into());
        team.metadata.uid = Some("u1".into());
        let pvc = build_workspace_pvc(&team);
        assert_eq!(pvc.metadata.name.as_deref(), Some("devs-workspace"));
        let spec = pvc.spec.unwrap();
        assert_eq!(spec.access_modes.unwrap(), vec!["ReadWriteMany"]);
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            spec.resources.unwrap().requests.unwrap()["storage"],
            Quantity("2Gi".into())
        );
        let owner = &pvc.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("AgentTeam", "u1")
        );
        assert_eq!(owner.controller, Some(true));
    }
}
