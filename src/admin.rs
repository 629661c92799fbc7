//! A hub protocol client: what Troop's `HubClient` sends, for the operator CLI and the tests.

use crate::wire;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Sends one request and reads one reply.
pub async fn request(hub: SocketAddr, body: &Value, timeout: Duration) -> anyhow::Result<Value> {
    let work = async {
        let mut stream = TcpStream::connect(hub).await?;
        stream.write_all(&wire::encode(body)?).await?;
        Ok::<Value, anyhow::Error>(wire::read_frame(&mut stream).await?)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| anyhow::anyhow!("the hub at {hub} did not answer within {timeout:?}"))?
}

/// `troop-hub list`: the sessions, one per line.
pub async fn list(hub: SocketAddr) -> anyhow::Result<String> {
    let v = request(hub, &json!({"type": "list"}), Duration::from_secs(10)).await?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        anyhow::bail!("{e}");
    }
    let mut out = String::new();
    for s in v.get("data").and_then(Value::as_array).into_iter().flatten() {
        let at = format!(
            "{}:{}",
            s.get("host").and_then(Value::as_str).unwrap_or("?"),
            s.get("port").and_then(Value::as_u64).unwrap_or(0)
        );
        let performers: Vec<&str> =
            s.get("performers").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        out.push_str(&format!(
            "{:<24} {:<22} {:<8} owner {:<9} {}\n",
            s.get("name").and_then(Value::as_str).unwrap_or("?"),
            at,
            s.get("state").and_then(Value::as_str).unwrap_or("?"),
            if s.get("owner_connected").and_then(Value::as_bool).unwrap_or(false) { "connected" } else { "away" },
            performers.join(", "),
        ));
    }
    if out.is_empty() {
        out.push_str("no sessions\n");
    }
    Ok(out)
}

/// `troop-hub health`: GET /healthz must answer 200 within 5 s.
pub async fn health(http: SocketAddr) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let work = async {
        let mut s = TcpStream::connect(http).await?;
        s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head)
    };
    let head = tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .map_err(|_| anyhow::anyhow!("{http} did not answer within 5 s"))??;
    anyhow::ensure!(head.ends_with(b" 200"), "/healthz answered {}", String::from_utf8_lossy(&head));
    Ok(())
}

/// `troop-hub kill NAME`.
pub async fn kill(hub: SocketAddr, name: &str) -> anyhow::Result<()> {
    let v = request(hub, &json!({"type": "kill", "name": name}), Duration::from_secs(30)).await?;
    match v.get("error").and_then(Value::as_str) {
        Some(e) => anyhow::bail!("{e}"),
        None => Ok(()),
    }
}

/// An owner's connection, as `run-server.py --hub` holds it.
pub struct Owner {
    stream: TcpStream,
    pub host: String,
    pub port: u16,
}

/// Sends a `server` request. `Ok(Err(sentence))` when the hub refuses.
pub async fn start_session(
    hub: SocketAddr,
    name: &str,
    password: &str,
    timeout: Duration,
) -> anyhow::Result<Result<Owner, String>> {
    let work = async {
        let mut stream = TcpStream::connect(hub).await?;
        let body = json!({"type": "server", "name": name, "password": password});
        stream.write_all(&wire::encode(&body)?).await?;
        let v = wire::read_frame(&mut stream).await?;
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            return Ok(Err(e.to_string()));
        }
        let addr = v.get("address").and_then(Value::as_array).cloned().unwrap_or_default();
        let host = addr.first().and_then(Value::as_str).unwrap_or_default().to_string();
        let port = addr.get(1).and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok());
        match port {
            Some(port) => Ok(Ok(Owner { stream, host, port })),
            None => anyhow::bail!("unexpected reply {v}"),
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| anyhow::anyhow!("the hub did not answer within {timeout:?}"))?
}

impl Owner {
    /// Waits for the hub's `error` frame (the session ended without us); `None` if the
    /// connection closed without one or nothing came in time.
    pub async fn ended(&mut self, timeout: Duration) -> Option<String> {
        match tokio::time::timeout(timeout, wire::read_frame(&mut self.stream)).await {
            Ok(Ok(v)) => v.get("error").and_then(Value::as_str).map(str::to_string),
            _ => None,
        }
    }

    /// Ends the session the way Troop's client does on Ctrl-C: `{"kill": ...}`.
    pub async fn kill(mut self) {
        if let Ok(frame) = wire::encode(&json!({"kill": "KeyboardInterrupt"})) {
            let _ = self.stream.write_all(&frame).await;
        }
    }
}
