//! What `warmpool doctor` checks on this host besides the engine: access to the
//! engine's socket, the data directory, and the secrets the config needs. Reads
//! files, the environment and `/proc/self/status`; talks to no engine.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The label an image carries when it is built for warmpool's GitHub bot (the
/// contract of images/claude-code: env in, a result file out).
pub const AGENT_LABEL: &str = "io.warmpool.agent";

/// Who this process is, for file permission checks.
struct Identity {
    uid: u32,
    gids: Vec<u32>,
}

fn identity() -> Option<Identity> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |key: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    // Effective ids (the second of real, effective, saved, filesystem).
    let uid = *field("Uid:").get(1)?;
    let mut gids = vec![*field("Gid:").get(1)?];
    gids.extend(field("Groups:"));
    Some(Identity { uid, gids })
}

/// The name of group `gid` in /etc/group, or the number.
fn group_name(gid: u32) -> String {
    std::fs::read_to_string("/etc/group")
        .ok()
        .and_then(|g| {
            g.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                (f.nth(1)?.parse::<u32>().ok()? == gid).then(|| name.to_string())
            })
        })
        .unwrap_or_else(|| gid.to_string())
}

/// Can this process read and write `meta`'s file by its mode bits? (Root can.)
fn may_read_write(meta: &std::fs::Metadata, who: &Identity) -> bool {
    if who.uid == 0 {
        return true;
    }
    let mode = meta.permissions().mode();
    let bits = if meta.uid() == who.uid {
        (mode >> 6) & 0o7
    } else if who.gids.contains(&meta.gid()) {
        (mode >> 3) & 0o7
    } else {
        mode & 0o7
    };
    bits & 0o6 == 0o6
}

/// Why this process may not use the engine's socket at `endpoint`
/// (`unix://PATH`), with the fix; `None` when it may, or when it is no socket.
pub fn socket_denied(endpoint: &str) -> Option<String> {
    let path = PathBuf::from(endpoint.strip_prefix("unix://")?);
    let meta = std::fs::metadata(&path).ok()?;
    let who = identity()?;
    if may_read_write(&meta, &who) {
        return None;
    }
    let group = group_name(meta.gid());
    Some(format!(
        "permission denied on {} (owner uid {}, group {group}, mode {:o}) for uid {}: \
         add the user to the `{group}` group (`sudo usermod -aG {group} $USER`, then log in again), \
         or run warmpool as root",
        path.display(),
        meta.uid(),
        meta.permissions().mode() & 0o777,
        who.uid,
    ))
}

/// Is `data_dir` (or, when it does not exist yet, the directory it would be
/// made in) writable? A line for `ok`, or the failure with its fix.
pub fn data_dir_writable(data_dir: &Path) -> Result<String, String> {
    let fix = "make it writable by the user warmpool runs as, or set [server] data_dir";
    let mut at = data_dir.to_path_buf();
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p.to_path_buf(),
            _ => {
                at = PathBuf::from(".");
                break;
            }
        }
    }
    if !at.is_dir() {
        return Err(format!(
            "[server] data_dir {}: {} is not a directory; {fix}",
            data_dir.display(),
            at.display()
        ));
    }
    let probe = at.join(format!(".warmpool-doctor-{}", std::process::id()));
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            Ok(if at == data_dir {
                format!("data_dir {} is writable", data_dir.display())
            } else {
                format!(
                    "data_dir {} will be made in {} (writable)",
                    data_dir.display(),
                    at.display()
                )
            })
        }
        Err(e) => Err(format!(
            "[server] data_dir {}: cannot write in {}: {e}; {fix}",
            data_dir.display(),
            at.display()
        )),
    }
}

/// A secret as the server reads it: `NAME`, else the file `NAME_FILE` names.
/// How it is set, or the failure with its fix.
pub fn secret(name: &str, needed_for: &str) -> Result<String, String> {
    let file_var = format!("{name}_FILE");
    if let Some(v) = std::env::var_os(name) {
        if v.is_empty() {
            return Err(format!(
                "secret {name} ({needed_for}) is empty: set it to the value, or unset it and set {file_var}"
            ));
        }
        return Ok(format!("secret {name} is set ({needed_for})"));
    }
    if let Some(path) = std::env::var_os(&file_var) {
        let path = PathBuf::from(path);
        return match std::fs::read(&path) {
            Ok(v) if v.iter().all(|b| b.is_ascii_whitespace()) => Err(format!(
                "secret {name} ({needed_for}): the file {} ({file_var}) is empty; write the secret into it",
                path.display()
            )),
            Ok(_) => Ok(format!(
                "secret {name} is read from {} ({needed_for})",
                path.display()
            )),
            Err(e) => Err(format!(
                "secret {name} ({needed_for}): cannot read the file {} ({file_var}): {e}; \
                 make it readable by the user warmpool runs as, or fix {file_var}",
                path.display()
            )),
        };
    }
    Err(format!(
        "secret {name} ({needed_for}) is not set: set {name} or {file_var} (a file holding it) in warmpool's environment"
    ))
}
