//! An in-memory runtime for the hub's unit tests: servers are map entries, and a test
//! scripts what the engine does (a port a stranger holds, a node whose starts fail, slow
//! starts, the engine down) and what happens to running sessions (an exit event). It keeps
//! the [`Runtime`] contract: a start returns when "listening", and undoes itself on error.
//!
//! [`FakeRuntime::with_servers`] also runs a real session server (`troop_server::server::run`)
//! on 127.0.0.1:0 for each start, in this process: the hub arms it, follows it and records it
//! over its real control channel, and tests join it with real Troop clients
//! ([`FakeRuntime::server_addr`]), all in milliseconds and without an engine. A server that
//! exits by itself (its idle timer, the hub's `end`) sends the exit event Docker would.

use super::{EventStream, Existing, Node, Runtime, RuntimeError, RuntimeEvent, SessionSpec, StartError, Started};
use crate::config::Config;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// A server the fake runs.
#[derive(Debug, Clone)]
pub struct FakeServer {
    pub spec: Option<SessionSpec>,
    pub existing: Existing,
}

#[derive(Default)]
struct State {
    servers: BTreeMap<String, FakeServer>,
    next: u64,
    ports_taken: HashSet<u16>,
    failing_nodes: HashSet<String>,
    start_delay: Duration,
    remove_delay: Duration,
    down: bool,
    nodes: Vec<Node>,
    removed: Vec<String>,
    events: Option<mpsc::UnboundedSender<Result<RuntimeEvent, RuntimeError>>>,
    /// Real session servers by handle (with [`FakeRuntime::with_servers`]).
    real: HashMap<String, RealServer>,
}

/// A real session server the fake runs in this process.
struct RealServer {
    addr: SocketAddr,
    /// Dropping it stops the server (as SIGTERM would).
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The scripted runtime.
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
    /// Each start runs a real session server.
    servers: bool,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        let state = State { nodes: vec![Node::local()], ..Default::default() };
        FakeRuntime { state: Arc::new(Mutex::new(state)), servers: false }
    }
}

impl FakeRuntime {
    /// A fake whose starts each run a real session server on 127.0.0.1:0.
    pub fn with_servers() -> FakeRuntime {
        FakeRuntime { servers: true, ..FakeRuntime::default() }
    }

    /// Where a real server started by [`FakeRuntime::with_servers`] listens (performers and
    /// the hub's control channel both reach it there).
    pub fn server_addr(&self, handle: &str) -> Option<SocketAddr> {
        self.state().real.get(handle).map(|r| r.addr)
    }

