//! The collector's decisions, pure: what to do with one object given the latest state of
//! its owners (upstream's `attemptToDeleteItem`, `processDeletingDependentsItem` and
//! orphaning), and the metadata edits those decisions make.

use super::graph::{OwnerLink, Uid};

/// One owner, as looked up when its dependent is examined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    /// Exists with the referenced uid.
    Solid,
    /// Does not exist, or exists with another uid.
    Dangling,
    /// Exists and is being deleted in the foreground (waits for its dependents).
    WaitingForDependents,
    /// Its kind is not served (yet) or the reference is invalid for this object: the
    /// collector cannot tell, so it keeps the object and looks again later.
    Unresolvable,
}

/// How a delete propagates (the DeleteOptions propagationPolicy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

/// The latest state of the object examined.
#[derive(Debug, Clone)]
pub struct Item<'a> {
    pub deleting: bool,
    pub orphan_finalizer: bool,
    pub foreground_finalizer: bool,
    /// Its ownerReferences, each with its owner's state.
    pub owners: &'a [(OwnerLink, OwnerState)],
    /// It has dependents of its own (from the graph).
    pub has_dependents: bool,
    /// One of its dependents is itself deleting in the foreground (a possible cycle).
    pub a_dependent_is_deleting_dependents: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Keep it as it is.
    Keep,
    /// An owner could not be resolved: keep it and look again later.
    RetryLater,
    /// Still owned: only drop the references to owners that are gone or deleting in the
    /// foreground (so they are not blocked by this object).
    DropOwnerReferences(Vec<Uid>),
    /// No owner left: delete it; first make `unblock` references non-blocking (to break
    /// a foreground cycle).
    Delete {
        propagation: Propagation,
        unblock: Vec<Uid>,
    },
}

/// Decide about an object that is not itself being deleted.
pub fn decide_item(item: &Item) -> Decision {
    if item.deleting {
        return Decision::Keep;
    }
    if item.owners.is_empty() {
        return Decision::Keep;
    }
    if item
        .owners
        .iter()
        .any(|(_, s)| *s == OwnerState::Unresolvable)
    {
        return Decision::RetryLater;
    }
    let of = |state: OwnerState| -> Vec<&OwnerLink> {
        item.owners
            .iter()
            .filter(|(_, s)| *s == state)
            .map(|(o, _)| o)
            .collect()
    };
    let solid = of(OwnerState::Solid);
    let dangling = of(OwnerState::Dangling);
    let waiting = of(OwnerState::WaitingForDependents);
    if !solid.is_empty() {
        if dangling.is_empty() && waiting.is_empty() {
            return Decision::Keep;
        }
        let drop = dangling
            .iter()
            .chain(waiting.iter())
            .map(|o| o.uid.clone())
            .collect();
        return Decision::DropOwnerReferences(drop);
    }
    if !waiting.is_empty() && item.has_dependents {
        // Deleted in the foreground so that its own dependents go before it, which in turn
        // holds the waiting owner. If one of those dependents also waits (a cycle), stop
        // this object from blocking its owners so the cycle can end.
        let unblock = if item.a_dependent_is_deleting_dependents {
            waiting
                .iter()
                .filter(|o| o.block_owner_deletion)
                .map(|o| o.uid.clone())
                .collect()
        } else {
            Vec::new()
        };
        return Decision::Delete {
            propagation: Propagation::Foreground,
            unblock,
        };
    }
    let propagation = if item.foreground_finalizer {
        Propagation::Foreground
    } else if item.orphan_finalizer {
        Propagation::Orphan
    } else {
        Propagation::Background
    };
    Decision::Delete {
        propagation,
        unblock: Vec::new(),
    }
}

/// What an owner being deleted in the foreground does next.
#[derive(Debug, PartialEq, Eq)]
pub enum ForegroundStep {
    /// No dependent blocks it any more: remove the `foregroundDeletion` finalizer.
    RemoveFinalizer,
    /// Look at these blocking dependents (delete them); the owner waits.
    Wait { examine: Vec<Uid> },
}

