//! The reset between two jobs in reuse mode, as far as it is pure: which mounts
//! the gate can put back (from `/proc/self/mountinfo`), which SysV IPC objects
//! exist (from `/proc/sysvipc/*`), and what differs between a tree recorded
//! before the first job and the tree now, as a list of fixes. Std only and no
//! I/O (shared source with the gate, like protocol.rs): the gate reads, walks
//! and applies; this file decides, so it is tested here.

use std::collections::{BTreeMap, HashSet};

/// One line of `/proc/self/mountinfo`, the fields the reset needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Where it is mounted, unescaped (the kernel writes space, tab, newline and
    /// backslash as `\NNN` octal).
    pub mount_point: Vec<u8>,
    pub fstype: String,
    /// Read-only, by the mount's own options or its superblock's.
    pub read_only: bool,
}

/// Parse `/proc/self/mountinfo`:
/// `id parent major:minor root mount-point options [optional...] - fstype source super-options`.
/// Lines that do not have this shape are left out.
pub fn parse_mountinfo(text: &[u8]) -> Vec<MountInfo> {
    let mut out = Vec::new();
    for line in text.split(|b| *b == b'\n') {
        let fields: Vec<&[u8]> = line
            .split(|b| *b == b' ')
            .filter(|f| !f.is_empty())
            .collect();
        if fields.len() < 10 {
            continue;
        }
        let Some(sep) = fields.iter().skip(6).position(|f| *f == b"-") else {
            continue;
        };
        let sep = sep + 6;
        let (Some(fstype), Some(super_opts)) = (fields.get(sep + 1), fields.get(sep + 3)) else {
            continue;
        };
        let ro = |opts: &[u8]| opts.split(|b| *b == b',').any(|o| o == b"ro");
        out.push(MountInfo {
            mount_point: unescape_octal(fields[4]),
            fstype: String::from_utf8_lossy(fstype).into_owned(),
            read_only: ro(fields[5]) || ro(super_opts),
        });
    }
    out
}

fn unescape_octal(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && i + 3 < s.len()
            && s[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (u32::from(s[i + 1] - b'0') << 6)
                | (u32::from(s[i + 2] - b'0') << 3)
                | u32::from(s[i + 3] - b'0');
            out.push(v as u8);
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// What the reset does with a mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountClass {
    /// Nothing: read-only, or a kernel view (proc, sysfs, devpts) whose state
    /// belongs to processes (gone with them) or to the host.
    Skip,
    /// A tmpfs or mqueue: recorded before the first job and put back after each
    /// (if it is a directory: a file bound over a masked path is skipped).
    Tree,
    /// Writable and of a kind the gate cannot put back (an overlay root, a bind
    /// mount or volume on a disk filesystem, a writable cgroup): the container
    /// cannot be reset. The gate applies this to directories and regular files
    /// (a file volume); a device bound over a masked path is skipped.
    Refuse,
}

pub fn classify(m: &MountInfo) -> MountClass {
    if m.read_only {
        return MountClass::Skip;
    }
    match m.fstype.as_str() {
        "proc" | "sysfs" | "devpts" => MountClass::Skip,
        "tmpfs" | "mqueue" => MountClass::Tree,
        _ => MountClass::Refuse,
    }
}

/// The ids in one of `/proc/sysvipc/shm`, `msg` or `sem`: a header line, then
/// one line per object whose second column is its id.
pub fn parse_sysvipc_ids(text: &str) -> Vec<i32> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect()
}

/// The inode of the initial (host's) IPC namespace, fixed by the kernel
/// (`PROC_IPC_INIT_INO`).
pub const INITIAL_IPC_NS_INODE: u64 = 0xEFFF_FFFF;

/// Whether the target of `/proc/self/ns/ipc` (`ipc:[INODE]`) is the host's IPC
/// namespace: then the SysV objects and POSIX queues the reset would remove are
/// the host's, and the container cannot be reset.
pub fn is_initial_ipc_ns(link: &str) -> bool {
    link.strip_prefix("ipc:[")
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|n| n.parse::<u64>().ok())
        == Some(INITIAL_IPC_NS_INODE)
}

/// What a tree entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink(Vec<u8>),
    CharDev,
    BlockDev,
    Fifo,
    Socket,
    /// The root of another mount inside this one: not entered, not compared
    /// (it is a mount of its own, reset on its own if it is writable).
    Mount,
}

