//! skiff's automatic rollback (beyond upstream; Nomad's `auto_revert`, Swarm's
//! `--update-failure-action rollback`). Opt-in per Deployment with the annotation
//! `skiff.dev/auto-rollback: "true"`. The controller remembers the last revision that
//! became available (`skiff.dev/last-available-revision`, written when Progressing turns
//! NewReplicaSetAvailable); when a later rollout exceeds its progress deadline
//! (Progressing=False, ProgressDeadlineExceeded) it puts that revision's template back,
//! as `kubectl rollout undo --to-revision` would, and records a Warning `AutoRollback`.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;

use super::revision::{self, annotation};
use super::status::{self, PROGRESSING};

pub const AUTO_ROLLBACK: &str = "skiff.dev/auto-rollback";
pub const LAST_AVAILABLE_REVISION: &str = "skiff.dev/last-available-revision";
pub const REASON: &str = "AutoRollback";

#[derive(Debug, PartialEq)]
pub enum Decision {
    Nothing,
    /// The current revision became available: remember it.
    Remember(i64),
    /// Put `template` (the ReplicaSet of revision `to`) back.
    Rollback {
        from: i64,
        to: i64,
        template: Box<PodTemplateSpec>,
        change_cause: Option<String>,
        message: String,
    },
}

pub fn enabled(d: &Deployment) -> bool {
    annotation(&d.metadata.annotations, AUTO_ROLLBACK) == Some("true")
}

fn has_revision(rs: &ReplicaSet, rev: i64) -> bool {
    revision::revision_of(rs) == rev
        || annotation(&rs.metadata.annotations, revision::REVISION_HISTORY)
            .is_some_and(|h| h.split(',').any(|r| r.trim().parse() == Ok(rev)))
}

pub fn decide(d: &Deployment, new: Option<&ReplicaSet>, olds: &[&ReplicaSet]) -> Decision {
    if !enabled(d) || d.spec.paused.unwrap_or(false) {
        return Decision::Nothing;
    }
    let Some(progress) = status::get(d.status.as_ref(), PROGRESSING) else {
        return Decision::Nothing;
    };
    let remembered: Option<i64> =
        annotation(&d.metadata.annotations, LAST_AVAILABLE_REVISION).and_then(|v| v.parse().ok());
    let current = new.map(revision::revision_of);
    match progress.reason.as_deref() {
        Some(status::NEW_RS_AVAILABLE) => match current {
            Some(rev) if rev > 0 && remembered != Some(rev) => Decision::Remember(rev),
            _ => Decision::Nothing,
        },
        Some(status::TIMED_OUT) => {
            let Some(good) = remembered else {
                return Decision::Nothing;
            };
            let Some(target) = olds.iter().copied().find(|rs| has_revision(rs, good)) else {
                return Decision::Nothing;
            };
            let template = revision::template_for_deployment(target);
            if revision::equal_ignore_hash(&d.spec.template, &template) {
                return Decision::Nothing;
            }
            let from = current.unwrap_or(0);
            Decision::Rollback {
                from,
                to: good,
                template: Box::new(template),
                change_cause: annotation(&target.metadata.annotations, revision::CHANGE_CAUSE)
                    .map(String::from),
                message: format!(
                    "Rolled back from revision {from} to revision {good}: {}",
                    progress
                        .message
                        .clone()
                        .unwrap_or_else(|| "progress deadline exceeded".into())
                ),
            }
        }
        _ => Decision::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::rolling::tests::{deploy, rs};
    use crate::deployment::status::{condition, set};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn with_revision(mut r: ReplicaSet, rev: i64, image: &str) -> ReplicaSet {
        r.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(revision::REVISION.into(), rev.to_string());
        let spec = &mut r.spec;
        spec.template = Some(PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                containers: vec![k8s_openapi::api::core::v1::Container {
                    name: "c".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        });
        r
    }

    fn deployment(
        reason: &str,
        annotations: &[(&str, &str)],
        template_of: &ReplicaSet,
    ) -> Deployment {
        let mut d = deploy(3, "1", "0");
        d.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        d.spec.template = revision::template_for_deployment(template_of);
        let mut s = k8s_openapi::api::apps::v1::DeploymentStatus::default();
        set(
            &mut s,
            condition(
                PROGRESSING,
                if reason == status::TIMED_OUT {
                    "False"
                } else {
                    "True"
                },
                reason,
                "ReplicaSet \"web-2\" has timed out progressing.".into(),
                chrono::Utc::now(),
            ),
        );
        d.status = Some(s);
        d
    }

    #[test]
    fn decisions() {
        let good = with_revision(rs("web-1", 100, 0, 0, None), 1, "nginx:1");
        let bad = with_revision(rs("web-2", 10, 1, 0, None), 2, "nginx:nope");
        let on = [(AUTO_ROLLBACK, "true"), (LAST_AVAILABLE_REVISION, "1")];

        let d = deployment(status::TIMED_OUT, &on, &bad);
        match decide(&d, Some(&bad), &[&good]) {
            Decision::Rollback {
                from, to, message, ..
            } => {
                assert_eq!((from, to), (2, 1));
                assert!(
                    message.starts_with("Rolled back from revision 2 to revision 1: "),
                    "{message}"
                );
            }
            other => panic!("expected a rollback, got {other:?}"),
        }
        // Not opted in, or nothing known to be good: nothing.
        assert_eq!(
            decide(
                &deployment(status::TIMED_OUT, &[(LAST_AVAILABLE_REVISION, "1")], &bad),
                Some(&bad),
                &[&good]
            ),
            Decision::Nothing
        );
        assert_eq!(
            decide(
                &deployment(status::TIMED_OUT, &[(AUTO_ROLLBACK, "true")], &bad),
                Some(&bad),
                &[&good]
            ),
            Decision::Nothing
        );
        // Already back on the good template: nothing (no loop).
        assert_eq!(
            decide(
                &deployment(status::TIMED_OUT, &on, &good),
                Some(&bad),
                &[&good]
            ),
            Decision::Nothing
        );
        // A completed rollout is remembered.
        let d = deployment(status::NEW_RS_AVAILABLE, &on, &bad);
        assert_eq!(decide(&d, Some(&bad), &[&good]), Decision::Remember(2));
        assert_eq!(
            decide(&d, Some(&good), &[&bad]),
            Decision::Nothing,
            "revision 1 already remembered"
        );
    }
}