/// `blocking`: the dependents that block the owner, each with whether it is itself
/// deleting its dependents in the foreground (then it is on its way already).
pub fn decide_foreground(blocking: &[(Uid, bool)]) -> ForegroundStep {
    if blocking.is_empty() {
        return ForegroundStep::RemoveFinalizer;
    }
    ForegroundStep::Wait {
        examine: blocking
            .iter()
            .filter(|(_, deleting_dependents)| !deleting_dependents)
            .map(|(uid, _)| uid.clone())
            .collect(),
    }
}

/// `finalizers` without `name`; `None` when it was not there (nothing to write).
pub fn without_finalizer(finalizers: &[String], name: &str) -> Option<Vec<String>> {
    if !finalizers.iter().any(|f| f == name) {
        return None;
    }
    Some(finalizers.iter().filter(|f| *f != name).cloned().collect())
}

/// ownerReferences (as JSON) without those pointing at `uids`; `None` when nothing changes.
pub fn without_owner_references(
    refs: &[serde_json::Value],
    uids: &[Uid],
) -> Option<Vec<serde_json::Value>> {
    let drop = |r: &serde_json::Value| {
        r["uid"]
            .as_str()
            .is_some_and(|u| uids.iter().any(|x| &**x == u))
    };
    if !refs.iter().any(drop) {
        return None;
    }
    Some(refs.iter().filter(|r| !drop(r)).cloned().collect())
}

