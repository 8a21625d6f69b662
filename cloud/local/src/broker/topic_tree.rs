//! The subscription table: a trie over topic levels that answers "who is
//! subscribed to a filter matching this topic" without scanning every
//! subscription. Pure data structure; no locks, no I/O.
//!
//! Matching follows AWS IoT Core, which differs from MQTT 3.1.1 in one place:
//! `a/#` matches `a/b` and `a/` but **not** `a` ("AWS IoT differences from MQTT
//! specifications" in the AWS IoT Core Developer Guide). As in MQTT, a filter
//! whose first level is a wildcard does not match topics starting with `$`.

use std::collections::HashMap;

/// One subscription table, generic over the subscriber key so it can be tested
/// with plain values. Keys are compared with `PartialEq`.
#[derive(Debug)]
pub(crate) struct SubscriptionTree<K> {
    root: Node<K>,
    len: usize,
}

#[derive(Debug)]
struct Node<K> {
    /// Children by exact level.
    children: HashMap<Box<str>, Node<K>>,
    /// The `+` child.
    plus: Option<Box<Node<K>>>,
    /// Subscribers whose filter ends at this node.
    exact: Vec<(K, u8)>,
    /// Subscribers whose filter is this node's path followed by `/#`.
    hash: Vec<(K, u8)>,
}

impl<K> Default for Node<K> {
    fn default() -> Self {
        Node { children: HashMap::new(), plus: None, exact: Vec::new(), hash: Vec::new() }
    }
}

impl<K> Node<K> {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.plus.is_none() && self.exact.is_empty() && self.hash.is_empty()
    }
}

impl<K: Clone + PartialEq> Default for SubscriptionTree<K> {
    fn default() -> Self {
        SubscriptionTree { root: Node::default(), len: 0 }
    }
}

impl<K: Clone + PartialEq> SubscriptionTree<K> {
    /// An empty table.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Number of (subscriber, filter) entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Adds `key`'s subscription to `filter`, or replaces its QoS if it already
    /// has one (MQTT: a repeated SUBSCRIBE replaces the subscription). The
    /// filter must already be valid. Returns true if the entry is new.
    pub(crate) fn insert(&mut self, filter: &str, key: K, qos: u8) -> bool {
        let mut node = &mut self.root;
        let mut levels = filter.split('/').peekable();
        while let Some(level) = levels.next() {
            if level == "#" && levels.peek().is_none() {
                return Self::upsert(&mut node.hash, key, qos, &mut self.len);
            }
            node = if level == "+" {
                node.plus.get_or_insert_with(Default::default)
            } else {
                node.children.entry(level.into()).or_default()
            };
        }
        Self::upsert(&mut node.exact, key, qos, &mut self.len)
    }

    fn upsert(list: &mut Vec<(K, u8)>, key: K, qos: u8, len: &mut usize) -> bool {
        if let Some(entry) = list.iter_mut().find(|(k, _)| *k == key) {
            entry.1 = qos;
            false
        } else {
            list.push((key, qos));
            *len += 1;
            true
        }
    }

