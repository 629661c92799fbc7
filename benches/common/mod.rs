//! Shared by the Docker benches: the hub tests' helpers (a real hub on Docker, cleaned up when
//! dropped; HTTP requests), [`load`] (eight paced Troop performers with their relay latency and
//! the CPU counters of /proc) and [`measure`] (start floors, query clients, host memory; `hub`
//! and `scale`), and [`swarm_floor`] (Swarm's own start floor; `swarm` and `swarm_scale`).
#![allow(dead_code)]

#[path = "../../tests/common/mod.rs"]
mod hub;
pub mod load;
pub mod measure;
pub mod swarm_floor;

pub use hub::*;
