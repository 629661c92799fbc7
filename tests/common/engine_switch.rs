//! A Docker engine socket for tests to put between a hub and the real engine, switched while
//! the test runs: closed, stalled (connections held silent), forwarded, or forwarded slowly.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};

pub const CLOSED: u8 = 0;
pub const STALLED: u8 = 1;
pub const FORWARD: u8 = 2;
/// Forwarded, each request held [`SLOW_BY`] first.
pub const SLOW: u8 = 3;
pub const SLOW_BY: Duration = Duration::from_secs(3);

/// Listens on `path`; each connection is closed, held silent, or forwarded to the real engine
/// (slowly, when `SLOW`).
pub fn engine_switch(path: std::path::PathBuf, mode: Arc<AtomicU8>) {
    let listener = UnixListener::bind(&path).expect("bind the forwarder socket");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let switch = mode.clone();
            let mode = mode.load(Ordering::SeqCst);
            tokio::spawn(async move {
                match mode {
                    CLOSED => drop(client),
                    STALLED => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        drop(client);
                    }
                    _ => {
                        if let Ok(engine) = UnixStream::connect("/var/run/docker.sock").await {
                            forward(client, engine, switch).await;
                        }
                    }
                }
            });
        }
    });
}

/// Bytes both ways until either side closes or the switch leaves FORWARD and SLOW (a
/// connection kept for reuse goes too when the engine is switched off); while SLOW, each chunk
/// of a request waits [`SLOW_BY`] before it reaches the engine.
async fn forward(client: UnixStream, engine: UnixStream, switch: Arc<AtomicU8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_engine, mut to_engine) = engine.into_split();
    let serving = |m: u8| m == FORWARD || m == SLOW;
    let switched = async {
        while serving(switch.load(Ordering::SeqCst)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let requests = async {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = from_client.read(&mut buf).await {
            if switch.load(Ordering::SeqCst) == SLOW {
                tokio::time::sleep(SLOW_BY).await;
            }
            if to_engine.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = to_engine.shutdown().await;
    };
    let answers = async {
        let _ = tokio::io::copy(&mut from_engine, &mut to_client).await;
        // The engine closed: so does the hub's side, as a real engine socket would.
        let _ = to_client.shutdown().await;
    };
    tokio::select! {
        _ = futures_util::future::join(requests, answers) => {}
        () = switched => {}
    }
}

/// Puts a switch starting in `initial` between `hub` (not yet started) and the real engine:
/// the hub's DOCKER_HOST becomes the switch's socket. Returns the switch.
pub fn behind_switch(hub: &mut super::TestHub, initial: u8) -> Arc<AtomicU8> {
    let sock = hub.dir.path().join("engine.sock");
    let mode = Arc::new(AtomicU8::new(initial));
    engine_switch(sock.clone(), mode.clone());
    hub.envs.push(("DOCKER_HOST".into(), format!("unix://{}", sock.display())));
    mode
}
