//! TcpProxy against a local echo server: it forwards both ways, a cut closes
//! open connections and closes new ones at once, restore forwards again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use warmpool_testkit::proxy::TcpProxy;

const T: Duration = Duration::from_secs(5);

/// An echo server; counts the connections it saw end.
async fn echo_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let (addr, closed, _) = echo_server_counting().await;
    (addr, closed)
}

/// An echo server; counts the connections it saw end, and those it accepted.
async fn echo_server_counting() -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let closed = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (c, a) = (closed.clone(), accepted.clone());
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.expect("accept");
            a.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, closed, accepted)
}

async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).await.expect("write");
    let mut got = vec![0u8; msg.len()];
    timeout(T, s.read_exact(&mut got))
        .await
        .expect("echo in time")
        .expect("read echo");
    got
}

/// Whether the peer closed the connection: a read gives EOF or an error
/// (a reset), within the timeout.
async fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(timeout(T, s.read(&mut b)).await, Ok(Ok(0)) | Ok(Err(_)))
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn forwards_both_ways() {
    let (target, _) = echo_server().await;
    let p = TcpProxy::start(target).await.expect("proxy");
    assert_ne!(p.addr(), target);
    assert_eq!(p.target(), target);
    assert!(p.addr().ip().is_loopback());

    let mut a = TcpStream::connect(p.addr()).await.expect("connect a");
    let mut b = TcpStream::connect(p.addr()).await.expect("connect b");
    assert_eq!(roundtrip(&mut a, b"hello").await, b"hello");
    assert_eq!(roundtrip(&mut b, b"other").await, b"other");

    // A large payload arrives whole, written and read concurrently.
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = a.into_split();
    let sent = big.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.expect("write big");
        w
    });
    let mut got = vec![0u8; big.len()];
    timeout(T, r.read_exact(&mut got))
        .await
        .expect("big in time")
        .expect("read big");
    assert!(got == big, "payload changed on the way");
    let _w = writer.await.expect("writer");
    assert_eq!(p.open_connections(), 2);
    assert_eq!(p.accepted(), 2);
}

#[tokio::test]
async fn client_close_closes_upstream() {
    let (target, closed) = echo_server().await;
    let p = TcpProxy::start(target).await.expect("proxy");
    let mut a = TcpStream::connect(p.addr()).await.expect("connect");
    assert_eq!(roundtrip(&mut a, b"x").await, b"x");
    drop(a);
    wait_for("the upstream side to close", || {
        closed.load(Ordering::SeqCst) == 1
    })
    .await;
    wait_for("the proxy to forget it", || p.open_connections() == 0).await;
}

#[tokio::test]
async fn cut_closes_open_connections_and_new_ones_until_restore() {
    let (target, closed) = echo_server().await;
    let p = TcpProxy::start(target).await.expect("proxy");
    let mut a = TcpStream::connect(p.addr()).await.expect("connect a");
    let mut b = TcpStream::connect(p.addr()).await.expect("connect b");
    assert_eq!(roundtrip(&mut a, b"1").await, b"1");
    assert_eq!(roundtrip(&mut b, b"2").await, b"2");
    assert!(!p.is_cut());

    p.cut().await;
    assert!(p.is_cut());
    assert_eq!(p.open_connections(), 0);
    // Both client sides see the end, and so does the server for both.
    assert!(closed_by_peer(&mut a).await, "a still open after the cut");
    assert!(closed_by_peer(&mut b).await, "b still open after the cut");
    wait_for("the server to see both connections end", || {
        closed.load(Ordering::SeqCst) == 2
    })
    .await;

    // New connections during the cut are closed at once, and reach nothing.
    for _ in 0..3 {
        let mut c = TcpStream::connect(p.addr())
            .await
            .expect("connect during cut");
        let _ = c.write_all(b"lost").await;
        assert!(
            closed_by_peer(&mut c).await,
            "a new connection was forwarded"
        );
    }
    assert_eq!(p.open_connections(), 0);
    assert_eq!(p.accepted(), 5);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        closed.load(Ordering::SeqCst),
        2,
        "the server saw a connection"
    );

    // A second cut is harmless.
    p.cut().await;

    p.restore();
    assert!(!p.is_cut());
    let mut d = TcpStream::connect(p.addr())
        .await
        .expect("connect after restore");
    assert_eq!(roundtrip(&mut d, b"back").await, b"back");
    assert_eq!(p.open_connections(), 1);
}

