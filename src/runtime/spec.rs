//! What every session's server runs with, whatever the runtime: its command, environment,
//! labels, limits and hardening, as one [`ServerSpec`] value. [`ServerSpec::container`] maps
//! it onto a Docker container and [`ServerSpec::task`] onto a Swarm task, so "the same
//! hardening on every runtime" holds by construction. Labels never carry the password.

use super::{
    Credentials, RuntimeError, SessionSpec, LABEL_CREATED, LABEL_FRONT_DOOR, LABEL_HUB, LABEL_MANAGED, LABEL_POOL,
    LABEL_PORT, LABEL_SESSION, LABEL_SESSION_ID,
};
use crate::config::Config;
use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Limit, PortBinding, TaskSpec, TaskSpecContainerSpec,
    TaskSpecContainerSpecPrivileges, TaskSpecLogDriver, TaskSpecResources,
};
use secrecy::ExposeSecret;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Capabilities every session drops.
const CAP_DROP: &str = "ALL";
/// Log driver and its rotation: a chatty session cannot fill the disk.
const LOG_DRIVER: &str = "json-file";
const LOG_OPTIONS: [(&str, &str); 2] = [("max-size", "1m"), ("max-file", "2")];
/// How long a stopped server has to say goodbye before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// One session server, as every runtime starts it.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub image: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub user: String,
    pub labels: HashMap<String, String>,
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    pub pids: i64,
    /// The port the server listens on inside its container.
    pub session_port: u16,
}

impl ServerSpec {
    pub fn new(c: &Config, session: &SessionSpec) -> ServerSpec {
        ServerSpec {
            image: c.image.clone(),
            args: session_command(c, matches!(session.credentials, Credentials::PasswordMd5(_))),
            env: vec![credentials_env(&session.credentials)],
            user: c.user.clone(),
            labels: session_labels(c, session),
            memory_bytes: c.limits.memory_bytes,
            nano_cpus: c.limits.nano_cpus,
            pids: c.limits.pids,
            session_port: c.session_port,
        }
    }

    fn log_options() -> HashMap<String, String> {
        LOG_OPTIONS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// A Docker container on `network`, its port published on `publish` (`bind`, host port);
    /// `None` publishes nothing (the hub's front door relays to it).
    pub fn container(&self, network: String, publish: Option<(std::net::IpAddr, u16)>) -> ContainerCreateBody {
        let container_port = format!("{}/tcp", self.session_port);
        let bindings = publish.map(|(bind, host_port)| {
            let binding = PortBinding { host_ip: Some(bind.to_string()), host_port: Some(host_port.to_string()) };
            HashMap::from([(container_port.clone(), Some(vec![binding]))])
        });
        let host_config = HostConfig {
            port_bindings: bindings,
            cap_drop: Some(vec![CAP_DROP.into()]),
            security_opt: Some(vec!["no-new-privileges=true".into()]),
            readonly_rootfs: Some(true),
            memory: Some(self.memory_bytes),
            memory_swap: Some(self.memory_bytes),
            nano_cpus: Some(self.nano_cpus),
            pids_limit: Some(self.pids),
            network_mode: Some(network),
            log_config: Some(HostConfigLogConfig { typ: Some(LOG_DRIVER.into()), config: Some(Self::log_options()) }),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(self.args.clone()),
            env: Some(self.env.clone()),
            user: Some(self.user.clone()),
            labels: Some(self.labels.clone()),
            exposed_ports: Some(vec![container_port]),
            host_config: Some(host_config),
            stop_timeout: Some(STOP_GRACE.as_secs() as i64),
            ..Default::default()
        }
    }

    /// A Swarm task running `image` (a local image id or a registry name). Placement,
    /// networks and restart policy are the service's business.
    pub fn task(&self, image: String) -> TaskSpec {
        let container = TaskSpecContainerSpec {
            image: Some(image),
            labels: Some(self.labels.clone()),
            args: Some(self.args.clone()),
            env: Some(self.env.clone()),
            user: Some(self.user.clone()),
            read_only: Some(true),
            capability_drop: Some(vec![CAP_DROP.into()]),
            // Honoured from API 1.46; older engines ignore it (README: daemon.json no-new-privileges).
            privileges: Some(TaskSpecContainerSpecPrivileges { no_new_privileges: Some(true), ..Default::default() }),
            stop_grace_period: Some(STOP_GRACE.as_nanos() as i64),
            ..Default::default()
        };
        let limits =
            Limit { nano_cpus: Some(self.nano_cpus), memory_bytes: Some(self.memory_bytes), pids: Some(self.pids) };
        TaskSpec {
            container_spec: Some(container),
            resources: Some(TaskSpecResources { limits: Some(limits), ..Default::default() }),
            log_driver: Some(TaskSpecLogDriver { name: Some(LOG_DRIVER.into()), options: Some(Self::log_options()) }),
            ..Default::default()
        }
    }
}

/// The labels every session object carries (never the password). A warm pool member is
/// marked as one instead of naming a session.
pub fn session_labels(c: &Config, spec: &SessionSpec) -> HashMap<String, String> {
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut labels = HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_HUB.to_string(), c.hub_id.clone()),
        (LABEL_SESSION_ID.to_string(), spec.id.clone()),
        (LABEL_PORT.to_string(), spec.port.to_string()),
        (LABEL_CREATED.to_string(), created.to_string()),
    ]);
    match spec.pooled {
        true => labels.insert(LABEL_POOL.to_string(), "true".to_string()),
        false => labels.insert(LABEL_SESSION.to_string(), spec.name.clone()),
    };
    if c.front_door {
        labels.insert(LABEL_FRONT_DOOR.to_string(), "true".to_string());
    }
    labels
}

