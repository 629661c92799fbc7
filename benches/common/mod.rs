//! Shared by the Docker benches (`audience`, `archive`): the hub tests' helpers (a real hub on
//! Docker, cleaned up when dropped; HTTP requests) and [`load`], eight paced Troop performers
//! with their relay latency and the CPU counters of /proc.
#![allow(dead_code)]

#[path = "../../tests/common/mod.rs"]
mod hub;
pub mod load;

pub use hub::*;
