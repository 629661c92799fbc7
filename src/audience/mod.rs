//! The audience view's model, shared by the hub (which follows each session) and the HTTP
//! front door (which serves viewers):
//! - [`doc`]: the followed document with who wrote what and where cursors are;
//! - [`wire`]: the JSON messages viewers receive;
//! - [`stats`]: statistics per performer, live and from an archived timeline.

pub mod doc;
pub mod stats;
pub mod wire;

pub use doc::LiveDoc;
pub use stats::{PerformerStats, Stats, StatsByName};
pub use wire::{LiveMessage, LiveSnapshot};

/// How a session's view may be watched right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Whoever knows the session's password.
    Password,
    /// Anyone with the link.
    Public,
    /// Not at all.
    Off,
}
