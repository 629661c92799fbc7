//! The sessions' networks on one engine when one is not enough: a Linux bridge takes at most
//! 1,023 ports, so the hub splits its sessions over bridge networks of `sessions_per_network`
//! containers each: `NAME`, then `NAME-2`, `NAME-3`... (all with inter-container traffic off).
//! This is the bookkeeping only (which network a new container joins, how full each is, which
//! one emptied and can go); the Docker runtime creates, finds and removes the networks.

use std::collections::HashMap;

/// The network names and how many containers each holds, by shard number (0: `NAME`).
#[derive(Debug)]
pub struct Shards {
    base: String,
    size: usize,
    /// Per shard: its network's reference once known, and containers placed on it.
    nets: Vec<Shard>,
    /// The shard each known container is on.
    of: HashMap<String, usize>,
}

#[derive(Debug, Default, Clone)]
struct Shard {
    id: Option<String>,
    members: usize,
}

/// The name of shard `k` of network `base`.
pub fn shard_name(base: &str, k: usize) -> String {
    match k {
        0 => base.to_string(),
        k => format!("{base}-{}", k + 1),
    }
}

/// Which shard of `base` a network named `name` is, if it is one.
pub fn shard_of(base: &str, name: &str) -> Option<usize> {
    if name == base {
        return Some(0);
    }
    let n: usize = name.strip_prefix(base)?.strip_prefix('-')?.parse().ok()?;
    // `NAME-1` is not a shard (the first is `NAME`), nor is a number with a leading zero.
    (n >= 2 && shard_name(base, n - 1) == name).then_some(n - 1)
}

impl Shards {
    pub fn new(base: &str, size: usize) -> Shards {
        Shards { base: base.to_string(), size: size.max(1), nets: vec![Shard::default()], of: HashMap::new() }
    }

    /// The network's name and size changed (hub.yaml): what is known of the old one goes.
    pub fn reconfigure(&mut self, base: &str, size: usize) {
        if base != self.base {
            *self = Shards::new(base, size);
        } else {
            self.size = size.max(1);
        }
    }

    pub fn name(&self, k: usize) -> String {
        shard_name(&self.base, k)
    }

    pub fn id(&self, k: usize) -> Option<&str> {
        self.nets.get(k).and_then(|s| s.id.as_deref())
    }

    /// Shard `k`'s network is `id` (found or created).
    pub fn set_id(&mut self, k: usize, id: String) {
        self.grow(k);
        self.nets[k].id = Some(id);
    }

    /// Shard `k`'s network is gone or must be looked up again.
    pub fn forget_id(&mut self, k: usize) {
        if let Some(s) = self.nets.get_mut(k) {
            s.id = None;
        }
    }

    /// Every network must be looked up again (one of them turned out ambiguous).
    pub fn forget_ids(&mut self) {
        for s in &mut self.nets {
            s.id = None;
        }
    }

    fn grow(&mut self, k: usize) {
        if self.nets.len() <= k {
            self.nets.resize(k + 1, Shard::default());
        }
    }

    /// A place for one more container: the lowest shard with room, counted at once (undo with
    /// [`Shards::unreserve`] if the container is not made).
    pub fn reserve(&mut self) -> usize {
        let k = self.nets.iter().position(|s| s.members < self.size).unwrap_or(self.nets.len());
        self.grow(k);
        self.nets[k].members += 1;
        k
    }

    pub fn unreserve(&mut self, k: usize) {
        if let Some(s) = self.nets.get_mut(k) {
            s.members = s.members.saturating_sub(1);
        }
    }

    /// Container `container` was made on shard `k` (reserved before).
    pub fn joined(&mut self, container: &str, k: usize) {
        self.of.insert(container.to_string(), k);
    }

    /// A container found on the engine (after a restart) on network `network`; counted once.
    pub fn found(&mut self, container: &str, network: &str) {
        if self.of.contains_key(container) {
            return;
        }
        if let Some(k) = shard_of(&self.base, network) {
            self.grow(k);
            self.nets[k].members += 1;
            self.of.insert(container.to_string(), k);
        }
    }

    /// Container `container` is gone. Returns the shards whose networks can go now: see
    /// [`Shards::spare`].
    pub fn left(&mut self, container: &str) -> Vec<usize> {
        let Some(k) = self.of.remove(container) else { return Vec::new() };
        if let Some(s) = self.nets.get_mut(k) {
            s.members = s.members.saturating_sub(1);
        }
        self.spare()
    }

