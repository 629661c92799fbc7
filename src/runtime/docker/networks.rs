//! The sessions' bridge networks on the local engine, and what the hub knows of them: the first
//! one (made by the hub, the operator's, or Docker's default bridge, which must keep sessions
//! apart), the shards past it ([`Shards`]: `NAME-2`, `NAME-3`... made when full, removed when
//! empty), a second network of the same name left by a killed hub, and their removal at
//! shutdown. Every engine call goes through the runtime's [`Engine`].

use super::shards::{shard_of, Shards};
use crate::config::Config;
use crate::runtime::engine::Engine;
use crate::runtime::{RuntimeError, LABEL_HUB, LABEL_MANAGED};
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::{InspectNetworkOptions, ListNetworksOptions};
use bollard::Docker;
use std::collections::HashMap;
use tracing::{debug, info, warn};

/// The sessions' networks by shard (by id: names can be ambiguous on older engines; `bridge`
/// for Docker's default one) and how full each is, behind one lock: a start reserves its place
/// and, when a shard is new, makes its network under it.
pub(super) struct Networks {
    shards: tokio::sync::Mutex<Shards>,
}

impl Networks {
    pub fn new(c: &Config) -> Networks {
        Networks { shards: tokio::sync::Mutex::new(Shards::new(&c.network, c.sessions_per_network)) }
    }

    /// The first network's reference, finding or creating it (the operator's network, or
    /// Docker's default bridge, is used as it is).
    pub async fn first(&self, engine: &Engine, c: &Config) -> Result<String, RuntimeError> {
        let mut nets = self.shards.lock().await;
        nets.reconfigure(&c.network, c.sessions_per_network);
        shard_network(engine, &mut nets, c, 0).await
    }

    /// A network for one more container: the first with room (a Linux bridge takes 1,023
    /// ports; `sessions_per_network` each), a new one when all are full. Docker's default
    /// bridge cannot be split: it holds `sessions_per_network` and no more.
    pub async fn place(&self, engine: &Engine, c: &Config) -> Result<(usize, String), RuntimeError> {
        let mut nets = self.shards.lock().await;
        nets.reconfigure(&c.network, c.sessions_per_network);
        let k = nets.reserve();
        if k > 0 && c.network == "bridge" {
            nets.unreserve(k);
            return Err(RuntimeError::Misconfigured(format!(
                "Docker's default bridge holds {} sessions (sessions_per_network) and cannot be split: leave `network` unset so the hub adds networks as it needs them",
                c.sessions_per_network
            )));
        }
        match shard_network(engine, &mut nets, c, k).await {
            Ok(id) => Ok((k, id)),
            Err(e) => {
                nets.unreserve(k);
                Err(e)
            }
        }
    }

    /// Container `container` is gone: extra networks left empty are removed, but for the one
    /// the next start would use ([`Shards::left`]).
    pub async fn left(&self, engine: &Engine, container: &str) {
        let mut nets = self.shards.lock().await;
        for k in nets.left(container) {
            let (Some(id), name) = (nets.id(k).map(str::to_string), nets.name(k)) else { continue };
            let Ok(docker) = engine.client().await else { return };
            match engine.timed(docker.remove_network(&id)).await {
                Ok(()) | Err(RuntimeError::NotFound) => {
                    nets.forget_id(k);
                    info!(network = %name, "removed a sessions' network that emptied");
                }
                // Kept and filled again later; teardown tries again.
                Err(e) => debug!(network = %name, error = %e, "could not remove an emptied sessions' network"),
            }
        }
    }

    /// Container `container` was made on shard `k` (reserved by [`Networks::place`]).
    pub async fn joined(&self, container: &str, k: usize) {
        self.shards.lock().await.joined(container, k);
    }

    /// The container placed on shard `k` was not made.
    pub async fn unreserve(&self, k: usize) {
        self.shards.lock().await.unreserve(k);
    }

    /// A container found on the engine (adoption) on network `network`.
    pub async fn found(&self, container: &str, network: &str) {
        self.shards.lock().await.found(container, network);
    }

    /// A network turned out ambiguous: every one is looked up again.
    pub async fn forget_ids(&self) {
        self.shards.lock().await.forget_ids();
    }