/// ownerReferences (as JSON) with blockOwnerDeletion=false on those pointing at `uids`;
/// `None` when nothing changes.
pub fn with_owner_references_unblocked(
    refs: &[serde_json::Value],
    uids: &[Uid],
) -> Option<Vec<serde_json::Value>> {
    let mut changed = false;
    let out = refs
        .iter()
        .map(|r| {
            let mut r = r.clone();
            let targeted = r["uid"]
                .as_str()
                .is_some_and(|u| uids.iter().any(|x| &**x == u));
            if targeted && r["blockOwnerDeletion"].as_bool() == Some(true) {
                r["blockOwnerDeletion"] = serde_json::Value::Bool(false);
                changed = true;
            }
            r
        })
        .collect();
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;
    use OwnerState::*;

    fn owner(uid: &str, block: bool) -> OwnerLink {
        OwnerLink {
            uid: Arc::from(uid),
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: uid.into(),
            block_owner_deletion: block,
        }
    }

    fn u(s: &str) -> Uid {
        Arc::from(s)
    }

    #[test]
    fn items_by_owner_states() {
        struct Case {
            name: &'static str,
            owners: Vec<(OwnerLink, OwnerState)>,
            deleting: bool,
            orphan_finalizer: bool,
            foreground_finalizer: bool,
            has_dependents: bool,
            cycle: bool,
            want: Decision,
        }
        let base = |name, owners, want| Case {
            name,
            owners,
            deleting: false,
            orphan_finalizer: false,
            foreground_finalizer: false,
            has_dependents: false,
            cycle: false,
            want,
        };
        let bg = Decision::Delete {
            propagation: Propagation::Background,
            unblock: vec![],
        };
        let cases = vec![
            base("no owners", vec![], Decision::Keep),
            base(
                "owner exists",
                vec![(owner("a", false), Solid)],
                Decision::Keep,
            ),
            base(
                "owner gone (background)",
                vec![(owner("a", false), Dangling)],
                bg,
            ),
            base(
                "all owners gone",
                vec![(owner("a", false), Dangling), (owner("b", true), Dangling)],
                Decision::Delete {
                    propagation: Propagation::Background,
                    unblock: vec![],
                },
            ),
            base(
                "one owner left: drop the reference to the gone one",
                vec![(owner("a", false), Solid), (owner("b", false), Dangling)],
                Decision::DropOwnerReferences(vec![u("b")]),
            ),
            base(
                "one owner left, another deleting in the foreground: drop that one",
                vec![
                    (owner("a", false), Solid),
                    (owner("b", true), WaitingForDependents),
                ],
                Decision::DropOwnerReferences(vec![u("b")]),
            ),
            base(
                "owner deleting in the foreground, no own dependents: plain delete",
                vec![(owner("a", true), WaitingForDependents)],
                Decision::Delete {
                    propagation: Propagation::Background,
                    unblock: vec![],
                },
            ),
            Case {
                has_dependents: true,
                ..base(
                    "owner deleting in the foreground, own dependents: foreground",
                    vec![(owner("a", true), WaitingForDependents)],
                    Decision::Delete {
                        propagation: Propagation::Foreground,
                        unblock: vec![],
                    },
                )
            },
            Case {
                has_dependents: true,
                cycle: true,
                ..base(
                    "a cycle: unblock the waiting owners, then foreground",
                    vec![
                        (owner("a", true), WaitingForDependents),
                        (owner("b", false), WaitingForDependents),
                    ],
                    Decision::Delete {
                        propagation: Propagation::Foreground,
                        unblock: vec![u("a")],
                    },
                )
            },
            base(
                "unresolvable owner: look later",
                vec![
                    (owner("a", false), Dangling),
                    (owner("b", false), Unresolvable),
                ],
                Decision::RetryLater,
            ),
            Case {
                deleting: true,
                ..base(
                    "already being deleted",
                    vec![(owner("a", false), Dangling)],
                    Decision::Keep,
                )
            },
            Case {
                orphan_finalizer: true,
                ..base(
                    "its own orphan finalizer decides the propagation",
                    vec![(owner("a", false), Dangling)],
                    Decision::Delete {
                        propagation: Propagation::Orphan,
                        unblock: vec![],
                    },
                )
            },
            Case {
                foreground_finalizer: true,
                ..base(
                    "its own foreground finalizer decides the propagation",
                    vec![(owner("a", false), Dangling)],
                    Decision::Delete {
                        propagation: Propagation::Foreground,
                        unblock: vec![],
                    },
                )
            },
        ];
        for c in cases {
            let item = Item {
                deleting: c.deleting,
                orphan_finalizer: c.orphan_finalizer,
                foreground_finalizer: c.foreground_finalizer,
                owners: &c.owners,
                has_dependents: c.has_dependents,
                a_dependent_is_deleting_dependents: c.cycle,
            };
            assert_eq!(decide_item(&item), c.want, "{}", c.name);
        }
    }

    #[test]
    fn foreground_owner_steps() {
        let cases: Vec<(&str, Vec<(Uid, bool)>, ForegroundStep)> = vec![
            ("nothing blocks", vec![], ForegroundStep::RemoveFinalizer),
            (
                "blocking dependents are examined",
                vec![(u("a"), false), (u("b"), false)],
                ForegroundStep::Wait {
                    examine: vec![u("a"), u("b")],
                },
            ),
            (
                "a dependent deleting its own dependents is left to finish",
                vec![(u("a"), true), (u("b"), false)],
                ForegroundStep::Wait {
                    examine: vec![u("b")],
                },
            ),
        ];
        for (name, blocking, want) in cases {
            assert_eq!(decide_foreground(&blocking), want, "{name}");
        }
    }

    #[test]
    fn metadata_edits() {
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            without_finalizer(&f(&["a", "orphan", "b"]), "orphan"),
            Some(f(&["a", "b"]))
        );
        assert_eq!(without_finalizer(&f(&["a"]), "orphan"), None);

        let refs = vec![
            json!({"uid": "1", "kind": "ConfigMap", "name": "x", "blockOwnerDeletion": true}),
            json!({"uid": "2", "kind": "ConfigMap", "name": "y"}),
        ];
        assert_eq!(
            without_owner_references(&refs, &[u("1")]),
            Some(vec![refs[1].clone()])
        );
        assert_eq!(without_owner_references(&refs, &[u("3")]), None);
        let unblocked = with_owner_references_unblocked(&refs, &[u("1"), u("2")]).unwrap();
        assert_eq!(unblocked[0]["blockOwnerDeletion"], json!(false));
        assert_eq!(unblocked[1], refs[1]);
        assert_eq!(with_owner_references_unblocked(&refs, &[u("2")]), None);
    }
}