    /// Empty shards but the first (whose network stays while the hub runs) and but the next
    /// one to be filled: an empty shard with every shard below it full stays, or each start
    /// at a full network's edge would make a network and each end remove it again (at 1,000
    /// sessions that doubled a start's time).
    fn spare(&self) -> Vec<usize> {
        let mut room_below = false;
        let mut out = Vec::new();
        for (k, s) in self.nets.iter().enumerate() {
            if k > 0 && s.members == 0 && room_below {
                out.push(k);
            }
            room_below |= s.members < self.size;
        }
        out
    }

    /// Containers on shard `k`.
    #[cfg(test)]
    fn members(&self, k: usize) -> usize {
        self.nets.get(k).map_or(0, |s| s.members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_back() {
        assert_eq!(shard_name("net", 0), "net");
        assert_eq!(shard_name("net", 1), "net-2");
        assert_eq!(shard_of("net", "net"), Some(0));
        assert_eq!(shard_of("net", "net-2"), Some(1));
        assert_eq!(shard_of("net", "net-12"), Some(11));
        for not in ["net-1", "net-02", "net-x", "nets", "net-", "other", "net--2", "net-+2"] {
            assert_eq!(shard_of("net", not), None, "{not}");
        }
    }

    #[test]
    fn the_lowest_shard_with_room_is_filled_and_emptied_shards_but_the_first_can_go() {
        let mut s = Shards::new("net", 2);
        let placed: Vec<usize> = (0..5).map(|_| s.reserve()).collect();
        assert_eq!(placed, [0, 0, 1, 1, 2]);
        for (i, k) in placed.iter().enumerate() {
            s.joined(&format!("c{i}"), *k);
        }
        assert_eq!(s.left("c0"), [0usize; 0], "the first shard's network stays");
        assert_eq!(s.reserve(), 0, "room on the first shard is used first");
        s.unreserve(0);
        assert_eq!(s.left("c2"), [0usize; 0], "shard 1 still holds c3");
        assert_eq!(s.left("c3"), [1], "shard 1 is empty, and the first has room");
        assert_eq!(s.left("c3"), [0usize; 0], "a container leaves once");
        assert_eq!(s.left("unknown"), [0usize; 0]);
        assert_eq!((s.members(0), s.members(1), s.members(2)), (1, 0, 1));
        assert_eq!(s.reserve(), 0);
        assert_eq!(s.reserve(), 1, "an emptied shard is filled again before a new one");
    }

    #[test]
    fn containers_found_after_a_restart_count_once_on_their_shard() {
        let mut s = Shards::new("net", 2);
        s.found("a", "net-3");
        s.found("a", "net-3");
        s.found("b", "net");
        s.found("x", "someone-else");
        assert_eq!((s.members(0), s.members(1), s.members(2)), (1, 0, 1));
        assert_eq!(s.reserve(), 0);
        assert_eq!(s.reserve(), 1);
        assert_eq!(s.left("a"), [2]);
    }

    #[test]
    fn an_emptied_shard_stays_while_every_shard_below_it_is_full() {
        let mut s = Shards::new("net", 1);
        for (name, k) in [("c0", 0), ("c1", 1)] {
            assert_eq!(s.reserve(), k);
            s.joined(name, k);
        }
        assert_eq!(s.left("c1"), [0usize; 0], "the next start would need it again");
        assert_eq!(s.reserve(), 1, "and gets it");
        s.joined("c2", 1);
        assert_eq!(s.left("c2"), [0usize; 0]);
        assert_eq!(s.left("c0"), [1], "room on the first: the empty one can go");
        // Two empty extra shards above a full first: one stays, the other goes.
        let mut s = Shards::new("net", 1);
        for (name, k) in [("a", 0), ("b", 1), ("c", 2)] {
            assert_eq!(s.reserve(), k);
            s.joined(name, k);
        }
        assert_eq!(s.left("b"), [0usize; 0]);
        assert_eq!(s.left("c"), [2], "one spare is enough");
    }

    #[test]
    fn a_new_size_applies_to_new_containers_and_a_new_name_starts_afresh() {
        let mut s = Shards::new("net", 1);
        assert_eq!((s.reserve(), s.reserve()), (0, 1));
        s.reconfigure("net", 3);
        assert_eq!(s.reserve(), 0);
        s.set_id(0, "id0".into());
        s.reconfigure("other", 3);
        assert_eq!((s.id(0), s.members(0), s.name(1).as_str()), (None, 0, "other-2"));
    }
}
