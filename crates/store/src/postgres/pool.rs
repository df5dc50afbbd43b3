//! Connections to the database: a small pool, the retry rule for lost
//! connections, and how a failure becomes a [`StoreError`]. Knows no SQL of
//! jobs.
//!
//! Every store operation is one transaction on one pooled connection, run by
//! [`Tries`]: a connection-level failure (the server restarted or went away, a
//! refused connection, a deadlock) is retried with back-off for at most
//! [`RETRY_FOR`] while retrying is safe, i.e. the failure came before `COMMIT`
//! was sent (the server rolled the transaction back), or the operation is
//! [`Retry::Always`] (reads, and writes whose repeat is harmless or detected).
//! Each attempt has a deadline ([`ATTEMPT_TIMEOUT`]): nothing hangs.

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use crate::StoreError;

/// Connections a store keeps open at most (besides its listener).
pub(super) const POOL_SIZE: usize = 8;

/// How long an operation retries connection-level failures.
pub(super) const RETRY_FOR: Duration = Duration::from_secs(10);

/// The longest one attempt (connect, statements, commit) may take.
pub(super) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a new connection may take to be made.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// When an operation may be tried again after a connection-level failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// Only if the failure came before `COMMIT` was sent.
    BeforeCommit,
    /// Also when the commit's outcome is unknown: the operation is a read, or
    /// its repeat changes nothing (or is recognised, as `insert` does).
    Always,
}

/// Why one attempt failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// The database said no, or the connection failed.
    Db {
        error: tokio_postgres::Error,
        at_commit: bool,
    },
    /// The attempt passed its deadline.
    TimedOut,
    /// A store-level answer (no such job, fenced, a damaged row...): final.
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(error: tokio_postgres::Error) -> Failure {
        Failure::Db {
            error,
            at_commit: false,
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure::Store(e)
    }
}

/// Whether `error` means "the connection, not the statement, failed": the
/// transaction did not commit and a new connection may well succeed.
pub(super) fn is_transient(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        None => true, // I/O: refused, reset, a closed socket
        Some(code) => {
            code.code().starts_with("08") // connection exception
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::T_R_DEADLOCK_DETECTED,
                    SqlState::TOO_MANY_CONNECTIONS,
                ]
                .contains(code)
        }
    }
}

/// A database error as text: the server's message and detail, or the client's.
pub(super) fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_owned(),
        },
        None => match std::error::Error::source(error) {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        },
    }
}

/// The retry state of one operation.
pub(super) struct Tries {
    action: &'static str,
    retry: Retry,
    started: Instant,
    delay: Duration,
    /// The previous attempt failed in a way that may have committed.
    pub(super) retried: bool,
}

/// What to do after an attempt.
pub(super) enum Next<T> {
    Done(Result<T, StoreError>),
    Again,
}

impl Tries {
    pub(super) fn new(action: &'static str, retry: Retry) -> Tries {
        Tries {
            action,
            retry,
            started: Instant::now(),
            delay: Duration::from_millis(50),
            retried: false,
        }
    }

    /// Decides on an attempt's result; sleeps before `Again`.
    pub(super) async fn next<T>(&mut self, result: Result<T, Failure>) -> Next<T> {
        let failure = match result {
            Ok(value) => return Next::Done(Ok(value)),
            Err(Failure::Store(e)) => return Next::Done(Err(e)),
            Err(failure) => failure,
        };
        let (may_retry, message) = match &failure {
            Failure::Db { error, at_commit } => {
                let transient = is_transient(error);
                let safe = !at_commit || self.retry == Retry::Always;
                let message = if *at_commit && transient && !safe {
                    format!(
                        "the connection to PostgreSQL failed while committing ({}); the \
                         change may or may not be stored: read it back before trying again",
                        describe(error)
                    )
                } else {
                    describe(error)
                };
                (transient && safe, message)
            }
            Failure::TimedOut => (
                self.retry == Retry::Always,
                format!(
                    "PostgreSQL did not answer within {}s; check that the database is up \
                     and reachable",
                    ATTEMPT_TIMEOUT.as_secs()
                ),
            ),
            Failure::Store(_) => (false, String::new()),
        };
        if may_retry && self.started.elapsed() + self.delay < RETRY_FOR {
            tracing::debug!(action = self.action, error = %message, "retrying");
            tokio::time::sleep(self.delay).await;
            self.delay = (self.delay * 2).min(Duration::from_secs(1));
            self.retried = true;
            return Next::Again;
        }
        let message = if may_retry {
            format!(
                "{message}; gave up after {}s of retries: check that PostgreSQL is up and \
                 reachable",
                RETRY_FOR.as_secs()
            )
        } else {
            message
        };
        Next::Done(Err(StoreError::Backend {
            action: self.action,
            message,
        }))
    }
}

