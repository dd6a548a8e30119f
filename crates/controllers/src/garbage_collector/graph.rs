//! The garbage collector's dependency graph: uid -> node, each node holding only the
//! metadata the collector reasons about (kind, namespace, name, ownerReferences, deletion
//! state) and the uids of its dependents. Whole objects are never kept, so the graph costs a
//! few hundred bytes per object whatever the kind.
//!
//! Applying an observed change is pure: it updates the graph and returns which uids the
//! collector should look at next ([`Followups`]), as upstream's graph builder does.
//! A node exists while it is observed (its informer has it) or while something still names
//! it as owner ("virtual": known only from an ownerReference).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Object uids are shared between the node map and dependents sets.
pub type Uid = Arc<str>;

/// apiVersion + kind, interned: many nodes share a handful of kinds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KindRef {
    pub api_version: String,
    pub kind: String,
}

impl KindRef {
    /// The API group (empty for the core group), whatever the version.
    pub fn group(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map_or("", |(group, _version)| group)
    }

    /// Same group and kind; versions of one group serve the same objects.
    pub fn same_kind(&self, other: &KindRef) -> bool {
        self.kind == other.kind && self.group() == other.group()
    }
}

/// One ownerReference, as much of it as the collector needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerLink {
    pub uid: Uid,
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub block_owner_deletion: bool,
}

/// What a source (informer or metadata watch) saw of one object.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub uid: Uid,
    pub kind: KindRef,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
    pub owners: Vec<OwnerLink>,
    /// deletionTimestamp is set.
    pub deleting: bool,
    pub orphan_finalizer: bool,
    pub foreground_finalizer: bool,
}

/// Where an object lives and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub kind: Arc<KindRef>,
    pub namespace: Arc<str>,
    pub name: Box<str>,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub identity: Identity,
    pub owners: Vec<OwnerLink>,
    pub dependents: HashSet<Uid>,
    /// Seen by a source; false for a node known only from ownerReferences.
    pub observed: bool,
    /// A watch reported it deleted (uids are never reused, so it is gone for good).
    pub gone: bool,
    pub deleting: bool,
    pub orphan_finalizer: bool,
    pub foreground_finalizer: bool,
}

impl Node {
    /// Being deleted in the foreground: waits for its blocking dependents.
    pub fn deleting_dependents(&self) -> bool {
        self.deleting && self.foreground_finalizer
    }

    /// Being deleted with orphan propagation: its dependents must lose their references.
    pub fn orphaning(&self) -> bool {
        self.deleting && self.orphan_finalizer
    }
}

/// Uids to look at after a change.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Followups {
    /// Check whether these should be deleted (or, if deleting in the foreground, whether
    /// they may finish), or, for virtual nodes, whether they exist.
    pub attempt_delete: Vec<Uid>,
    /// Owners being deleted with orphan propagation.
    pub attempt_orphan: Vec<Uid>,
    /// Dependents naming (by uid) an owner that lives in another namespace: upstream
    /// reports each with an `OwnerRefInvalidNamespace` warning (the owner cannot exist in
    /// the dependent's namespace, so the dependent is also checked for deletion).
    pub invalid_namespace: Vec<InvalidOwnerNamespace>,
}

/// One dependent whose ownerReference points across namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidOwnerNamespace {
    pub dependent_uid: Uid,
    pub dependent: Identity,
    pub owner: OwnerLink,
}

impl Followups {
    fn delete(&mut self, uid: &Uid) {
        if !self.attempt_delete.contains(uid) {
            self.attempt_delete.push(uid.clone());
        }
    }
}

#[derive(Default)]
pub struct Graph {
    nodes: HashMap<Uid, Node>,
    kinds: HashSet<Arc<KindRef>>,
    namespaces: HashSet<Arc<str>>,
}

