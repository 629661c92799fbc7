//! Statistics per performer, live and archived: characters typed and deleted, evaluations,
//! active seconds (the seconds in which they typed or ran something) and their share of the
//! code (the characters of the document they wrote, as Troop's own client charts it). Folded
//! from the viewers' messages, so the hub's live follower and an archived timeline count the
//! same way. Performers are told apart by name (a performer who leaves and comes back keeps
//! adding to their line).

use super::doc::LiveDoc;
use super::wire::LiveMessage;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use troop_server::ot::Operation;
use troop_server::session::ClientId;
use utoipa::ToSchema;

/// One performer's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PerformerStats {
    /// Characters inserted (Unicode code points).
    pub typed: u64,
    /// Characters deleted.
    pub deleted: u64,
    /// Code runs (blocks and lines).
    pub evaluations: u64,
    /// Seconds in which they typed or ran code.
    pub active_s: u64,
    /// Their part of the document's characters now, 0 to 1 (text whose author the hub never
    /// saw, from before it followed the session, counts in the whole but for nobody).
    pub share: f64,
}

/// Statistics by performer name.
pub type StatsByName = BTreeMap<String, PerformerStats>;

/// The running tally of one session.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    names: HashMap<ClientId, String>,
    tallies: BTreeMap<String, Tally>,
    /// Characters typed and deleted by everyone, for Prometheus.
    pub typed: u64,
    pub deleted: u64,
}

#[derive(Debug, Clone, Default)]
struct Tally {
    figures: PerformerStats,
    last_second: Option<u64>,
}

impl Tally {
    fn active_at(&mut self, time_ms: u64) {
        let second = time_ms / 1000;
        if self.last_second != Some(second) {
            self.last_second = Some(second);
            self.figures.active_s += 1;
        }
    }
}

impl Stats {
    /// Counts one message (snapshots only teach names).
    pub fn observe(&mut self, message: &LiveMessage) {
        match message {
            LiveMessage::Snapshot(s) => {
                for p in &s.performers {
                    self.name(p.id, &p.name);
                }
            }
            LiveMessage::Join { id, name, .. } => self.name(*id, name),
            LiveMessage::Operation { author, ops, time_ms, .. } => {
                let (typed, deleted) = typed_and_deleted(ops);
                self.typed += typed;
                self.deleted += deleted;
                if let Some(t) = self.tally(*author) {
                    t.figures.typed += typed;
                    t.figures.deleted += deleted;
                    t.active_at(*time_ms);
                }
            }
            LiveMessage::Evaluate { author, time_ms, .. } => {
                if let Some(t) = self.tally(*author) {
                    t.figures.evaluations += 1;
                    t.active_at(*time_ms);
                }
            }
            _ => {}
        }
    }

    fn name(&mut self, id: ClientId, name: &str) {
        self.names.insert(id, name.to_string());
        self.tallies.entry(name.to_string()).or_default();
    }

    fn tally(&mut self, id: ClientId) -> Option<&mut Tally> {
        let name = self.names.get(&id)?;
        self.tallies.get_mut(name)
    }

    /// Every performer seen, with their share of `doc`.
    pub fn report(&self, doc: &LiveDoc) -> StatsByName {
        let total: u64 = doc.runs().iter().map(|r| r.len).sum();
        let mut written: HashMap<&str, u64> = HashMap::new();
        for run in doc.runs() {
            if let Some(name) = run.author.and_then(|a| self.names.get(&a)) {
                *written.entry(name.as_str()).or_default() += run.len;
            }
        }
        self.tallies
            .iter()
            .map(|(name, t)| {
                let mine = written.get(name.as_str()).copied().unwrap_or(0);
                let share = if total == 0 { 0.0 } else { (mine as f64 / total as f64 * 1000.0).round() / 1000.0 };
                (name.clone(), PerformerStats { share, ..t.figures.clone() })
            })
            .collect()
    }

    /// The statistics of an archived timeline (its lines as stored, in order): the figures,
    /// and the shares of the document the timeline ends with.
    pub fn of_timeline<'a>(lines: impl IntoIterator<Item = &'a str>) -> StatsByName {
        let mut stats = Stats::default();
        let mut doc = LiveDoc::default();
        for line in lines {
            fold_line(&mut stats, &mut doc, line);
        }
        stats.report(&doc)
    }
}