/// Nothing arrives on `s` within a short while.
async fn silent(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    timeout(Duration::from_millis(300), s.read(&mut b))
        .await
        .is_err()
}

#[tokio::test]
async fn stall_holds_everything_open_until_restore() {
    let (target, closed, accepted) = echo_server_counting().await;
    let p = TcpProxy::start(target).await.expect("proxy");
    let mut a = TcpStream::connect(p.addr()).await.expect("connect a");
    assert_eq!(roundtrip(&mut a, b"before").await, b"before");

    p.stall();
    assert!(p.is_stalled());
    assert!(!p.is_cut());
    // An open connection: what is written goes nowhere, nothing is closed.
    a.write_all(b"held").await.expect("write during stall");
    assert!(silent(&mut a).await, "bytes moved during the stall");
    // A new connection: accepted by the proxy, never reaching the server.
    let mut b = TcpStream::connect(p.addr())
        .await
        .expect("connect during stall");
    b.write_all(b"new").await.expect("write on the new one");
    assert!(silent(&mut b).await, "the new connection was forwarded");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(closed.load(Ordering::SeqCst), 0);
    assert_eq!(p.open_connections(), 2);

    // Restored: the held bytes and the held connection go on.
    p.restore();
    assert!(!p.is_stalled());
    let mut got = [0u8; 4];
    timeout(T, a.read_exact(&mut got))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(&got, b"held");
    let mut got = [0u8; 3];
    timeout(T, b.read_exact(&mut got))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(&got, b"new");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(roundtrip(&mut a, b"after").await, b"after");

    // A cut during a stall closes the held connections.
    p.stall();
    a.write_all(b"x").await.expect("write");
    p.cut().await;
    assert!(closed_by_peer(&mut a).await);
    assert!(closed_by_peer(&mut b).await);
    p.restore();
    let mut c = TcpStream::connect(p.addr()).await.expect("connect");
    assert_eq!(roundtrip(&mut c, b"ok").await, b"ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_while_data_flows() {
    let (target, _) = echo_server().await;
    let p = Arc::new(TcpProxy::start(target).await.expect("proxy"));
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let addr = p.addr();
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let mut buf = [0u8; 64];
            // Ping-pong until the cut ends the connection.
            loop {
                if s.write_all(&[i; 64]).await.is_err() {
                    return;
                }
                match timeout(T, s.read_exact(&mut buf)).await {
                    Ok(Ok(_)) => assert_eq!(buf, [i; 64]),
                    Ok(Err(_)) => return,
                    Err(_) => panic!("connection hung after the cut"),
                }
            }
        }));
    }
    wait_for("8 connections", || p.open_connections() == 8).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    p.cut().await;
    for t in tasks {
        timeout(T, t)
            .await
            .expect("clients see the cut")
            .expect("client task");
    }
    p.restore();
    let mut s = TcpStream::connect(p.addr()).await.expect("connect");
    assert_eq!(roundtrip(&mut s, b"ok").await, b"ok");
}

#[tokio::test]
async fn target_down_closes_the_client() {
    // A port with nothing listening: bind, read the port, close.
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = l.local_addr().expect("addr");
    drop(l);
    let p = TcpProxy::start(target).await.expect("proxy");
    let mut c = TcpStream::connect(p.addr()).await.expect("connect");
    assert!(closed_by_peer(&mut c).await);
    wait_for("the proxy to forget it", || p.open_connections() == 0).await;
}

#[tokio::test]
async fn drop_closes_listener_and_connections() {
    let (target, _) = echo_server().await;
    let p = TcpProxy::start(target).await.expect("proxy");
    let addr = p.addr();
    let mut a = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(roundtrip(&mut a, b"x").await, b"x");
    drop(p);
    assert!(closed_by_peer(&mut a).await);
    // The listener is gone: connecting is refused (retry briefly: the abort
    // lands on the accept task's next poll).
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the proxy still listens after drop");
}