    /// At shutdown: every empty network of this hub's sessions goes (the first by its name,
    /// which may be the operator's, the others by this hub's label), and what was known of them.
    pub async fn teardown(&self, engine: &Engine, c: &Config) {
        let Ok(docker) = engine.client().await else { return };
        let Ok(mut ids) = named(engine, &docker, &c.network).await else { return };
        let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_HUB}={}", c.hub_id)])]);
        let listed = engine.timed(docker.list_networks(Some(ListNetworksOptions { filters: Some(filters) }))).await;
        for n in listed.unwrap_or_default() {
            let shard = n.name.as_deref().and_then(|name| shard_of(&c.network, name));
            if let (Some(1..), Some(id)) = (shard, n.id) {
                ids.push(id);
            }
        }
        for id in ids {
            let Ok((containers, ours)) = network_use(engine, &docker, &id, c).await else { continue };
            if !(ours && containers == 0) {
                continue;
            }
            match engine.timed(docker.remove_network(&id)).await {
                Ok(()) => info!(network = %crate::hub::short(&id), "removed a sessions' network"),
                Err(e) => {
                    warn!(network = %crate::hub::short(&id), error = %e, "could not remove a sessions' network")
                }
            }
        }
        *self.shards.lock().await = Shards::new(&c.network, c.sessions_per_network);
    }
}

/// Shard `k`'s network reference, finding or creating it.
async fn shard_network(engine: &Engine, nets: &mut Shards, c: &Config, k: usize) -> Result<String, RuntimeError> {
    if let Some(id) = nets.id(k) {
        return Ok(id.to_string());
    }
    let name = nets.name(k);
    let docker = engine.client().await?;
    let found = named(engine, &docker, &name).await?;
    if !found.is_empty() {
        let id = keep_one(engine, &docker, &name, c, found).await?;
        let net = engine.timed(docker.inspect_network(&id, None::<InspectNetworkOptions>)).await?;
        let reference = sessions_kept_apart(&net, &name, id)?;
        nets.set_id(k, reference.clone());
        return Ok(reference);
    }
    if name == "bridge" {
        // Docker refuses to make a network of that name; an engine run with `"bridge":
        // "none"` has no default bridge.
        return Err(RuntimeError::Misconfigured(
            "`network: bridge` names Docker's default bridge, which this engine does not have: leave `network` unset so the hub makes its own".into(),
        ));
    }
    let request = NetworkCreateRequest {
        name: name.clone(),
        driver: Some("bridge".into()),
        options: Some(HashMap::from([(ENABLE_ICC.into(), "false".into())])),
        labels: Some(HashMap::from([(LABEL_MANAGED.into(), "true".into()), (LABEL_HUB.into(), c.hub_id.clone())])),
        ..Default::default()
    };
    let id = engine.timed(docker.create_network(request)).await?.id;
    info!(network = %name, "created a sessions' network (no traffic between sessions)");
    nets.set_id(k, id.clone());
    Ok(id)
}

/// Ids of the networks named exactly `name` (Docker matches name filters by substring).
async fn named(engine: &Engine, docker: &Docker, name: &str) -> Result<Vec<String>, RuntimeError> {
    let filters = HashMap::from([("name".to_string(), vec![name.to_string()])]);
    let found = engine.timed(docker.list_networks(Some(ListNetworksOptions { filters: Some(filters) }))).await?;
    Ok(found.into_iter().filter(|n| n.name.as_deref() == Some(name)).filter_map(|n| n.id).collect())
}

/// One network out of several with the sessions' name. A hub killed while it created the
/// network and restarted at once can leave two (Docker does not refuse a second one with
/// the same name), and Docker then refuses to start a container on either ("ambiguous").
/// The one with the most containers stays; the other empty ones of this hub are removed.
async fn keep_one(
    engine: &Engine,
    docker: &Docker,
    name: &str,
    c: &Config,
    ids: Vec<String>,
) -> Result<String, RuntimeError> {
    if ids.len() == 1 {
        return Ok(ids.into_iter().next().unwrap_or_default());
    }
    let mut nets = Vec::new();
    for id in ids {
        let (containers, ours) = network_use(engine, docker, &id, c).await?;
        nets.push((containers, ours, id));
    }
    // Most containers first; among equals, the order Docker listed them in.
    nets.sort_by_key(|(containers, _, _)| std::cmp::Reverse(*containers));
    let keep = nets[0].2.clone();
    let mut left = 1;
    for (containers, ours, id) in nets.into_iter().skip(1) {
        let removed = ours && containers == 0 && engine.timed(docker.remove_network(&id)).await.is_ok();
        if removed {
            warn!(network = %name, id = %crate::hub::short(&id), "removed a second network of the same name (left by a hub killed while creating it)");
        } else {
            left += 1;
        }
    }
    if left > 1 {
        return Err(RuntimeError::Misconfigured(format!(
            "{left} networks are named {name}: remove the ones no session uses (docker network ls --filter name={name})"
        )));
    }
    Ok(keep)
}

