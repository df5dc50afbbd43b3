//! [`GitServer`]: a git smart-HTTP server standing in for GitHub's git host:
//! `git http-backend` as a CGI behind a small HTTP/1.1 server that demands
//! Basic auth `x-access-token:<token>` (as GitHub does for a token) and records
//! every request with the bytes it served. Serves the bare repositories under
//! one directory, `<root>/<owner>/<repo>.git`, read and write (a test pushes).
//! One request per connection; a test server, not a fast one.
//!
//! It binds an address the test chooses: [`bridge_gateway`] is the host's
//! address on Docker's default bridge, which both the host and containers on
//! `network = "bridge"` reach.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct GitRequest {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    pub query: String,
    /// The `Authorization` header, as sent ("" when none).
    pub auth: String,
    /// The status answered.
    pub status: u16,
    /// Body bytes sent back (the pack, for a fetch).
    pub bytes_out: u64,
}

impl GitRequest {
    /// A fetch's pack negotiation and download (`POST .../git-upload-pack`).
    pub fn is_upload_pack(&self) -> bool {
        self.method == "POST" && self.path.ends_with("/git-upload-pack")
    }
}

pub struct GitServer {
    /// `http://ADDR:PORT`: a repository is `<url>/<owner>/<repo>.git`.
    pub url: String,
    pub root: PathBuf,
    requests: Arc<Mutex<Vec<GitRequest>>>,
}

impl GitServer {
    /// Serve the repositories under `root` on `ip` (port chosen by the kernel),
    /// to clients that send `x-access-token:<token>`.
    pub fn start(root: &Path, ip: IpAddr, token: &str) -> std::io::Result<GitServer> {
        let listener = TcpListener::bind((ip, 0))?;
        let url = format!("http://{}", listener.local_addr()?);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let expected = format!(
            "Basic {}",
            base64(format!("x-access-token:{token}").as_bytes())
        );
        let (recorded, root_dir) = (requests.clone(), root.to_path_buf());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (recorded, root, expected) =
                    (recorded.clone(), root_dir.clone(), expected.clone());
                std::thread::spawn(move || {
                    if let Some(r) = serve(conn, &root, &expected) {
                        recorded.lock().unwrap_or_else(|p| p.into_inner()).push(r);
                    }
                });
            }
        });
        Ok(GitServer {
            url,
            root: root.to_path_buf(),
            requests,
        })
    }

    pub fn requests(&self) -> Vec<GitRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Forget the requests so far.
    pub fn clear(&self) {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// A bare copy of the repository `src` at `dest` (hard links: the objects are
/// shared with `src`, which stays untouched), for a test to serve and push to.
pub fn bare_copy(src: &Path, dest: &Path) -> Result<(), String> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
    }
    let out = Command::new("git")
        .args(["clone", "--quiet", "--bare", "--local"])
        .arg(src)
        .arg(dest)
        .output()
        .map_err(|e| format!("run git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git clone --bare {} {}: {}",
            src.display(),
            dest.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// The generated repository of the mirror tests and bench (`tests/bench/gen-repo.sh`:
/// ≥ 100 MB of history from `git fast-import`, made once and cached under the
/// target dir): the path of its bare repository. Panics with the script's
/// error when it cannot be made.
pub fn generated_repo() -> &'static Path {
    static GEN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    GEN.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/bench/gen-repo.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "tests/bench/gen-repo.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// The host's address on Docker's default bridge (`docker0`): from the
/// network's gateway, else the first address of its subnet.
pub fn bridge_gateway() -> Result<IpAddr, String> {
    let out = Command::new("docker")
        .args([
            "network",
            "inspect",
            "bridge",
            "--format",
            "{{range .IPAM.Config}}{{.Gateway}} {{.Subnet}}{{end}}",
        ])
        .output()
        .map_err(|e| format!("docker network inspect bridge: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut gateway = None;
    for word in text.split_whitespace() {
        if let Ok(ip) = word.parse::<IpAddr>() {
            gateway = Some(ip);
        } else if let Some((net, _)) = word.split_once('/') {
            if let (None, Ok(std::net::IpAddr::V4(v4))) = (gateway, net.parse::<IpAddr>()) {
                gateway = Some(IpAddr::V4((u32::from(v4) + 1).into()));
            }
        }
    }
    gateway.ok_or_else(|| format!("no gateway or subnet for the bridge network in {text:?}"))
}

fn serve(conn: TcpStream, root: &Path, expected_auth: &str) -> Option<GitRequest> {
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut conn = conn;
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let auth = header("authorization");
    let mut request = GitRequest {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        auth: auth.clone(),
        status: 0,
        bytes_out: 0,
    };
    if auth != expected_auth {
        request.status = 401;
        let body = "credentials needed\n";
        let _ = write!(
            conn,
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return Some(request);
    }
    let body = if header("transfer-encoding").eq_ignore_ascii_case("chunked") {
        read_chunked(&mut reader)?
    } else {
        let n: usize = header("content-length").parse().unwrap_or(0);
        let mut b = vec![0u8; n];
        reader.read_exact(&mut b).ok()?;
        b
    };
    let mut child = Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", &path)
        .env("QUERY_STRING", &query)
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_USER", "x-access-token")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let mut out = BufReader::new(child.stdout.take()?);
    // CGI headers, then the body.
    let (mut status, mut cgi_headers) = (200u16, String::new());
    loop {
        let mut h = String::new();
        if out.read_line(&mut h).ok()? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some(s) = h.strip_prefix("Status:") {
            status = s.split_whitespace().next()?.parse().unwrap_or(500);
        } else {
            cgi_headers.push_str(h);
            cgi_headers.push_str("\r\n");
        }
    }
    request.status = status;
    if write!(
        conn,
        "HTTP/1.1 {status} Git\r\n{cgi_headers}Connection: close\r\n\r\n"
    )
    .is_err()
    {
        return Some(request);
    }
    request.bytes_out = std::io::copy(&mut out, &mut conn).unwrap_or(0);
    let _ = feeder.join();
    let _ = child.wait();
    Some(request)
}

fn read_chunked(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).ok()?;
        let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
        let mut chunk = vec![0u8; n + 2];
        if n == 0 {
            // The trailer's end: an empty line.
            let mut end = String::new();
            reader.read_line(&mut end).ok()?;
            return Some(body);
        }
        reader.read_exact(&mut chunk).ok()?;
        body.extend_from_slice(&chunk[..n]);
    }
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in input.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_pads() {
        assert_eq!(
            super::base64(b"x-access-token:t"),
            "eC1hY2Nlc3MtdG9rZW46dA=="
        );
        assert_eq!(super::base64(b"abc"), "YWJj");
        assert_eq!(super::base64(b"ab"), "YWI=");
    }
}