/// One entry of a tree, with what the reset compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits with set-id and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    /// (seconds, nanoseconds); compared for regular files only.
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    /// A directory the gate could not list: what is under it is unknown.
    pub unreadable: bool,
    /// Extended attributes the gate can see (name, value), sorted by name:
    /// tmpfs keeps `user.*` attributes (Linux 6.6 and later), a channel from
    /// one job to the next like any file.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    /// An entry for another mount's root: only its presence counts.
    pub fn mount() -> Entry {
        Entry {
            kind: Kind::Mount,
            mode: 0,
            uid: 0,
            gid: 0,
            rdev: 0,
            size: 0,
            mtime: (0, 0),
            ctime: (0, 0),
            unreadable: false,
            xattrs: Vec::new(),
        }
    }
}

/// A mount's tree: relative path (`b""` is the mount's root, then `a`, `a/b`
/// ...) to entry.
pub type Tree = BTreeMap<Vec<u8>, Entry>;

/// One step that brings a tree back to its snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fix {
    /// Not in the snapshot: remove it, and everything under it.
    Remove(Vec<u8>),
    /// A directory of the snapshot that is gone: create it.
    Mkdir {
        path: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// A symlink of the snapshot that is gone or points elsewhere: (re)create it.
    Symlink {
        path: Vec<u8>,
        target: Vec<u8>,
        uid: u32,
        gid: u32,
    },
    Chown {
        path: Vec<u8>,
        uid: u32,
        gid: u32,
    },
    Chmod {
        path: Vec<u8>,
        mode: u32,
    },
    /// Extended attributes differ: remove those not recorded, set the recorded.
    Xattrs {
        path: Vec<u8>,
        want: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// Something of the snapshot changed in a way the gate does not put back
    /// (a regular file's content or metadata, a device node replaced).
    Unfixable {
        path: Vec<u8>,
        why: String,
    },
}

fn parent(path: &[u8]) -> Option<&[u8]> {
    if path.is_empty() {
        return None;
    }
    Some(match path.iter().rposition(|b| *b == b'/') {
        Some(i) => &path[..i],
        None => b"",
    })
}

/// Whether `path` or one of its ancestors is in `set`.
fn under(path: &[u8], set: &HashSet<Vec<u8>>) -> bool {
    let mut p = Some(path);
    while let Some(cur) = p {
        if set.contains(cur) {
            return true;
        }
        p = parent(cur);
    }
    false
}

/// What it takes to bring `now` back to `snap`, in the order to apply it:
/// removals first (only the topmost of what goes), then what is re-created
/// (parents before children), then owners, then modes (chown may clear set-id
/// bits, so the mode comes last). Empty when the trees are the same.
pub fn diff(snap: &Tree, now: &Tree) -> Vec<Fix> {
    let mut removes = Vec::new();
    let mut creates = Vec::new();
    let mut chowns = Vec::new();
    let mut chmods = Vec::new();
    let mut xattrs = Vec::new();
    let mut unfixable = Vec::new();
    // Paths that go whole: nothing under them needs its own step.
    let mut gone: HashSet<Vec<u8>> = HashSet::new();
    // Directories whose content is unknown now: what the snapshot has under them
    // is not checked this time (the next walk, after a chmod, will).
    let unknown: HashSet<Vec<u8>> = now
        .iter()
        .filter(|(_, e)| e.kind == Kind::Dir && e.unreadable)
        .map(|(p, _)| p.clone())
        .collect();

    for (path, e) in now {
        if under(path, &gone) || snap.contains_key(path) {
            continue;
        }
        if e.kind == Kind::Mount {
            unfixable.push(Fix::Unfixable {
                path: path.clone(),
                why: "a mount that was not there before".into(),
            });
            continue;
        }
        removes.push(Fix::Remove(path.clone()));
        gone.insert(path.clone());
    }

    for (path, s) in snap {
        // Below something that goes or is unknown: its parent's step covers it.
        let below = |set: &HashSet<Vec<u8>>| parent(path).is_some_and(|p| under(p, set));
        if below(&unknown) {
            continue;
        }
        let cur = if below(&gone) { None } else { now.get(path) };
        let Some(n) = cur else {
            // Missing (or under something that is being removed).
            match recreate(path, s) {
                Some(fix) => creates.push(fix),
                None => unfixable.push(Fix::Unfixable {
                    path: path.clone(),
                    why: format!("{} of the snapshot is gone", kind_name(&s.kind)),
                }),
            }
            // Whatever the snapshot has below a missing entry is missing too.
            gone.insert(path.clone());
            continue;
        };
        let same_kind = std::mem::discriminant(&s.kind) == std::mem::discriminant(&n.kind);
        if !same_kind {
            match recreate(path, s) {
                Some(fix) if !path.is_empty() && n.kind != Kind::Mount => {
                    removes.push(Fix::Remove(path.clone()));
                    gone.insert(path.clone());
                    creates.push(fix);
                }
                _ => unfixable.push(Fix::Unfixable {
                    path: path.clone(),
                    why: format!(
                        "{} of the snapshot is now {}",
                        kind_name(&s.kind),
                        kind_name(&n.kind)
                    ),
                }),
            }
            continue;
        }
        match (&s.kind, &n.kind) {
            (Kind::Mount, _) => {}
            (Kind::File, _) => {
                if (s.mode, s.uid, s.gid, s.size, s.mtime, s.ctime, &s.xattrs)
                    != (n.mode, n.uid, n.gid, n.size, n.mtime, n.ctime, &n.xattrs)
                {
                    unfixable.push(Fix::Unfixable {
                        path: path.clone(),
                        why: "a regular file of the snapshot was changed".into(),
                    });
                }
            }
            (Kind::Symlink(t), Kind::Symlink(u)) if t != u => {
                removes.push(Fix::Remove(path.clone()));
                creates.push(Fix::Symlink {
                    path: path.clone(),
                    target: t.clone(),
                    uid: s.uid,
                    gid: s.gid,
                });
            }
            (Kind::CharDev | Kind::BlockDev, _) if s.rdev != n.rdev => {
                unfixable.push(Fix::Unfixable {
                    path: path.clone(),
                    why: "a device node of the snapshot was replaced".into(),
                });
            }
            _ => {
                if (s.uid, s.gid) != (n.uid, n.gid) {
                    chowns.push(Fix::Chown {
                        path: path.clone(),
                        uid: s.uid,
                        gid: s.gid,
                    });
                }
                // Symlinks have no mode of their own on Linux.
                let has_mode = !matches!(s.kind, Kind::Symlink(_));
                if has_mode && (s.mode != n.mode || (s.uid, s.gid) != (n.uid, n.gid)) {
                    chmods.push(Fix::Chmod {
                        path: path.clone(),
                        mode: s.mode,
                    });
                }
                if s.xattrs != n.xattrs {
                    xattrs.push(Fix::Xattrs {
                        path: path.clone(),
                        want: s.xattrs.clone(),
                    });
                }
                if s.kind == Kind::Dir && n.unreadable && !s.unreadable && s.mode == n.mode {
                    unfixable.push(Fix::Unfixable {
                        path: path.clone(),
                        why: "a directory of the snapshot cannot be read".into(),
                    });
                }
            }
        }
    }
    let mut out = removes;
    out.extend(creates);
    out.extend(chowns);
    out.extend(chmods);
    out.extend(xattrs);
    out.extend(unfixable);
    out
}

/// The step that re-creates a snapshot entry, for the kinds the gate re-creates
/// (directories and symlinks: their whole state is in the snapshot).
fn recreate(path: &[u8], s: &Entry) -> Option<Fix> {
    match &s.kind {
        Kind::Dir => Some(Fix::Mkdir {
            path: path.to_vec(),
            mode: s.mode,
            uid: s.uid,
            gid: s.gid,
        }),
        Kind::Symlink(t) => Some(Fix::Symlink {
            path: path.to_vec(),
            target: t.clone(),
            uid: s.uid,
            gid: s.gid,
        }),
        _ => None,
    }
}

pub fn kind_name(k: &Kind) -> &'static str {
    match k {
        Kind::Dir => "a directory",
        Kind::File => "a regular file",
        Kind::Symlink(_) => "a symlink",
        Kind::CharDev => "a character device",
        Kind::BlockDev => "a block device",
        Kind::Fifo => "a fifo",
        Kind::Socket => "a socket",
        Kind::Mount => "a mount",
    }
}

