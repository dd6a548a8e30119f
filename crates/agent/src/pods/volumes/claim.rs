//! persistentVolumeClaim volumes: the claim, the volume it is bound to, and where that
//! volume's data is on this node. Only node-local volumes exist here: `hostPath` (what the
//! built-in local-path provisioner makes) and `local`. Messages are the kubelet volume
//! manager's (`getPVCExtractPV`, `getPVSpec`).

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

/// Where a bound volume's data is, and how it must be prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimSource {
    pub path: String,
    /// The hostPath `type` to check (local volumes: the path must be a directory).
    pub type_: Option<String>,
    pub read_only: bool,
}

/// Checks the claim is usable and bound; Ok(volume name).
pub fn bound_volume(namespace: &str, claim: &PersistentVolumeClaim) -> Result<String, String> {
    let name = claim.metadata.name.as_deref().unwrap_or("");
    if claim.metadata.deletion_timestamp.is_some() {
        return Err(format!(
            "can't start pod because PVC {namespace}/{name} is being deleted"
        ));
    }
    let phase = claim
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let volume = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if phase != "Bound" || volume.is_empty() {
        return Err(format!(
            "PVC {namespace}/{name} has non-bound phase ({phase:?}) or empty pvc.Spec.VolumeName ({volume:?})"
        ));
    }
    Ok(volume)
}

/// The node-local source of a volume bound to `claim_uid`.
pub fn source(
    pv: &PersistentVolume,
    claim_uid: &str,
    read_only: bool,
) -> Result<ClaimSource, String> {
    let name = pv.metadata.name.as_deref().unwrap_or("");
    let spec = pv.spec.clone().unwrap_or_default();
    let Some(claim_ref) = &spec.claim_ref else {
        return Err(format!(
            "found PV object {name} but it has a nil pv.Spec.ClaimRef indicating it is not yet bound to the claim"
        ));
    };
    let ref_uid = claim_ref.uid.as_deref().unwrap_or("");
    if ref_uid != claim_uid {
        return Err(format!(
            "found PV object {name} but its pv.Spec.ClaimRef.UID {ref_uid} does not point to claim.UID {claim_uid}"
        ));
    }
    if let Some(hp) = &spec.host_path {
        return Ok(ClaimSource {
            path: hp.path.clone(),
            type_: hp.type_.clone(),
            read_only,
        });
    }
    if let Some(local) = &spec.local {
        return Ok(ClaimSource {
            path: local.path.clone(),
            type_: Some("Directory".into()),
            read_only,
        });
    }
    Err(format!(
        "volume {name}: only hostPath and local persistent volumes are supported by this node"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unbound_and_foreign_claims_are_refused() {
        let pending: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "data", "uid": "c1"}, "spec": {}, "status": {"phase": "Pending"}
        }))
        .unwrap();
        assert_eq!(
            bound_volume("default", &pending).unwrap_err(),
            "PVC default/data has non-bound phase (\"Pending\") or empty pvc.Spec.VolumeName (\"\")"
        );
        let bound: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "data", "uid": "c1"}, "spec": {"volumeName": "pv1"},
            "status": {"phase": "Bound"}
        }))
        .unwrap();
        assert_eq!(bound_volume("default", &bound).unwrap(), "pv1");
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": "pv1"},
            "spec": {"claimRef": {"uid": "c1"}, "hostPath": {"path": "/d", "type": "DirectoryOrCreate"}}
        }))
        .unwrap();
        assert_eq!(
            source(&pv, "c1", false).unwrap(),
            ClaimSource {
                path: "/d".into(),
                type_: Some("DirectoryOrCreate".into()),
                read_only: false
            }
        );
        assert!(source(&pv, "other", false)
            .unwrap_err()
            .contains("does not point to claim.UID other"));
    }
}