    /// Removes `key`'s subscription to `filter`; returns whether it existed.
    /// Empty branches are pruned so memory follows the live subscriptions.
    pub(crate) fn remove(&mut self, filter: &str, key: &K) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        let removed = Self::remove_in(&mut self.root, &levels, key);
        if removed {
            self.len -= 1;
        }
        removed
    }

    fn remove_in(node: &mut Node<K>, levels: &[&str], key: &K) -> bool {
        let Some((first, rest)) = levels.split_first() else {
            return Self::take(&mut node.exact, key);
        };
        if *first == "#" && rest.is_empty() {
            return Self::take(&mut node.hash, key);
        }
        if *first == "+" {
            let Some(child) = node.plus.as_mut() else { return false };
            let removed = Self::remove_in(child, rest, key);
            if child.is_empty() {
                node.plus = None;
            }
            removed
        } else {
            let Some(child) = node.children.get_mut(*first) else { return false };
            let removed = Self::remove_in(child, rest, key);
            if child.is_empty() {
                node.children.remove(*first);
            }
            removed
        }
    }

    fn take(list: &mut Vec<(K, u8)>, key: &K) -> bool {
        match list.iter().position(|(k, _)| k == key) {
            Some(i) => {
                list.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Calls `f(key, granted_qos)` for every subscription whose filter matches
    /// `topic`. A subscriber with several matching filters is reported once per
    /// filter; callers deduplicate.
    pub(crate) fn for_each_match(&self, topic: &str, mut f: impl FnMut(&K, u8)) {
        let dollar = topic.starts_with('$');
        let mut levels = topic.split('/');
        Self::walk(&self.root, &mut levels, true, dollar, &mut f);
    }

    fn walk<'t>(
        node: &Node<K>,
        levels: &mut (impl Iterator<Item = &'t str> + Clone),
        first: bool,
        dollar: bool,
        f: &mut impl FnMut(&K, u8),
    ) {
        let Some(level) = levels.next() else {
            for (k, q) in &node.exact {
                f(k, *q);
            }
            return;
        };
        // A wildcard in the first level never matches a `$` topic.
        let wildcards = !(first && dollar);
        if wildcards {
            // `#` here matches this level and everything below (at least one level).
            for (k, q) in &node.hash {
                f(k, *q);
            }
        }
        if let Some(child) = node.children.get(level) {
            Self::walk(child, &mut levels.clone(), false, dollar, f);
        }
        if wildcards && let Some(plus) = &node.plus {
            Self::walk(plus, &mut levels.clone(), false, dollar, f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(tree: &SubscriptionTree<u32>, topic: &str) -> Vec<(u32, u8)> {
        let mut v = Vec::new();
        tree.for_each_match(topic, |k, q| v.push((*k, q)));
        v.sort();
        v
    }

    /// (filter, topic, matches) under IoT Core's rules.
    const CASES: &[(&str, &str, bool)] = &[
        ("a/b", "a/b", true),
        ("a/b", "a/c", false),
        ("a/b", "a/b/c", false),
        ("a/+", "a/b", true),
        ("a/+", "a/", true),
        ("a/+", "a", false),
        ("a/+", "a/b/c", false),
        ("+/+", "a/b", true),
        ("+", "a", true),
        ("+", "/a", false),
        ("+/a", "/a", true),
        ("a/#", "a/b", true),
        ("a/#", "a/b/c/d", true),
        ("a/#", "a/", true),
        ("a/#", "a", false),
        ("#", "a", true),
        ("#", "a/b/c", true),
        ("#", "$aws/things/t/shadow/update", false),
        ("+/things/t/shadow/update", "$aws/things/t/shadow/update", false),
        ("$aws/things/+/shadow/#", "$aws/things/t/shadow/update/accepted", true),
        ("$aws/things/t/shadow/update", "$aws/things/t/shadow/update", true),
        ("a/+/c/#", "a/b/c/d", true),
        ("a/+/c/#", "a/b/x/d", false),
        ("a//b", "a//b", true),
        ("a/+/b", "a//b", true),
    ];

    #[test]
    fn matching_follows_iot_core_rules() {
        for (filter, topic, expected) in CASES {
            let mut tree = SubscriptionTree::new();
            tree.insert(filter, 1u32, 1);
            let got = !matches(&tree, topic).is_empty();
            assert_eq!(got, *expected, "filter {filter:?} topic {topic:?}");
        }
    }

    #[test]
    fn matching_agrees_with_cloud_api_topic_matches() {
        // One source of truth: the broker's trie and cloud-api's matcher must agree.
        for (filter, topic, _) in CASES {
            let mut tree = SubscriptionTree::new();
            tree.insert(filter, 1u32, 1);
            let trie = !matches(&tree, topic).is_empty();
            let api = cloud_api::topic::matches(filter, topic);
            assert_eq!(trie, api, "filter {filter:?} topic {topic:?}: trie {trie}, cloud_api {api}");
        }
    }

    #[test]
    fn every_matching_filter_reports_its_subscriber() {
        let mut tree = SubscriptionTree::new();
        tree.insert("a/b", 1u32, 0);
        tree.insert("a/+", 1, 1);
        tree.insert("#", 2, 1);
        tree.insert("a/c", 3, 1);
        assert_eq!(matches(&tree, "a/b"), vec![(1, 0), (1, 1), (2, 1)]);
        assert_eq!(tree.len(), 4);
    }

    #[test]
    fn resubscribing_replaces_the_qos() {
        let mut tree = SubscriptionTree::new();
        assert!(tree.insert("a/b", 1u32, 0));
        assert!(!tree.insert("a/b", 1u32, 1));
        assert_eq!(matches(&tree, "a/b"), vec![(1, 1)]);
        assert_eq!(tree.len(), 1);
    }

    #[test]
    fn removing_prunes_branches_and_keeps_others() {
        let mut tree = SubscriptionTree::new();
        tree.insert("a/+/c", 1u32, 1);
        tree.insert("a/#", 2, 1);
        tree.insert("x/y", 1, 1);
        assert!(tree.remove("a/+/c", &1));
        assert!(!tree.remove("a/+/c", &1));
        assert!(!tree.remove("a/#", &1));
        assert_eq!(matches(&tree, "a/b/c"), vec![(2, 1)]);
        assert!(tree.remove("a/#", &2));
        assert!(tree.remove("x/y", &1));
        assert_eq!(tree.len(), 0);
        assert!(tree.root.is_empty());
    }
}