    /// Starts a real server for `spec`, locked or with its password md5 as the hub asks;
    /// when it exits by itself, the exit event goes out.
    async fn serve(&self, handle: &str, spec: &SessionSpec) -> Result<SocketAddr, StartError> {
        use secrecy::ExposeSecret;
        use troop_server::control::ControlSecret;
        use troop_server::server::{self, Config as ServerConfig};
        let config = match &spec.credentials {
            super::Credentials::Control(secret) => {
                let secret = ControlSecret::new(secret.expose_secret())
                    .map_err(|e| StartError::NotReady(format!("the control secret: {e}")))?;
                ServerConfig { locked: true, control: Some(secret), ..ServerConfig::default() }
            }
            super::Credentials::PasswordMd5(md5) => {
                ServerConfig { password_md5: md5.expose_secret().to_string(), ..ServerConfig::default() }
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| StartError::NotReady(format!("cannot listen: {e}")))?;
        let addr = listener.local_addr().map_err(|e| StartError::NotReady(e.to_string()))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (state, gone) = (self.state.clone(), handle.to_string());
        tokio::spawn(async move {
            let handle = gone;
            let exit = server::run(listener, config, async move {
                let _ = stopped.await;
            })
            .await;
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            // Removed by the hub: no event (Docker's would find no session either).
            if st.real.remove(&handle).is_some() {
                if let Some(s) = st.servers.get_mut(&handle) {
                    s.existing.running = false;
                }
                let idle = matches!(exit, Ok(server::Exit::Idle));
                let reason = format!("the session server exited ({exit:?})");
                if let Some(tx) = &st.events {
                    let _ = tx.send(Ok(RuntimeEvent::Exited { handle, reason, idle }));
                }
            }
        });
        self.state().real.insert(handle.to_string(), RealServer { addr, _stop: stop });
        Ok(addr)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A stranger holds this host port: starts on it fail with `PortTaken`.
    pub fn take_port(&self, port: u16) {
        self.state().ports_taken.insert(port);
    }

    /// Starts on this node fail (like a Swarm task that exits at once).
    pub fn fail_node(&self, node: &str) {
        self.state().failing_nodes.insert(node.to_string());
    }

    pub fn set_nodes(&self, nodes: Vec<Node>) {
        self.state().nodes = nodes;
    }

    /// Makes every server look `by` older: its creation time is the wall clock's, while the
    /// hub's clock in tests is paused.
    pub fn age_servers(&self, by: Duration) {
        for s in self.state().servers.values_mut() {
            s.existing.created = s.existing.created.and_then(|t| t.checked_sub(by));
        }
    }

    /// Each removal takes this long (a busy engine).
    pub fn set_remove_delay(&self, d: Duration) {
        self.state().remove_delay = d;
    }

    /// Each start takes this long before its server listens.
    pub fn set_start_delay(&self, d: Duration) {
        self.state().start_delay = d;
    }

    /// The engine stops (true) or starts (false) answering.
    pub fn set_down(&self, down: bool) {
        self.state().down = down;
    }

    /// A server left from before (for recovery), running or not.
    pub fn leave(&self, existing: Existing) {
        let handle = existing.handle.clone();
        self.state().servers.insert(handle, FakeServer { spec: None, existing });
    }

    /// Marks a left server running (it finished starting).
    pub fn set_running(&self, handle: &str) {
        if let Some(s) = self.state().servers.get_mut(handle) {
            s.existing.running = true;
        }
    }

    /// The server exits by itself: it stops and an exit event goes out.
    pub fn exit(&self, handle: &str, reason: &str, idle: bool) {
        let mut st = self.state();
        if let Some(s) = st.servers.get_mut(handle) {
            s.existing.running = false;
        }
        let ev = RuntimeEvent::Exited { handle: handle.into(), reason: reason.into(), idle };
        if let Some(tx) = &st.events {
            let _ = tx.send(Ok(ev));
        }
    }

    /// The servers there now, by handle.
    pub fn servers(&self) -> BTreeMap<String, FakeServer> {
        self.state().servers.clone()
    }

    /// Handles removed so far, in order.
    pub fn removed(&self) -> Vec<String> {
        self.state().removed.clone()
    }

    fn engine(&self) -> Result<(), RuntimeError> {
        match self.state().down {
            true => Err(RuntimeError::Unreachable("the fake engine is down".into())),
            false => Ok(()),
        }
    }

    async fn run(&self, spec: SessionSpec) -> Result<Started, StartError> {
        self.engine()?;
        let delay = self.state().start_delay;
        tokio::select! {
            _ = spec.cancel.cancelled() => return Err(StartError::Cancelled),
            _ = tokio::time::sleep(delay) => {}
        }
        let handle = {
            let mut st = self.state();
            if st.ports_taken.contains(&spec.port) {
                return Err(StartError::PortTaken(spec.port));
            }
            if st.failing_nodes.contains(&spec.node) {
                let detail = format!("task failed on node {}: non-zero exit (2)", spec.node);
                return Err(StartError::NodeFailed {
                    public: "its server stopped on the machine the hub chose",
                    detail,
                });
            }
            st.next += 1;
            format!("fake-{}", st.next)
        };
        let control = match self.servers {
            true => self.serve(&handle, &spec).await?,
            false => SocketAddr::from(([127, 0, 0, 1], spec.port)),
        };
        let mut st = self.state();
        let existing = Existing {
            handle: handle.clone(),
            running: true,
            session_id: Some(spec.id.clone()),
            name: (!spec.pooled).then(|| spec.name.clone()),
            pooled: spec.pooled,
            node: Some(spec.node.clone()),
            port: Some(spec.port),
            created: Some(SystemTime::now()),
            credentials: Some(spec.credentials.clone()),
            control: Some(control),
            front_door: false,
        };
        st.servers.insert(handle.clone(), FakeServer { spec: Some(spec), existing });
        Ok(Started { handle, control })
    }
}

impl Runtime for FakeRuntime {
    fn prepare(&self) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async move { self.engine() })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async move { self.engine() })
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<Node>, RuntimeError>> {
        Box::pin(async move { self.engine().map(|()| self.state().nodes.clone()) })
    }

    fn start(&self, spec: SessionSpec) -> BoxFuture<'_, Result<Started, StartError>> {
        Box::pin(self.run(spec))
    }

    fn remove(&self, handle: String) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async move {
            self.engine()?;
            let delay = self.state().remove_delay;
            tokio::time::sleep(delay).await;
            let mut st = self.state();
            st.servers.remove(&handle);
            // Stops its real server, if it runs one.
            st.real.remove(&handle);
            st.removed.push(handle);
            Ok(())
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Existing>, RuntimeError>> {
        Box::pin(async move {
            self.engine()?;
            Ok(self.state().servers.values().map(|s| s.existing.clone()).collect())
        })
    }

    fn events(&self) -> BoxFuture<'_, Result<EventStream, RuntimeError>> {
        Box::pin(async move {
            self.engine()?;
            let (tx, rx) = mpsc::unbounded_channel();
            self.state().events = Some(tx);
            Ok(tokio_stream_from(rx))
        })
    }

    fn teardown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn reconfigure(&self, _config: Config) {}
}

/// The receiving end of the fake's event channel as a stream.
fn tokio_stream_from(rx: mpsc::UnboundedReceiver<Result<RuntimeEvent, RuntimeError>>) -> EventStream {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|ev| (ev, rx)) }).boxed()
}
