//! Revisions of a group's template: each distinct `spec.template` is an `apps/v1`
//! `ControllerRevision` owned by the group (as StatefulSets and DaemonSets keep theirs), named
//! `<group>-<template hash>` and numbered in the order the templates were first (or again)
//! used. Pure: the reconciler reads the revisions from its store as [`RevisionView`]s and
//! applies the [`RevisionPlan`].
//!
//! - The current template's revision is created when missing, numbered one above the
//!   highest; a template used again (say, after `kubectl rollout undo`-style edits) gets its
//!   old revision renumbered to the top, as Deployments do.
//! - History: besides the current revision, at most `revisionHistoryLimit` are kept, the
//!   newest ones; a revision an Instance still runs or a refresh still needs (`keep`) is never
//!   deleted, whatever the limit.

use std::collections::BTreeSet;

/// The longest name a revision may have: it is also the value of the Instance label
/// `autoheal.dev/revision` (a label value has at most 63 characters).
pub const MAX_REVISION_NAME: usize = 63;

/// One ControllerRevision of a group, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionView {
    /// The object name.
    pub name: String,
    /// The template hash it stores (its `autoheal.dev/template-hash` annotation).
    pub hash: String,
    /// Its `revision` number.
    pub revision: i64,
}

/// What to do with the group's revisions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RevisionPlan {
    /// Create the current template's revision with this number.
    pub create: Option<i64>,
    /// Renumber this existing revision (name, new number): the current template was used
    /// before.
    pub renumber: Option<(String, i64)>,
    /// Revisions to delete (beyond the history limit and unused), oldest first.
    pub delete: Vec<String>,
}

/// The revision name of a group's template hash: `<group>-<hash>`, the group part shortened
/// (with a short hash of the whole group name, so two long names never collide) so that the
/// name fits [`MAX_REVISION_NAME`].
pub fn revision_name(group: &str, hash: &str) -> String {
    let plain = format!("{group}-{hash}");
    if plain.len() <= MAX_REVISION_NAME {
        return plain;
    }
    let room = MAX_REVISION_NAME.saturating_sub(hash.len() + 8);
    let prefix: String = group.chars().take(room).collect();
    let prefix = prefix.trim_end_matches(['-', '.']);
    let mut name = format!("{prefix}-{:06x}-{hash}", fnv(group.as_bytes()) & 0xff_ffff);
    name.truncate(MAX_REVISION_NAME);
    name
}

/// The template hash a revision name ends with (the part after its last `-`).
pub fn hash_of(revision_name: &str) -> &str {
    revision_name
        .rsplit_once('-')
        .map_or(revision_name, |(_, h)| h)
}

/// FNV-1a over bytes.
pub fn fnv(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Plans the group's revisions: the current template's (`current`, a hash) exists and is the
/// newest; at most `limit` others are kept, never one whose hash is in `keep` (run by an
/// Instance, or needed by a refresh).
pub fn plan(
    revisions: &[RevisionView],
    current: &str,
    keep: &BTreeSet<String>,
    limit: i32,
) -> RevisionPlan {
    let mut plan = RevisionPlan::default();
    let highest = revisions.iter().map(|r| r.revision).max().unwrap_or(0);
    let mine = revisions
        .iter()
        .filter(|r| r.hash == current)
        .max_by_key(|r| r.revision);
    match mine {
        None => plan.create = Some(highest.saturating_add(1)),
        Some(r) if r.revision < highest => {
            plan.renumber = Some((r.name.clone(), highest.saturating_add(1)));
        }
        Some(_) => {}
    }
    let mut others: Vec<&RevisionView> = revisions.iter().filter(|r| r.hash != current).collect();
    // Newest first: the first `limit` are kept.
    others.sort_by(|a, b| (b.revision, &b.name).cmp(&(a.revision, &a.name)));
    let limit = usize::try_from(limit.max(0)).unwrap_or(0);
    let mut delete: Vec<&RevisionView> = others
        .into_iter()
        .skip(limit)
        .filter(|r| !keep.contains(&r.hash))
        .collect();
    delete.reverse();
    plan.delete = delete.into_iter().map(|r| r.name.clone()).collect();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(hash: &str, n: i64) -> RevisionView {
        RevisionView {
            name: revision_name("web", hash),
            hash: hash.into(),
            revision: n,
        }
    }

    fn keep(hashes: &[&str]) -> BTreeSet<String> {
        hashes.iter().map(|h| h.to_string()).collect()
    }

    #[test]
    fn the_first_template_becomes_revision_one() {
        let p = plan(&[], "aaaa", &keep(&[]), 10);
        assert_eq!(p.create, Some(1));
        assert!(p.renumber.is_none() && p.delete.is_empty());
    }

    #[test]
    fn a_new_template_is_numbered_above_the_highest() {
        let p = plan(&[rev("a", 1), rev("b", 4)], "c", &keep(&[]), 10);
        assert_eq!(p.create, Some(5));
    }

    #[test]
    fn the_current_revision_as_newest_needs_nothing() {
        let p = plan(&[rev("a", 1), rev("b", 2)], "b", &keep(&[]), 10);
        assert_eq!(p, RevisionPlan::default());
    }

    #[test]
    fn a_template_used_again_is_renumbered_to_the_top() {
        let p = plan(&[rev("a", 1), rev("b", 2)], "a", &keep(&[]), 10);
        assert_eq!(p.create, None);
        assert_eq!(p.renumber, Some((revision_name("web", "a"), 3)));
    }

    #[test]
    fn history_beyond_the_limit_is_deleted_oldest_first_unless_kept() {
        let revs: Vec<RevisionView> = (1..=6).map(|n| rev(&format!("h{n}"), n)).collect();
        // Current h6; limit 2 keeps h5, h4; h1..h3 go, but h2 is still run by an Instance.
        let p = plan(&revs, "h6", &keep(&["h2"]), 2);
        assert_eq!(
            p.delete,
            vec![revision_name("web", "h1"), revision_name("web", "h3")]
        );
        // Limit 0 keeps only the current one (and the kept ones).
        let p = plan(&revs, "h6", &keep(&[]), 0);
        assert_eq!(p.delete.len(), 5);
        assert!(!p.delete.contains(&revision_name("web", "h6")));
    }

    #[test]
    fn revision_names_fit_a_label_value_and_end_with_the_hash() {
        assert_eq!(revision_name("web", "0123456789"), "web-0123456789");
        let long = "a".repeat(57);
        let n = revision_name(&long, "0123456789");
        assert!(n.len() <= MAX_REVISION_NAME, "{n}");
        assert_eq!(hash_of(&n), "0123456789");
        let other = format!("{}b", "a".repeat(56));
        assert_ne!(n, revision_name(&other, "0123456789"), "no collision");
        assert_eq!(hash_of("web-abc"), "abc");
    }
}