/// A small pool of connections: at most [`POOL_SIZE`] in use, idle ones kept,
/// closed ones dropped, new ones made on demand.
pub(super) struct Pool {
    config: Config,
    idle: Mutex<Vec<Client>>,
    permits: Semaphore,
}

/// A connection lent by the pool. Given back by [`Conn::release`] only: one
/// dropped otherwise (an attempt failed or passed its deadline, perhaps
/// inside a transaction) is closed.
pub(super) struct Conn<'a> {
    pool: &'a Pool,
    client: Option<Client>,
    _permit: SemaphorePermit<'a>,
}

impl Conn<'_> {
    pub(super) fn client(&self) -> Result<&Client, Failure> {
        self.client
            .as_ref()
            .ok_or(Failure::Store(StoreError::Closed))
    }

    /// Gives a connection that is outside any transaction back to the pool.
    pub(super) fn release(mut self) {
        if let Some(client) = self.client.take() {
            if !client.is_closed() {
                lock(&self.pool.idle).push(client);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pool {
    pub(super) fn new(config: Config) -> Pool {
        Pool {
            config,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(POOL_SIZE),
        }
    }

    pub(super) async fn get(&self) -> Result<Conn<'_>, Failure> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Failure::Store(StoreError::Closed))?;
        loop {
            let idle = lock(&self.idle).pop();
            match idle {
                Some(client) if client.is_closed() => continue,
                Some(client) => {
                    return Ok(Conn {
                        pool: self,
                        client: Some(client),
                        _permit: permit,
                    })
                }
                None => break,
            }
        }
        let client = connect(&self.config).await?;
        Ok(Conn {
            pool: self,
            client: Some(client),
            _permit: permit,
        })
    }
}

/// A new connection, its I/O driven by a task of its own.
pub(super) async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %describe(&e), "a PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// The URL (or `key=value` string) with its password replaced by `***`: for
/// logs and error messages.
pub fn redacted_url(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        let mut out = url[..scheme_end + 3].to_owned();
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        out.push_str(&redact_query(&rest[authority_end..]));
        out
    } else {
        redact_key_values(url)
    }
}

/// `?password=...` in a URL's query.
fn redact_query(tail: &str) -> String {
    let Some(q) = tail.find('?') else {
        return tail.to_owned();
    };
    let (path, query) = tail.split_at(q + 1);
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => p.to_owned(),
        })
        .collect();
    format!("{path}{}", params.join("&"))
}

/// `password=...` (or `password='...'`) in a `key=value` connection string.
fn redact_key_values(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = find_password_key(rest) {
        let value_start = pos + "password".len();
        let after_key = &rest[value_start..];
        let trimmed = after_key.trim_start();
        let Some(value) = trimmed.strip_prefix('=') else {
            out.push_str(&rest[..value_start]);
            rest = after_key;
            continue;
        };
        out.push_str(&rest[..pos]);
        out.push_str("password=***");
        let value = value.trim_start();
        let end = if let Some(quoted) = value.strip_prefix('\'') {
            let mut escaped = false;
            let close = quoted
                .char_indices()
                .find(|&(_, c)| {
                    let end = c == '\'' && !escaped;
                    escaped = c == '\\' && !escaped;
                    end
                })
                .map(|(i, _)| i + 2)
                .unwrap_or(value.len());
            close.min(value.len())
        } else {
            value.find(char::is_whitespace).unwrap_or(value.len())
        };
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

fn find_password_key(s: &str) -> Option<usize> {
    let lower = s.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("password") {
        let at = from + i;
        if at == 0 || lower.as_bytes()[at - 1].is_ascii_whitespace() {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("idle", &lock(&self.idle).len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let cases = [
            (
                "postgres://u:s3cret@db.example:5432/warmpool",
                "postgres://u:***@db.example:5432/warmpool",
            ),
            ("postgresql://u@h/db", "postgresql://u@h/db"),
            ("postgres://h/db", "postgres://h/db"),
            (
                "postgres://u:p%40ss@h/db?sslmode=disable&password=x2",
                "postgres://u:***@h/db?sslmode=disable&password=***",
            ),
            (
                "host=h user=u password=s3cret dbname=d",
                "host=h user=u password=*** dbname=d",
            ),
            (
                "host=h password = 'a b\\' c' dbname=d",
                "host=h password=*** dbname=d",
            ),
        ];
        for (url, shown) in cases {
            let redacted = redacted_url(url);
            assert_eq!(redacted, shown, "{url}");
            for secret in ["s3cret", "p%40ss", "x2", "a b"] {
                assert!(!redacted.contains(secret), "{redacted}");
            }
        }
    }
}
