//! Test support for warmpool's test suites: throwaway services that a test
//! starts, uses and that never outlive the test process (not even one that
//! panics or is killed). Used from `[dev-dependencies]` only; never published.
//!
//! - [`postgres`]: a PostgreSQL cluster in a temp directory on a free loopback
//!   port, one database per test.
//! - [`dockerd`]: [`dockerd::Dockerd`], a second Docker engine owned by one
//!   test (its own data root, exec root, containerd, socket and cgroup parent
//!   under a temp dir), so a test can run several "nodes", each with its own
//!   engine, and stop, restart or crash (SIGKILL) one of them. Everything it
//!   started is killed and its temp dir removed when it is dropped, and also
//!   when the test process dies without dropping it (a watchdog). Needs root,
//!   `dockerd` (with its `containerd` and `runc`) and the `docker` CLI.
//! - [`proxy`]: [`proxy::TcpProxy`], a TCP forwarder on a free 127.0.0.1 port
//!   whose `cut` closes every open connection and closes new ones at once until
//!   `restore`, and whose `stall` holds every connection silent instead: how a
//!   test cuts one node off from PostgreSQL.
//!
//! - [`git_http`]: [`git_http::GitServer`], a git smart-HTTP server (`git
//!   http-backend` behind Basic auth) standing in for GitHub's git host, which
//!   records what it served.
//! - [`labelled`]: for tests on the shared engine: the test images, unique
//!   names, and a guard removing every container of the test's label.
//!
//! Each module's docs say what it does not do.

pub mod dockerd;
pub mod git_http;
pub mod labelled;
pub mod postgres;
pub mod proxy;