/// A session's labels read back: session id, name, port, creation time.
pub struct Labelled {
    pub session_id: Option<String>,
    pub name: Option<String>,
    pub pooled: bool,
    pub port: Option<u16>,
    pub created: Option<SystemTime>,
    pub front_door: bool,
}

pub fn labelled(labels: &HashMap<String, String>) -> Labelled {
    Labelled {
        session_id: labels.get(LABEL_SESSION_ID).cloned(),
        name: labels.get(LABEL_SESSION).cloned(),
        pooled: labels.get(LABEL_POOL).is_some_and(|v| v == "true"),
        front_door: labels.get(LABEL_FRONT_DOOR).is_some_and(|v| v == "true"),
        port: labels.get(LABEL_PORT).and_then(|p| p.parse().ok()),
        created: labels
            .get(LABEL_CREATED)
            .and_then(|t| t.parse::<u64>().ok())
            .map(|t| UNIX_EPOCH + Duration::from_secs(t)),
    }
}

/// The session server's arguments: its port, bounds fitted to the memory limit (so a busy
/// session is refused input rather than OOM-killed), the operator's `session_args`, and idle
/// exit when `with_idle` (a server with a control channel gets it when armed instead, so it
/// counts from arming).
pub fn session_command(c: &Config, with_idle: bool) -> Vec<String> {
    let mut cmd = vec!["--port".to_string(), c.session_port.to_string()];
    let mem = c.limits.memory_bytes.max(8 << 20) as u64;
    for (flag, value) in [
        ("--max-document", (mem / 16).min(4 << 20)),
        ("--history-bytes", mem / 8),
        ("--queue-bytes", (mem / 16).max(1 << 20)),
    ] {
        // session_args may set these itself (the server takes each flag once).
        if !c.session_args.iter().any(|a| a == flag || a.starts_with(&format!("{flag}="))) {
            cmd.push(flag.into());
            cmd.push(value.to_string());
        }
    }
    cmd.extend(c.session_args.iter().cloned());
    if c.front_door {
        // Only the hub can reach an unpublished server on a network without inter-container
        // traffic, so the header's address can be taken as the performer's.
        cmd.push("--proxy-protocol".into());
    }
    if let (Some(idle), true) = (c.idle_exit, with_idle) {
        cmd.push("--idle-exit".into());
        cmd.push(format!("{}ms", idle.as_millis()));
    }
    cmd
}

const CONTROL_ENV: &str = "TROOP_CONTROL_SECRET=";
const MD5_ENV: &str = "TROOP_PASSWORD_MD5=";

/// The server's one secret variable: the control secret, or (images without a control
/// channel) the md5 the Troop protocol compares. The password itself never reaches it.
fn credentials_env(credentials: &Credentials) -> String {
    match credentials {
        Credentials::Control(secret) => format!("{CONTROL_ENV}{}", secret.expose_secret()),
        Credentials::PasswordMd5(md5) => format!("{MD5_ENV}{}", md5.expose_secret()),
    }
}

