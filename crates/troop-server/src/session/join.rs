//! Joining a session: MSG_CONNECT introduces the newcomer and raises the acknowledgement
//! barrier; once every joined client has acknowledged, RESET (document, who typed what, where
//! everyone is) and CONSTRAINT go to each, and the barrier comes down.

use super::{Action, Barrier, ClientId, Peer, Session, PEER_CHARS};
use crate::control::EventKind;
use crate::message::{Body, Message};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::time::Instant;

impl Session {
    /// MSG_CONNECT: register the peer, introduce it, raise the barrier, clear the history.
    pub(super) fn join(&mut self, id: ClientId, name: String, dummy: i64, now: Instant) {
        let Some(conn) = self.live.get(&id) else {
            return;
        };
        // The name a client plays under is the one it joins with: while locked it must be one
        // the lock admits (a login under one name cannot join under another).
        if !self.admits(&name, Some(id)) {
            return self.drop_client(id, super::DropReason::LockedOut(name));
        }
        let peer = Peer { id, name, ip: conn.ip, port: conn.port, dummy, index: 0, connected: true, since: now };
        match self.peers.iter().position(|p| p.id == id) {
            Some(k) => self.peers[k] = peer,
            None => self.peers.push(peer),
        }
        let about = |p: &Peer| {
            Bytes::from(
                Message::new(
                    p.id,
                    Body::Connect {
                        name: p.name.clone(),
                        hostname: p.ip.to_string(),
                        port: i64::from(p.port),
                        dummy: p.dummy,
                    },
                )
                .encode(),
            )
        };
        let Some(newcomer) = self.peers.iter().find(|p| p.id == id).map(about) else {
            return;
        };
        for peer in self.peers.iter().filter(|p| p.connected) {
            self.actions.push(Action::Send(peer.id, newcomer.clone()));
            if peer.id != id {
                self.actions.push(Action::Send(id, about(peer)));
            }
        }
        self.emit(|s| s.join_event(id));
        self.barrier = Some(Barrier { acked: HashSet::new(), since: now });
        let raise = Bytes::from(Message::new(-1, Body::RequestAck { flag: 1, reply: json!(0) }).encode());
        self.broadcast(raise, None);
        self.history.clear();
        self.base = 0;
        self.history_size = 0;
    }

    /// Once every joined client has acknowledged: RESET + CONSTRAINT to each, barrier down.
    pub(super) fn finish_barrier_if_acked(&mut self) {
        let Some(b) = &self.barrier else { return };
        if !self.connected_ids().all(|id| b.acked.contains(&id)) {
            return;
        }
        self.barrier = None;
        let reset = Bytes::from(
            Message::new(
                -1,
                Body::Reset {
                    document: self.document.clone(),
                    peer_tag_loc: self.tag_ranges(),
                    peer_loc: self.locations(),
                },
            )
            .encode(),
        );
        let constraint = self.constraint.clone();
        let ids: Vec<ClientId> = self.connected_ids().collect();
        for &id in &ids {
            self.actions.push(Action::Send(id, reset.clone()));
            self.actions.push(Action::Send(id, constraint.clone()));
        }
        self.emit(|_| EventKind::Reset);
        let lower = Bytes::from(Message::new(-1, Body::RequestAck { flag: 0, reply: json!(0) }).encode());
        for id in ids {
            self.actions.push(Action::Send(id, lower.clone()));
        }
    }

    /// `[[id, count], ...]`: who typed each run of the document.
    fn tag_ranges(&self) -> Value {
        let mut runs: Vec<Value> = Vec::new();
        let mut current: Option<(u8, u64)> = None;
        for &t in &self.tags {
            match &mut current {
                Some((c, n)) if *c == t => *n += 1,
                _ => {
                    if let Some((c, n)) = current {
                        runs.push(json!([peer_id(c), n]));
                    }
                    current = Some((t, 1));
                }
            }
        }
        if let Some((c, n)) = current {
            runs.push(json!([peer_id(c), n]));
        }
        Value::Array(runs)
    }

    /// `{"id": index}` for every peer ever joined, in registration order.
    fn locations(&self) -> Value {
        let map: Map<String, Value> = self.peers.iter().map(|p| (p.id.to_string(), json!(p.index))).collect();
        Value::Object(map)
    }
}

fn peer_id(c: u8) -> i64 {
    PEER_CHARS.iter().position(|&p| p == c).map_or(-1, |k| k as i64)
}
