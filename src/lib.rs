//! troop-hub: hosts Troop live-coding sessions, one hardened container per session.
//!
//! - [`config`]: hub.yaml, validated, with environment overrides.
//! - [`wire`]: the hub protocol's framing and requests.
//! - [`registry`]: names, nodes, port leases, owners and limits (pure logic).
//! - [`runtime`]: the container engine behind one trait: Docker (one container per session
//!   on this engine) or Swarm (one service per session, placed on a node), through bollard.
//! - [`hub`]: shared state and every session lifecycle path (start, end, supervision of the
//!   engine and the nodes, the read-side views).
//! - [`audience`]: the audience view's model (the followed document, viewers' messages).
//! - [`archive`]: the archive store (SQLite): every session's code and timeline, kept after it ends.
//! - [`gate`]: the limits on password and admin-token guesses, and secret comparisons.
//! - [`metrics`]: counters and their Prometheus rendering.
//! - [`random`]: OS randomness as secrets, tokens and session ids.
//! - [`tcp`]: the Troop hub protocol front door.
//! - [`http`]: the HTTP API, metrics and status page.
//! - [`accept`]: listening with a deep accept queue, pausing after failed accepts (both front doors).
//! - [`reload`]: live reload of hub.yaml.
//! - [`open_files`]: the hub's open-file limit, raised at start, and the session range it can hold.
//! - [`seat`]: the browser seat's messages and their Troop forms (the connection is in `http`).
//! - [`admin`]: the operator CLI's client side (`troop-hub list`, `troop-hub kill`).

pub mod accept;
pub mod admin;
pub mod archive;
pub mod audience;
pub mod config;
pub mod gate;
pub mod http;
pub mod hub;
pub mod links;
pub mod memory;
pub mod metrics;
pub mod open_files;
pub mod random;
pub mod registry;
pub mod reload;
pub mod runtime;
pub mod seat;
pub mod tcp;
pub mod wire;