/// What a session server was started with, read back from its environment (adoption).
pub fn credentials_from_env(env: &[String]) -> Option<Credentials> {
    env.iter().find_map(|e| {
        let control = e.strip_prefix(CONTROL_ENV).map(|s| Credentials::Control(s.into()));
        control.or_else(|| e.strip_prefix(MD5_ENV).map(|s| Credentials::PasswordMd5(s.into())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn spec() -> ServerSpec {
        ServerSpec::new(&Config::default(), &spec_session())
    }

    fn spec_session() -> SessionSpec {
        SessionSpec {
            id: "id".into(),
            name: "jam".into(),
            pooled: false,
            node: "local".into(),
            port: 57991,
            credentials: Credentials::Control(SecretString::from("0123456789abcdef0123456789abcdef")),
            deadline: tokio::time::Instant::now(),
            cancel: Default::default(),
        }
    }

    #[test]
    fn both_engine_shapes_carry_the_same_hardening_limits_and_labels() {
        let s = spec();
        let docker = s.container("net".into(), Some(("127.0.0.1".parse().unwrap(), 57991)));
        let host = docker.host_config.clone().unwrap();
        let task = s.task("sha256:abc".into());
        let cs = task.container_spec.clone().unwrap();
        let limits = task.resources.unwrap().limits.unwrap();
        assert_eq!(host.cap_drop, cs.capability_drop);
        assert_eq!(host.readonly_rootfs, cs.read_only);
        assert_eq!(docker.user, cs.user);
        assert_eq!(docker.labels, cs.labels);
        assert_eq!(docker.cmd, cs.args);
        assert_eq!(docker.env, cs.env);
        assert_eq!(
            (host.memory, host.nano_cpus, host.pids_limit),
            (limits.memory_bytes, limits.nano_cpus, limits.pids)
        );
        assert_eq!(host.log_config.unwrap().config, task.log_driver.unwrap().options);
        assert!(cs.privileges.unwrap().no_new_privileges == Some(true));
        assert!(host.security_opt.unwrap().contains(&"no-new-privileges=true".to_string()));
    }

    #[test]
    fn behind_the_front_door_nothing_is_published_and_the_server_reads_proxy_headers() {
        let published = spec();
        assert!(!published.args.contains(&"--proxy-protocol".to_string()));
        let ports = published.container("net".into(), Some(("0.0.0.0".parse().unwrap(), 57991))).host_config;
        assert!(ports.and_then(|h| h.port_bindings).is_some_and(|b| b.len() == 1));
        let c = Config { front_door: true, ..Config::default() };
        let session = SessionSpec { port: 57991, ..spec_session() };
        let door = ServerSpec::new(&c, &session);
        assert!(door.args.contains(&"--proxy-protocol".to_string()));
        let body = door.container("net".into(), None);
        assert_eq!(body.host_config.and_then(|h| h.port_bindings), None);
        assert_eq!(body.exposed_ports, Some(vec!["57890/tcp".to_string()]));
    }

    #[test]
    fn labels_and_command_carry_no_password() {
        let s = spec();
        let shown = format!("{:?} {:?}", s.labels, s.args);
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        let Some(Credentials::Control(secret)) = credentials_from_env(&s.env) else { panic!("no secret") };
        assert_eq!(Some(secret.expose_secret()), Some("0123456789abcdef0123456789abcdef"));
    }
}

/// The image label that says a session image has no control channel (upstream Troop's image
/// sets it to `none`).
pub const CONTROL_LABEL: &str = "io.troop-hub.control-channel";

/// Refuses an image that says it has no control channel while hub.yaml expects one: every
/// start would fail with a bare exit code, and the warm pool would retry for ever.
pub fn speaks_control(c: &Config, label: Option<&str>) -> Result<(), RuntimeError> {
    if c.control_channel && label == Some("none") {
        return Err(RuntimeError::Misconfigured(format!(
            "the session image {} has no control channel (it is upstream Troop's): set control_channel: false in \
             hub.yaml to run it",
            c.image
        )));
    }
    Ok(())
}

#[cfg(test)]
mod control_label_tests {
    use super::*;

    #[test]
    fn an_image_without_a_control_channel_is_refused_only_when_one_is_expected() {
        let mut c = Config::default();
        let why = speaks_control(&c, Some("none")).unwrap_err().to_string();
        assert!(why.contains("control_channel: false"), "{why}");
        assert!(speaks_control(&c, None).is_ok(), "troop-server's image has no such label");
        c.control_channel = false;
        assert!(speaks_control(&c, Some("none")).is_ok());
    }
}