/// How many containers network `id` holds, and whether this hub made it (its label).
async fn network_use(engine: &Engine, docker: &Docker, id: &str, c: &Config) -> Result<(usize, bool), RuntimeError> {
    let net = engine.timed(docker.inspect_network(id, None::<InspectNetworkOptions>)).await?;
    let containers = net.containers.as_ref().map_or(0, |m| m.len());
    let ours = net.labels.as_ref().and_then(|l| l.get(LABEL_HUB)) == Some(&c.hub_id);
    Ok((containers, ours))
}

/// Docker's default network's option that names it so (its name, `bridge`, can be taken).
const DEFAULT_BRIDGE: &str = "com.docker.network.bridge.default_bridge";
/// A bridge network's option that lets its containers reach each other (on unless "false").
const ENABLE_ICC: &str = "com.docker.network.bridge.enable_icc";

/// How a container joins network `net`, found by `name`, as `id`: sessions must not reach each
/// other on it. The hub makes its own network so; one it finds (the operator's, or Docker's
/// default bridge named in hub.yaml) must be a bridge with inter-container traffic off, or
/// the hub says why it will not use it. Docker's default bridge is joined by its name, as
/// `docker run --network bridge` does (joined by id, Docker would take it for a network of
/// the user's and give its containers the embedded DNS resolver).
fn sessions_kept_apart(net: &bollard::models::NetworkInspect, name: &str, id: String) -> Result<String, RuntimeError> {
    let option = |key: &str| net.options.as_ref().and_then(|o| o.get(key)).map(String::as_str);
    let default_bridge = option(DEFAULT_BRIDGE) == Some("true");
    let bridge = net.driver.as_deref() == Some("bridge");
    // Docker reads the option as a boolean (Go's ParseBool).
    let icc_off = matches!(option(ENABLE_ICC), Some("0" | "f" | "F" | "false" | "FALSE" | "False"));
    if bridge && icc_off {
        return Ok(if default_bridge { "bridge".into() } else { id });
    }
    let fix = if default_bridge {
        "set \"icc\": false in the engine's daemon.json and restart it, or leave `network` unset so the hub makes its own".to_string()
    } else if bridge {
        format!("remove it and the hub makes its own, or create it with -o {ENABLE_ICC}=false")
    } else {
        "name a bridge network, or leave `network` unset so the hub makes its own".to_string()
    };
    Err(RuntimeError::Misconfigured(format!(
        "the sessions' network `{name}` lets sessions reach each other ({} driver, inter-container traffic on): {fix}",
        net.driver.as_deref().unwrap_or("unknown")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::NetworkInspect;

    fn network(driver: &str, options: &[(&str, &str)]) -> NetworkInspect {
        NetworkInspect {
            driver: Some(driver.into()),
            options: Some(options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        }
    }

    fn refusal(net: &NetworkInspect, name: &str) -> String {
        match sessions_kept_apart(net, name, "abc123".into()) {
            Err(RuntimeError::Misconfigured(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_bridge_with_inter_container_traffic_off_is_joined_by_id_and_the_default_one_by_name() {
        let own = network("bridge", &[(ENABLE_ICC, "false")]);
        assert_eq!(sessions_kept_apart(&own, "troop-hub-sessions", "abc123".into()).ok().as_deref(), Some("abc123"));
        let default = network("bridge", &[(DEFAULT_BRIDGE, "true"), (ENABLE_ICC, "false")]);
        assert_eq!(sessions_kept_apart(&default, "bridge", "def456".into()).ok().as_deref(), Some("bridge"));
    }

    #[test]
    fn a_network_that_lets_sessions_reach_each_other_is_refused_with_its_fix() {
        let default = network("bridge", &[(DEFAULT_BRIDGE, "true"), (ENABLE_ICC, "true")]);
        assert!(refusal(&default, "bridge").contains("set \"icc\": false in the engine's daemon.json"));
        // A bridge made without the option: Docker's default is traffic on.
        let operators = network("bridge", &[]);
        let why = refusal(&operators, "shared");
        assert!(why.starts_with("the sessions' network `shared` lets sessions reach each other"), "{why}");
        assert!(why.contains("-o com.docker.network.bridge.enable_icc=false"), "{why}");
        let zero = network("bridge", &[(ENABLE_ICC, "0")]);
        assert_eq!(sessions_kept_apart(&zero, "shared", "abc123".into()).ok().as_deref(), Some("abc123"));
        let overlay = network("overlay", &[(ENABLE_ICC, "false")]);
        assert!(refusal(&overlay, "multi").contains("name a bridge network"));
    }
}