impl Graph {
    pub fn new() -> Self {
        Graph::default()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    fn intern_kind(&mut self, kind: KindRef) -> Arc<KindRef> {
        if let Some(k) = self.kinds.get(&kind) {
            return k.clone();
        }
        let k = Arc::new(kind);
        self.kinds.insert(k.clone());
        k
    }

    fn intern_namespace(&mut self, ns: &str) -> Arc<str> {
        if let Some(n) = self.namespaces.get(ns) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(ns);
        self.namespaces.insert(n.clone());
        n
    }

    /// An object was created or changed.
    pub fn observe(&mut self, seen: Observed) -> Followups {
        let mut f = Followups::default();
        let identity = Identity {
            kind: self.intern_kind(seen.kind.clone()),
            namespace: self.intern_namespace(&seen.namespace),
            name: seen.name.clone().into_boxed_str(),
        };
        let uid = seen.uid.clone();
        // A node known only from ownerReferences is now seen: dependents in another
        // namespace named an owner that cannot be theirs (the bad child, good parent order).
        if let Some(node) = self.nodes.get(&uid) {
            if !node.observed && !seen.namespace.is_empty() {
                for dep in &node.dependents {
                    let Some(d) = self.nodes.get(dep) else {
                        continue;
                    };
                    if *d.identity.namespace == *seen.namespace {
                        continue;
                    }
                    f.delete(dep);
                    if let Some(link) = d.owners.iter().find(|o| o.uid == uid) {
                        f.invalid_namespace.push(InvalidOwnerNamespace {
                            dependent_uid: dep.clone(),
                            dependent: d.identity.clone(),
                            owner: link.clone(),
                        });
                    }
                }
            }
        }
        let (old_owners, was_deleting_dependents, was_orphaning) = match self.nodes.get_mut(&uid) {
            Some(node) => {
                let before = (
                    std::mem::replace(&mut node.owners, seen.owners.clone()),
                    node.observed && node.deleting_dependents(),
                    node.observed && node.orphaning(),
                );
                node.identity = identity;
                node.observed = true;
                node.gone = false;
                node.deleting = seen.deleting;
                node.orphan_finalizer = seen.orphan_finalizer;
                node.foreground_finalizer = seen.foreground_finalizer;
                before
            }
            None => {
                self.nodes.insert(
                    uid.clone(),
                    Node {
                        identity,
                        owners: seen.owners.clone(),
                        dependents: HashSet::new(),
                        observed: true,
                        gone: false,
                        deleting: seen.deleting,
                        orphan_finalizer: seen.orphan_finalizer,
                        foreground_finalizer: seen.foreground_finalizer,
                    },
                );
                (Vec::new(), false, false)
            }
        };

        // Owners no longer named: unlink; a foreground owner may now be unblocked.
        for old in &old_owners {
            let still = seen.owners.iter().find(|o| o.uid == old.uid);
            let unblocked = match still {
                None => {
                    self.unlink(&old.uid, &uid);
                    true
                }
                Some(now) => old.block_owner_deletion && !now.block_owner_deletion,
            };
            if unblocked {
                if let Some(owner) = self.nodes.get(&old.uid) {
                    if owner.deleting_dependents() {
                        f.delete(&old.uid);
                    }
                }
            }
        }
        // Owners newly named: link, creating virtual owners to verify.
        for owner in &seen.owners {
            if old_owners.iter().any(|o| o.uid == owner.uid) {
                continue;
            }
            match self.nodes.get_mut(&owner.uid) {
                Some(node) => {
                    node.dependents.insert(uid.clone());
                    // Gone, being deleted in the foreground, or only virtual: this dependent
                    // must be checked now rather than wait for an owner event.
                    if node.gone || node.deleting_dependents() {
                        f.delete(&uid);
                    }
                    // A namespaced owner seen in another namespace cannot be this
                    // object's owner (cluster-scoped owners may own anything).
                    if node.observed
                        && !node.identity.namespace.is_empty()
                        && *node.identity.namespace != *seen.namespace
                    {
                        f.delete(&uid);
                        f.invalid_namespace.push(InvalidOwnerNamespace {
                            dependent_uid: uid.clone(),
                            dependent: self.nodes[&uid].identity.clone(),
                            owner: owner.clone(),
                        });
                    }
                }
                None => {
                    let identity = Identity {
                        kind: self.intern_kind(KindRef {
                            api_version: owner.api_version.clone(),
                            kind: owner.kind.clone(),
                        }),
                        namespace: self.intern_namespace(&seen.namespace),
                        name: owner.name.clone().into_boxed_str(),
                    };
                    let mut dependents = HashSet::new();
                    dependents.insert(uid.clone());
                    self.nodes.insert(
                        owner.uid.clone(),
                        Node {
                            identity,
                            owners: Vec::new(),
                            dependents,
                            observed: false,
                            gone: false,
                            deleting: false,
                            orphan_finalizer: false,
                            foreground_finalizer: false,
                        },
                    );
                    f.delete(&owner.uid);
                }
            }
        }

        let node = &self.nodes[&uid];
        if node.deleting_dependents() && !was_deleting_dependents {
            f.delete(&uid);
            for dep in &node.dependents {
                f.delete(dep);
            }
        }
        if node.orphaning() && !was_orphaning {
            f.attempt_orphan.push(uid.clone());
        }
        f
    }

    /// An object was deleted.
    pub fn forget(&mut self, uid: &str) -> Followups {
        let mut f = Followups::default();
        let uid: Uid = match self.nodes.get_key_value(uid) {
            Some((k, _)) => k.clone(),
            None => return f,
        };
        let node_owners = match self.nodes.get_mut(&uid) {
            Some(node) => std::mem::take(&mut node.owners),
            None => return f,
        };
        for owner in &node_owners {
            self.unlink(&owner.uid, &uid);
            if let Some(o) = self.nodes.get(&owner.uid) {
                if o.deleting_dependents() {
                    f.delete(&owner.uid);
                }
            }
        }
        match self.nodes.get_mut(&uid) {
            Some(node) if !node.dependents.is_empty() => {
                // Its dependents lost an owner: each must be checked. The node stays,
                // virtual and known gone, until no dependent names it.
                node.observed = false;
                node.gone = true;
                node.deleting = false;
                node.orphan_finalizer = false;
                node.foreground_finalizer = false;
                for dep in &node.dependents {
                    f.delete(dep);
                }
            }
            _ => {
                self.nodes.remove(&uid);
            }
        }
        f
    }

    /// A virtual node was looked up and does not exist: its dependents lost an owner.
    pub fn owner_absent(&mut self, uid: &str) -> Followups {
        let mut f = Followups::default();
        if let Some(node) = self.nodes.get_mut(uid) {
            if !node.observed {
                node.gone = true;
                for dep in &node.dependents {
                    f.delete(dep);
                }
            }
        }
        f
    }

    /// A source relisted kind `kind`: `present` is everything of that kind now.
    pub fn resync(&mut self, kind: &KindRef, present: Vec<Observed>) -> Followups {
        let keep: HashSet<&str> = present.iter().map(|o| &*o.uid).collect();
        let vanished: Vec<Uid> = self
            .nodes
            .iter()
            .filter(|(uid, n)| {
                n.observed && n.identity.kind.same_kind(kind) && !keep.contains(&***uid)
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        let mut f = Followups::default();
        for uid in vanished {
            merge(&mut f, self.forget(&uid));
        }
        for seen in present {
            merge(&mut f, self.observe(seen));
        }
        f
    }

    /// Dependents whose reference to `owner` has blockOwnerDeletion, with whether each is
    /// itself deleting its dependents in the foreground.
    pub fn blocking_dependents(&self, owner: &str) -> Vec<(Uid, bool)> {
        let Some(node) = self.nodes.get(owner) else {
            return Vec::new();
        };
        let mut out: Vec<(Uid, bool)> = node
            .dependents
            .iter()
            .filter_map(|dep| {
                let d = self.nodes.get(dep)?;
                let blocks = d
                    .owners
                    .iter()
                    .any(|o| &*o.uid == owner && o.block_owner_deletion);
                blocks.then(|| (dep.clone(), d.deleting_dependents()))
            })
            .collect();
        out.sort();
        out
    }

    /// Dependents of `owner` with their identities.
    pub fn dependents(&self, owner: &str) -> Vec<(Uid, Identity)> {
        let Some(node) = self.nodes.get(owner) else {
            return Vec::new();
        };
        let mut out: Vec<(Uid, Identity)> = node
            .dependents
            .iter()
            .filter_map(|dep| Some((dep.clone(), self.nodes.get(dep)?.identity.clone())))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn unlink(&mut self, owner: &str, dependent: &str) {
        let drop_owner = match self.nodes.get_mut(owner) {
            Some(node) => {
                node.dependents.remove(dependent);
                !node.observed && node.dependents.is_empty()
            }
            None => false,
        };
        if drop_owner {
            self.nodes.remove(owner);
        }
    }
}

fn merge(into: &mut Followups, more: Followups) {
    for uid in more.attempt_delete {
        into.delete(&uid);
    }
    for uid in more.attempt_orphan {
        if !into.attempt_orphan.contains(&uid) {
            into.attempt_orphan.push(uid);
        }
    }
    into.invalid_namespace.extend(more.invalid_namespace);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(s: &str) -> Uid {
        Arc::from(s)
    }

    fn cm(u: &str, owners: &[(&str, bool)]) -> Observed {
        Observed {
            uid: uid(u),
            kind: KindRef {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
            },
            namespace: "default".into(),
            name: format!("cm-{u}"),
            owners: owners
                .iter()
                .map(|(o, block)| OwnerLink {
                    uid: uid(o),
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: format!("cm-{o}"),
                    block_owner_deletion: *block,
                })
                .collect(),
            deleting: false,
            orphan_finalizer: false,
            foreground_finalizer: false,
        }
    }

    fn deleting(mut o: Observed, foreground: bool, orphan: bool) -> Observed {
        o.deleting = true;
        o.foreground_finalizer = foreground;
        o.orphan_finalizer = orphan;
        o
    }

    fn ids(v: &[Uid]) -> Vec<&str> {
        let mut out: Vec<&str> = v.iter().map(|u| &**u).collect();
        out.sort();
        out
    }

    /// Each case: a sequence of changes; the follow-ups of the last one.
    #[derive(Debug)]
    enum Step {
        See(Observed),
        Gone(&'static str),
        Absent(&'static str),
    }

    fn run(steps: Vec<Step>) -> (Graph, Followups) {
        let mut g = Graph::new();
        let mut last = Followups::default();
        for s in steps {
            last = match s {
                Step::See(o) => g.observe(o),
                Step::Gone(u) => g.forget(u),
                Step::Absent(u) => g.owner_absent(u),
            };
        }
        (g, last)
    }

    #[test]
    fn followups_of_changes() {
        use Step::*;
        let cases: Vec<(&str, Vec<Step>, Vec<&str>, Vec<&str>)> = vec![
            (
                "object without owners: nothing",
                vec![See(cm("a", &[]))],
                vec![],
                vec![],
            ),
            (
                "dependent of an unseen owner: verify the virtual owner",
                vec![See(cm("d", &[("o", false)]))],
                vec!["o"],
                vec![],
            ),
            (
                "dependent of a seen owner: nothing",
                vec![See(cm("o", &[])), See(cm("d", &[("o", false)]))],
                vec![],
                vec![],
            ),
            (
                "owner deleted: its dependents are checked",
                vec![
                    See(cm("o", &[])),
                    See(cm("d1", &[("o", false)])),
                    See(cm("d2", &[("o", true)])),
                    Gone("o"),
                ],
                vec!["d1", "d2"],
                vec![],
            ),
            (
                "owner starts foreground deletion: itself and dependents",
                vec![
                    See(cm("o", &[])),
                    See(cm("d", &[("o", true)])),
                    See(deleting(cm("o", &[]), true, false)),
                ],
                vec!["d", "o"],
                vec![],
            ),
            (
                "foreground owner seen again unchanged: nothing new",
                vec![
                    See(cm("o", &[])),
                    See(deleting(cm("o", &[]), true, false)),
                    See(deleting(cm("o", &[]), true, false)),
                ],
                vec![],
                vec![],
            ),
            (
                "owner starts orphan deletion",
                vec![See(cm("o", &[])), See(deleting(cm("o", &[]), false, true))],
                vec![],
                vec!["o"],
            ),
            (
                "blocking dependent deleted: foreground owner rechecked",
                vec![
                    See(cm("o", &[])),
                    See(cm("d", &[("o", true)])),
                    See(deleting(cm("o", &[]), true, false)),
                    Gone("d"),
                ],
                vec!["o"],
                vec![],
            ),
            (
                "dependent drops its reference: foreground owner rechecked",
                vec![
                    See(cm("o", &[])),
                    See(cm("d", &[("o", true)])),
                    See(deleting(cm("o", &[]), true, false)),
                    See(cm("d", &[])),
                ],
                vec!["o"],
                vec![],
            ),
            (
                "dependent unblocks: foreground owner rechecked",
                vec![
                    See(cm("o", &[])),
                    See(cm("d", &[("o", true)])),
                    See(deleting(cm("o", &[]), true, false)),
                    See(cm("d", &[("o", false)])),
                ],
                vec!["o"],
                vec![],
            ),
            (
                "new dependent of a foreground owner is checked at once",
                vec![
                    See(cm("o", &[])),
                    See(deleting(cm("o", &[]), true, false)),
                    See(cm("d", &[("o", true)])),
                ],
                vec!["d"],
                vec![],
            ),
            (
                "virtual owner found absent: dependents checked",
                vec![See(cm("d", &[("o", false)])), Absent("o")],
                vec!["d"],
                vec![],
            ),
            (
                "new dependent of an owner known gone is checked at once",
                vec![
                    See(cm("o", &[])),
                    See(cm("d1", &[("o", false)])),
                    Gone("o"),
                    See(cm("d2", &[("o", false)])),
                ],
                vec!["d2"],
                vec![],
            ),
        ];
        for (name, steps, want_delete, want_orphan) in cases {
            let (_, f) = run(steps);
            assert_eq!(ids(&f.attempt_delete), want_delete, "{name}");
            assert_eq!(ids(&f.attempt_orphan), want_orphan, "{name}");
        }
    }

    #[test]
    fn virtual_nodes_live_only_while_named() {
        let mut g = Graph::new();
        g.observe(cm("d", &[("o", false)]));
        assert!(g.get("o").is_some_and(|n| !n.observed));
        g.forget("d");
        assert!(g.get("o").is_none(), "no dependent names it any more");
        assert!(g.is_empty());
    }

    #[test]
    fn a_deleted_owner_with_dependents_stays_virtual_and_gone() {
        let mut g = Graph::new();
        g.observe(cm("o", &[]));
        g.observe(cm("d", &[("o", false)]));
        g.forget("o");
        let o = g.get("o").expect("still named by d");
        assert!(!o.observed && o.gone);
        g.forget("d");
        assert!(g.is_empty());
    }

    #[test]
    fn blocking_dependents_are_those_with_block_owner_deletion() {
        let mut g = Graph::new();
        g.observe(cm("o", &[]));
        g.observe(cm("a", &[("o", true)]));
        g.observe(cm("b", &[("o", false)]));
        g.observe(deleting(cm("c", &[("o", true)]), true, false));
        let blocking = g.blocking_dependents("o");
        assert_eq!(blocking, vec![(uid("a"), false), (uid("c"), true)]);
        assert_eq!(g.dependents("o").len(), 3);
    }

    #[test]
    fn resync_forgets_what_vanished_and_keeps_other_kinds() {
        let mut g = Graph::new();
        g.observe(cm("o", &[]));
        g.observe(cm("d", &[("o", false)]));
        let mut secret = cm("s", &[]);
        secret.kind.kind = "Secret".into();
        g.observe(secret);
        let kind = KindRef {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
        };
        let f = g.resync(&kind, vec![cm("d", &[("o", false)])]);
        assert_eq!(
            ids(&f.attempt_delete),
            vec!["d"],
            "o vanished during the gap"
        );
        assert!(g.get("s").is_some_and(|n| n.observed));
        assert!(g.get("o").is_some_and(|n| n.gone));
    }

    #[test]
    fn owners_in_another_namespace_are_reported_in_either_order() {
        let in_ns = |o: Observed, ns: &str| Observed {
            namespace: ns.into(),
            ..o
        };
        // (steps, dependents reported)
        let cases: Vec<(Vec<Step>, Vec<&str>)> = vec![
            // Good parent first, then the bad child.
            (
                vec![
                    Step::See(in_ns(cm("a", &[]), "other")),
                    Step::See(cm("b", &[("a", false)])),
                ],
                vec!["b"],
            ),
            // Bad child first (a virtual owner), then the parent is seen elsewhere.
            (
                vec![
                    Step::See(cm("b", &[("a", false)])),
                    Step::See(in_ns(cm("a", &[]), "other")),
                ],
                vec!["b"],
            ),
            // Same namespace: nothing to report.
            (
                vec![Step::See(cm("a", &[])), Step::See(cm("b", &[("a", false)]))],
                vec![],
            ),
            (
                vec![Step::See(cm("b", &[("a", false)])), Step::See(cm("a", &[]))],
                vec![],
            ),
            // A cluster-scoped owner may own objects in any namespace.
            (
                vec![
                    Step::See(in_ns(cm("a", &[]), "")),
                    Step::See(cm("b", &[("a", false)])),
                ],
                vec![],
            ),
        ];
        for (steps, want) in cases {
            let desc = format!("{steps:?}");
            let (_, f) = run(steps);
            let reported: Vec<&str> = f
                .invalid_namespace
                .iter()
                .map(|r| &*r.dependent_uid)
                .collect();
            assert_eq!(reported, want, "{desc}");
            for r in &f.invalid_namespace {
                assert_eq!(&*r.owner.uid, "a");
                assert_eq!(&*r.dependent.namespace, "default");
                assert!(f.attempt_delete.contains(&r.dependent_uid), "{desc}");
            }
        }
    }
}