/// Counts one archived timeline line into `stats`, keeping `doc` (who wrote what) in step; a
/// line that is not a viewer message is skipped.
pub fn fold_line(stats: &mut Stats, doc: &mut LiveDoc, line: &str) {
    let Ok(message) = serde_json::from_str::<LiveMessage>(line) else { return };
    match &message {
        LiveMessage::Snapshot(s) => *doc = LiveDoc::with_authors(&s.document, &s.authors, Some(doc)),
        LiveMessage::Operation { author, ops, .. } => {
            if let Ok(op) = serde_json::from_value::<Operation>(ops.clone()) {
                let _ = doc.apply(*author, &op);
            }
        }
        _ => {}
    }
    stats.observe(&message);
}

/// Characters an operation in Troop's JSON form inserts and deletes.
fn typed_and_deleted(ops: &serde_json::Value) -> (u64, u64) {
    let (mut typed, mut deleted) = (0, 0);
    for part in ops.as_array().into_iter().flatten() {
        match part {
            serde_json::Value::String(s) => typed += s.chars().count() as u64,
            serde_json::Value::Number(n) => deleted += n.as_i64().filter(|n| *n < 0).map_or(0, i64::unsigned_abs),
            _ => {}
        }
    }
    (typed, deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(v: serde_json::Value) -> String {
        v.to_string()
    }

    #[test]
    fn a_timeline_gives_each_performer_their_figures_and_share() {
        let lines = [
            message(json!({"type": "snapshot", "session": "s", "revision": 1, "document": "ab",
                "performers": [{"id": 0, "name": "ann", "colour": 0, "since_ms": 0}],
                "authors": [[0, 2]], "marks": [], "public": false})),
            message(json!({"type": "join", "seq": 2, "time_ms": 1000, "id": 1, "name": "bo", "colour": 1})),
            message(json!({"type": "operation", "seq": 3, "time_ms": 1100, "author": 1, "ops": [2, "cdé"]})),
            message(json!({"type": "operation", "seq": 4, "time_ms": 1900, "author": 1, "ops": [4, -1]})),
            message(json!({"type": "evaluate", "seq": 5, "time_ms": 2500, "author": 0, "kind": "block",
                "text": "abcd", "start": 1, "end": 1})),
            message(json!({"type": "operation", "seq": 6, "time_ms": 2600, "author": 0, "ops": ["x", 4]})),
            "not json".to_string(),
        ];
        let stats = Stats::of_timeline(lines.iter().map(String::as_str));
        let ann = &stats["ann"];
        let bo = &stats["bo"];
        assert_eq!((ann.typed, ann.deleted, ann.evaluations, ann.active_s), (1, 0, 1, 1));
        assert_eq!((bo.typed, bo.deleted, bo.evaluations, bo.active_s), (3, 1, 0, 1), "two edits in one second");
        // "xabcd": ann wrote x, a, b; bo wrote c, d.
        assert_eq!((ann.share, bo.share), (0.6, 0.4));
    }

    #[test]
    fn text_from_before_the_hub_followed_counts_for_nobody() {
        let mut doc = LiveDoc::from_snapshot("old", None);
        let mut stats = Stats::default();
        stats.observe(&LiveMessage::Join { seq: 1, time_ms: 0, id: 3, name: "cy".into(), colour: 3 });
        let ops = json!([3, "new!"]);
        let op: Operation = serde_json::from_value(ops.clone()).unwrap_or_default();
        doc.apply(3, &op).unwrap_or_default();
        stats.observe(&LiveMessage::Operation { seq: 2, time_ms: 5, author: 3, ops });
        stats.observe(&LiveMessage::Operation { seq: 3, time_ms: 5, author: 9, ops: json!(["?"]) });
        let report = stats.report(&doc);
        assert_eq!(report.len(), 1, "an author never seen joining is not made up");
        assert_eq!(report["cy"].share, 0.571);
        assert_eq!((stats.typed, stats.deleted), (5, 0), "the whole session's total counts everyone");
    }
}
