//! Test support for warmpool's test suites: throwaway services that a test
//! starts, uses and that never outlive the test process (not even one that
//! panics or is killed). Used as a dev-dependency only; never published.
//!
//! - [`postgres`]: a PostgreSQL cluster in a temp directory on a free loopback
//!   port, one database per test.

pub mod postgres;
