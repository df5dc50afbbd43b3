//! A TCP forwarder that a test can cut: how a test cuts one node off from
//! PostgreSQL (the node connects to the proxy's address instead of the
//! database's).
//!
//! [`TcpProxy::start`] listens on a free `127.0.0.1` port and forwards each
//! accepted connection, both ways, to its target (a new upstream connection
//! per accepted one). [`TcpProxy::cut`] closes every open connection (both of
//! its sides) and, until [`TcpProxy::restore`], closes each new one as soon as
//! it is accepted. [`TcpProxy::stall`] is the silent kind of partition: no
//! byte moves on open connections and new ones are accepted but not forwarded,
//! all of them held open until `restore`, when what was held flows on.
//! Dropping the proxy closes its listener and every connection.
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! use warmpool_testkit::proxy::TcpProxy;
//! let db: std::net::SocketAddr = "127.0.0.1:5432".parse().expect("addr");
//! let proxy = TcpProxy::start(db).await?;
//! // Point the node at proxy.addr() instead of db ...
//! proxy.cut().await; // the node loses the database
//! proxy.restore(); // and can reconnect
//! # Ok(()) }
//! ```
//!
//! Limits:
//! - A cut is a close (FIN): both ends see the connection end at once. A new
//!   connection during a cut is accepted then closed: the client sees a
//!   connection closed by the peer, not "connection refused". For ends that
//!   must notice by their own timeouts or keepalive, use `stall`.
//! - During a stall the proxy still accepts (the kernel completes the
//!   handshake) and reads up to one buffer (16 KiB) per direction and
//!   connection before back-pressure; keepalive probes are answered by the
//!   proxy's own sockets, so TCP keepalive does not detect a stall (an
//!   application-level timeout does).
//! - If the target refuses, the accepted connection is closed.
//! - Needs a tokio runtime (it spawns tasks); one upstream address; IPv4
//!   loopback only.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A forwarder from a free local port to a target; see the [module docs](self).
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Whether the proxy is stalled; the forwarders wait on it.
    stalled: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct State {
    cut: bool,
    next_id: u64,
    conns: HashMap<u64, JoinHandle<()>>,
    /// Connections accepted since start (forwarded or closed by a cut).
    accepted: u64,
}

impl Shared {
    /// Returns at once unless stalled; else when restored.
    async fn unstalled(&self) {
        let mut rx = self.stalled.subscribe();
        // Err: the sender is gone, i.e. the proxy is being dropped.
        let _ = rx.wait_for(|stalled| !*stalled).await;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent under a panic (plain fields, no invariant
        // across them), so a poisoned lock is used as is.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl TcpProxy {
    /// Listens on a free `127.0.0.1` port and starts forwarding to `target`.
    pub async fn start(target: SocketAddr) -> io::Result<TcpProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            stalled: watch::Sender::new(false),
        });
        let accept = tokio::spawn(accept_loop(listener, target, shared.clone()));
        Ok(TcpProxy {
            addr,
            target,
            shared,
            accept,
        })
    }

    /// The address to connect to instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address connections are forwarded to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Closes every open connection (both sides) and closes new ones at once
    /// until [`restore`](Self::restore). When it returns, every connection that
    /// was open is closed.
    pub async fn cut(&self) {
        let handles: Vec<JoinHandle<()>> = {
            let mut st = self.shared.lock();
            st.cut = true;
            st.conns.drain().map(|(_, h)| h).collect()
        };
        for h in handles {
            h.abort();
            // Err(cancelled) is the expected outcome; the sockets are dropped
            // by then.
            let _ = h.await;
        }
    }

    /// Stalls every connection, open and new, without closing any: no byte
    /// moves and new connections are not forwarded until
    /// [`restore`](Self::restore), when the held bytes and connections go on.
    pub fn stall(&self) {
        self.shared.stalled.send_replace(true);
    }

    /// Ends a cut or a stall: new connections are forwarded, stalled ones flow
    /// again (those closed by a cut stay closed).
    pub fn restore(&self) {
        self.shared.lock().cut = false;
        self.shared.stalled.send_replace(false);
    }

    /// Whether the proxy is cut.
    pub fn is_cut(&self) -> bool {
        self.shared.lock().cut
    }

    /// Whether the proxy is stalled.
    pub fn is_stalled(&self) -> bool {
        *self.shared.stalled.borrow()
    }

    /// How many connections are being forwarded now.
    pub fn open_connections(&self) -> usize {
        self.shared.lock().conns.len()
    }

    /// How many connections were accepted since start, forwarded or not.
    pub fn accepted(&self) -> u64 {
        self.shared.lock().accepted
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        let mut st = self.shared.lock();
        st.cut = true;
        for (_, h) in st.conns.drain() {
            h.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    loop {
        let client = match listener.accept().await {
            Ok((s, _)) => s,
            // Transient (e.g. EMFILE, a connection reset before accept): go on.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let mut st = shared.lock();
        st.accepted += 1;
        if st.cut {
            drop(st);
            drop(client);
            continue;
        }
        let id = st.next_id;
        st.next_id += 1;
        // Spawned and registered under the lock: a cut either sees this
        // connection or happened before it was accepted (then it was dropped above).
        let task = tokio::spawn(forward(client, target, shared.clone(), id));
        st.conns.insert(id, task);
    }
}

async fn forward(client: TcpStream, target: SocketAddr, shared: Arc<Shared>, id: u64) {
    shared.unstalled().await;
    if let Ok(upstream) = TcpStream::connect(target).await {
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let (cr, cw) = client.into_split();
        let (ur, uw) = upstream.into_split();
        tokio::join!(pump(cr, uw, &shared), pump(ur, cw, &shared));
    }
    shared.lock().conns.remove(&id);
}

/// Copies one direction until EOF or an error, holding what it read while
/// the proxy is stalled; then passes the EOF on (shutdown of the write side).
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, shared: &Shared) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        shared.unstalled().await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