/// A path for messages: `mount` joined with the relative `path`.
pub fn display_path(mount: &[u8], path: &[u8]) -> String {
    let mut p = mount.to_vec();
    if !path.is_empty() {
        if p.last() != Some(&b'/') {
            p.push(b'/');
        }
        p.extend_from_slice(path);
    }
    String::from_utf8_lossy(&p).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &[u8] = b"\
1179 1059 0:120 / / ro,relatime master:494 - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
1180 1179 0:125 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1181 1179 0:126 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
1182 1181 0:127 / /dev/pts rw,nosuid,noexec,relatime - devpts devpts rw,gid=5,mode=620,ptmxmode=666
1183 1179 0:128 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
1184 1183 0:29 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw
1185 1181 0:124 / /dev/mqueue rw,nosuid,nodev,noexec,relatime - mqueue mqueue rw
1186 1181 0:129 / /dev/shm rw,nosuid,nodev,noexec,relatime - tmpfs shm rw,size=65536k
1187 1179 0:130 / /tmp rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw
1188 1179 8:1 /var/lib/docker/containers/abc/hosts /etc/hosts rw,relatime - ext4 /dev/sda1 rw
1189 1179 8:1 /srv/data /my\\040data rw,relatime shared:1 master:2 - ext4 /dev/sda1 rw
1190 1179 0:131 / /g ro,relatime - ext4 /dev/sda1 rw
1191 1180 0:126 /null /proc/kcore rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
1192 1179 0:132 / /ro-super rw - tmpfs tmpfs ro
1193 1183 0:33 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
garbage line
";

    fn by_point(m: &[MountInfo], p: &str) -> MountInfo {
        m.iter()
            .find(|x| x.mount_point == p.as_bytes())
            .unwrap_or_else(|| panic!("{p} not parsed"))
            .clone()
    }

    #[test]
    fn mountinfo_is_parsed_with_escapes_and_optional_fields() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 15, "{m:?}");
        let root = by_point(&m, "/");
        assert_eq!(root.fstype, "overlay");
        assert!(root.read_only);
        let data = by_point(&m, "/my data");
        assert_eq!(data.fstype, "ext4");
        assert!(!data.read_only);
        assert!(by_point(&m, "/ro-super").read_only, "superblock ro counts");
        assert!(!by_point(&m, "/tmp").read_only);
        assert_eq!(unescape_octal(br"a\011b\134c\04"), b"a\tb\\c\\04");
    }

    #[test]
    fn mounts_are_classified() {
        let m = parse_mountinfo(MOUNTINFO);
        let class = |p: &str| classify(&by_point(&m, p));
        assert_eq!(class("/"), MountClass::Skip, "a read-only root");
        assert_eq!(class("/proc"), MountClass::Skip);
        assert_eq!(class("/dev/pts"), MountClass::Skip);
        assert_eq!(class("/sys"), MountClass::Skip);
        assert_eq!(
            class("/sys/fs/cgroup"),
            MountClass::Skip,
            "read-only cgroup"
        );
        assert_eq!(class("/dev"), MountClass::Tree);
        assert_eq!(class("/dev/shm"), MountClass::Tree);
        assert_eq!(class("/dev/mqueue"), MountClass::Tree);
        assert_eq!(class("/tmp"), MountClass::Tree);
        assert_eq!(
            class("/proc/kcore"),
            MountClass::Tree,
            "a file: the gate skips it on stat"
        );
        assert_eq!(class("/my data"), MountClass::Refuse, "a writable volume");
        assert_eq!(
            class("/etc/hosts"),
            MountClass::Refuse,
            "a file: checked by content"
        );
        assert_eq!(class("/g"), MountClass::Skip);
        assert_eq!(
            class("/sys/fs/cgroup/memory"),
            MountClass::Refuse,
            "writable cgroup"
        );
        let rw_root = MountInfo {
            mount_point: b"/".to_vec(),
            fstype: "overlay".into(),
            read_only: false,
        };
        assert_eq!(classify(&rw_root), MountClass::Refuse, "a writable rootfs");
    }

    #[test]
    fn sysvipc_lists_give_their_ids() {
        let shm = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap\n\
                   1234567890          5   644                  1024    12     0      0     0     0     0     0          0          0 1700000000                     0                     0\n\
                            0         32769   600                4096    13     0      0  1000  1000  1000  1000          0          0 1700000000                     0                     0\n";
        assert_eq!(parse_sysvipc_ids(shm), vec![5, 32769]);
        let msg = "       key      msqid perms      cbytes       qnum lspid lrpid   uid   gid  cuid  cgid      stime      rtime      ctime\n\
                            0          0   644           0          0     0     0     0     0     0     0          0          0 1700000000\n";
        assert_eq!(parse_sysvipc_ids(msg), vec![0]);
        let sem = "       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime\n";
        assert!(parse_sysvipc_ids(sem).is_empty());
        assert!(parse_sysvipc_ids("").is_empty());
    }

    #[test]
    fn the_hosts_ipc_namespace_is_recognised() {
        assert!(is_initial_ipc_ns("ipc:[4026531839]"));
        assert!(!is_initial_ipc_ns("ipc:[4026532451]"));
        assert!(!is_initial_ipc_ns("ipc:[]"));
        assert!(!is_initial_ipc_ns("mnt:[4026531839]"));
    }

    fn entry(kind: Kind, mode: u32) -> Entry {
        Entry {
            kind,
            mode,
            uid: 0,
            gid: 0,
            rdev: 0,
            size: 0,
            mtime: (1, 0),
            ctime: (1, 0),
            unreadable: false,
            xattrs: Vec::new(),
        }
    }

    fn tree(items: &[(&str, Entry)]) -> Tree {
        items
            .iter()
            .map(|(p, e)| (p.as_bytes().to_vec(), e.clone()))
            .collect()
    }

    fn dev_snapshot() -> Tree {
        let mut null = entry(Kind::CharDev, 0o666);
        null.rdev = 0x103;
        tree(&[
            ("", entry(Kind::Dir, 0o755)),
            ("null", null),
            ("fd", entry(Kind::Symlink(b"/proc/self/fd".to_vec()), 0o777)),
            ("shm", Entry::mount()),
            ("sub", entry(Kind::Dir, 0o755)),
            ("sub/file", entry(Kind::File, 0o644)),
        ])
    }

    #[test]
    fn equal_trees_need_nothing() {
        assert!(diff(&dev_snapshot(), &dev_snapshot()).is_empty());
    }

    #[test]
    fn new_entries_are_removed_topmost_only() {
        let snap = dev_snapshot();
        let mut now = snap.clone();
        now.insert(b"x".to_vec(), entry(Kind::Dir, 0o700));
        now.insert(b"x/y".to_vec(), entry(Kind::File, 0o600));
        now.insert(b"x-z".to_vec(), entry(Kind::Fifo, 0o600));
        now.insert(b"x/y2".to_vec(), entry(Kind::Dir, 0o000));
        now.insert(b"sub/new".to_vec(), entry(Kind::Socket, 0o600));
        let fixes = diff(&snap, &now);
        assert_eq!(
            fixes,
            vec![
                Fix::Remove(b"sub/new".to_vec()),
                Fix::Remove(b"x".to_vec()),
                Fix::Remove(b"x-z".to_vec()),
            ]
        );
    }

    #[test]
    fn metadata_is_restored_where_it_can_be() {
        let snap = dev_snapshot();
        let mut now = snap.clone();
        now.get_mut(b"".as_slice()).unwrap().mode = 0o777;
        now.get_mut(b"sub".as_slice()).unwrap().uid = 1000;
        now.get_mut(b"null".as_slice()).unwrap().mode = 0o600;
        *now.get_mut(b"fd".as_slice()).unwrap() = entry(Kind::Symlink(b"/etc".to_vec()), 0o777);
        let fixes = diff(&snap, &now);
        assert_eq!(
            fixes,
            vec![
                Fix::Remove(b"fd".to_vec()),
                Fix::Symlink {
                    path: b"fd".to_vec(),
                    target: b"/proc/self/fd".to_vec(),
                    uid: 0,
                    gid: 0
                },
                Fix::Chown {
                    path: b"sub".to_vec(),
                    uid: 0,
                    gid: 0
                },
                Fix::Chmod {
                    path: b"".to_vec(),
                    mode: 0o755
                },
                Fix::Chmod {
                    path: b"null".to_vec(),
                    mode: 0o666
                },
                Fix::Chmod {
                    path: b"sub".to_vec(),
                    mode: 0o755
                },
            ]
        );
    }

    #[test]
    fn missing_dirs_and_links_are_recreated_other_things_are_not() {
        let snap = dev_snapshot();
        let mut now = snap.clone();
        now.remove(b"sub".as_slice());
        now.remove(b"sub/file".as_slice());
        now.remove(b"fd".as_slice());
        let fixes = diff(&snap, &now);
        assert_eq!(fixes.len(), 3, "{fixes:?}");
        assert!(matches!(&fixes[0], Fix::Symlink { path, .. } if path == b"fd"));
        assert!(matches!(&fixes[1], Fix::Mkdir { path, mode: 0o755, .. } if path == b"sub"));
        assert!(
            matches!(&fixes[2], Fix::Unfixable { path, why } if path == b"sub/file" && why.contains("gone"))
        );
    }

    #[test]
    fn changed_files_and_devices_are_unfixable() {
        let snap = dev_snapshot();
        let mut now = snap.clone();
        now.get_mut(b"sub/file".as_slice()).unwrap().mtime = (2, 0);
        now.get_mut(b"null".as_slice()).unwrap().rdev = 0x105;
        let fixes = diff(&snap, &now);
        assert_eq!(fixes.len(), 2, "{fixes:?}");
        assert!(fixes.iter().all(|f| matches!(f, Fix::Unfixable { .. })));
        // A device replaced by a file, a dir replaced by a file.
        let mut now = snap.clone();
        *now.get_mut(b"null".as_slice()).unwrap() = entry(Kind::File, 0o666);
        *now.get_mut(b"sub".as_slice()).unwrap() = entry(Kind::File, 0o644);
        now.remove(b"sub/file".as_slice());
        let fixes = diff(&snap, &now);
        assert!(fixes.contains(&Fix::Remove(b"sub".to_vec())), "{fixes:?}");
        assert!(fixes
            .iter()
            .any(|f| matches!(f, Fix::Mkdir { path, .. } if path == b"sub")));
        assert!(fixes
            .iter()
            .any(|f| matches!(f, Fix::Unfixable { path, why } if path == b"null" && why.contains("now a regular file"))));
        assert!(fixes
            .iter()
            .any(|f| matches!(f, Fix::Unfixable { path, .. } if path == b"sub/file")));
    }

    #[test]
    fn other_mounts_are_neither_entered_nor_removed() {
        let snap = dev_snapshot();
        let mut now = snap.clone();
        now.insert(b"newmount".to_vec(), Entry::mount());
        let fixes = diff(&snap, &now);
        assert!(matches!(&fixes[..], [Fix::Unfixable { path, .. }] if path == b"newmount"));
        let mut now = snap.clone();
        now.remove(b"shm".as_slice());
        assert!(matches!(&diff(&snap, &now)[..], [Fix::Unfixable { .. }]));
    }

    #[test]
    fn an_unreadable_dir_is_chmodded_before_its_content_is_judged() {
        let snap = dev_snapshot();
        let mut now = snap.clone();
        now.remove(b"sub/file".as_slice());
        let sub = now.get_mut(b"sub".as_slice()).unwrap();
        sub.mode = 0o000;
        sub.unreadable = true;
        // The file under it is not claimed missing: the chmod comes first.
        assert_eq!(
            diff(&snap, &now),
            vec![Fix::Chmod {
                path: b"sub".to_vec(),
                mode: 0o755
            }]
        );
        // Unreadable with the right mode (the gate lost access some other way).
        let sub = now.get_mut(b"sub".as_slice()).unwrap();
        sub.mode = 0o755;
        assert!(matches!(&diff(&snap, &now)[..], [Fix::Unfixable { .. }]));
    }

    #[test]
    fn extended_attributes_are_put_back() {
        let mut snap = dev_snapshot();
        snap.get_mut(b"sub".as_slice()).unwrap().xattrs = vec![(b"user.a".to_vec(), b"1".to_vec())];
        let mut now = snap.clone();
        now.get_mut(b"".as_slice()).unwrap().xattrs = vec![(b"user.leak".to_vec(), b"x".to_vec())];
        now.get_mut(b"sub".as_slice()).unwrap().xattrs = vec![(b"user.a".to_vec(), b"2".to_vec())];
        assert_eq!(
            diff(&snap, &now),
            vec![
                Fix::Xattrs {
                    path: b"".to_vec(),
                    want: vec![]
                },
                Fix::Xattrs {
                    path: b"sub".to_vec(),
                    want: vec![(b"user.a".to_vec(), b"1".to_vec())]
                },
            ]
        );
        // On a regular file of the snapshot, a change is a change of the file.
        let mut now = snap.clone();
        now.get_mut(b"sub/file".as_slice()).unwrap().xattrs = vec![(b"user.x".to_vec(), vec![])];
        assert!(matches!(&diff(&snap, &now)[..], [Fix::Unfixable { .. }]));
    }

    #[test]
    fn paths_display_under_their_mount() {
        assert_eq!(display_path(b"/tmp", b""), "/tmp");
        assert_eq!(display_path(b"/tmp", b"a/b"), "/tmp/a/b");
        assert_eq!(display_path(b"/", b"a"), "/a");
    }
}
