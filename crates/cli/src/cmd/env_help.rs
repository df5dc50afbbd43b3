//! The "Environment:" section of each subcommand's `--help`: every variable it
//! reads. Kept beside each other so a new variable is added everywhere it applies.

pub const SERVE: &str = "\
Environment:
  DOCKER_HOST                 the engine, unless the config sets [engine] host
  WARMPOOL_API_TOKEN          clients must send it as a Bearer token (required
                              unless [server] listen is on loopback); or
  WARMPOOL_API_TOKEN_FILE     a file holding it
  WARMPOOL_STORE_URL          the job store (overrides [store] url); or
  WARMPOOL_STORE_URL_FILE     a file holding it
  PGPASSWORD                  PostgreSQL's password, when the URL has none
  GITHUB_WEBHOOK_SECRET, GITHUB_TOKEN (or NAME_FILE, a file holding it)
                              with [github]: webhook signatures, API calls
  GITHUB_APP_PRIVATE_KEY_FILE with [github] app_id: the App's private key
                              (overrides private_key_file); no GITHUB_TOKEN then
  each profile's secret_env NAME (or NAME_FILE)
                              passed to that profile's jobs, redacted
  WARMPOOL_LOG                log filter (default info; e.g. debug)";

pub const RUN: &str = "\
Environment:
  DOCKER_HOST                 the engine, unless the config sets [engine] host
  the profile's secret_env NAME (or NAME_FILE)
                              passed to the job, redacted
  KEY of each `-e KEY`        its value is taken from here
  WARMPOOL_LOG                log filter (default off; e.g. debug)";

pub const DOCTOR: &str = "\
Environment:
  DOCKER_HOST                 the engine, unless the config sets [engine] host
  GITHUB_WEBHOOK_SECRET, GITHUB_TOKEN (or NAME_FILE)
                              checked when the config has [github]
  each profile's secret_env NAME (or NAME_FILE)
                              checked to be set and readable
  WARMPOOL_LOG                log filter (default off)";

pub const BENCH: &str = "\
Environment:
  DOCKER_HOST                 the engine, unless the config sets [engine] host
  WARMPOOL_STORE_URL          the store of --queue when --store-url is not given
  the profile's secret_env NAME (or NAME_FILE)
                              passed to the jobs
  WARMPOOL_LOG                log filter (default off)";

pub const SIMULATE: &str = "\
Environment:
  WARMPOOL_LOG                log filter (default off); nothing else is read";

pub const CLIENT: &str = "\
Environment:
  WARMPOOL_SERVER             the server's URL (as --server)
  WARMPOOL_API_TOKEN          sent as a Bearer token, when set
  WARMPOOL_LOG                log filter (default off)";

pub const SUBMIT: &str = "\
Environment:
  WARMPOOL_SERVER             the server's URL (as --server)
  WARMPOOL_API_TOKEN          sent as a Bearer token, when set
  KEY of each `-e KEY`        its value is sent, when set here
  WARMPOOL_LOG                log filter (default off)";

pub const BACKUP: &str = "\
Environment:
  WARMPOOL_STORE_URL, WARMPOOL_STORE_URL_FILE
                              a PostgreSQL store is refused (use pg_dump)
  WARMPOOL_LOG                log filter (default off)

Restore: stop the server, put the copy in place as <data_dir>/jobs.sqlite3
(removing jobs.sqlite3-wal and jobs.sqlite3-shm), start the server.";
