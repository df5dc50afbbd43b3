//! jobtool: a static, std-only test program for images without a shell.
//! Built by build.sh with `rustc -C target-feature=+crt-static`.
//!
//! jobtool args A B...    print each argument on its own line
//! jobtool env            print the environment, in order
//! jobtool cwd            print the working directory
//! jobtool id             print uid and gid
//! jobtool cat            copy stdin to stdout
//! jobtool exit N         exit with code N
//! jobtool stderr TEXT    print TEXT on stderr
//! jobtool flood BYTES    write BYTES bytes of a repeating pattern to stdout
//! jobtool sysv           create a SysV shared memory segment, message queue
//!                        and semaphore set (private keys), print their ids
//! jobtool rootsleep SECS become root for good (setresuid 0: needs the binary
//!                        setuid root, see the suid image), then sleep

use std::io::{Read, Write};

extern "C" {
    fn getuid() -> u32;
    fn getgid() -> u32;
    fn shmget(key: i32, size: usize, flags: i32) -> i32;
    fn msgget(key: i32, flags: i32) -> i32;
    fn semget(key: i32, nsems: i32, flags: i32) -> i32;
    fn setresuid(r: u32, e: u32, s: u32) -> i32;
}

const IPC_PRIVATE: i32 = 0;
const IPC_CREAT: i32 = 0o1000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cmd = args.get(1).map(String::as_str).unwrap_or("args");
    let rest = if args.len() > 2 { &args[2..] } else { &[] };
    let out = std::io::stdout();
    let mut out = out.lock();
    match cmd {
        "args" => {
            for a in rest {
                let _ = writeln!(out, "{a}");
            }
        }
        "env" => {
            for (k, v) in std::env::vars_os() {
                let _ = writeln!(out, "{}={}", k.to_string_lossy(), v.to_string_lossy());
            }
        }
        "cwd" => {
            let _ = writeln!(out, "{}", std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default());
        }
        "id" => {
            let _ = writeln!(out, "uid={} gid={}", unsafe { getuid() }, unsafe { getgid() });
        }
        "cat" => {
            let mut buf = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut buf);
            let _ = out.write_all(&buf);
        }
        "exit" => {
            let code: i32 = rest.first().and_then(|c| c.parse().ok()).unwrap_or(0);
            std::process::exit(code);
        }
        "stderr" => {
            eprintln!("{}", rest.join(" "));
        }
        "flood" => {
            let mut left: u64 = rest.first().and_then(|c| c.parse().ok()).unwrap_or(0);
            let chunk: Vec<u8> = (0..65536u32).map(|i| b'a' + (i % 26) as u8).collect();
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                if out.write_all(&chunk[..n]).is_err() {
                    std::process::exit(1);
                }
                left -= n as u64;
            }
        }
        "sysv" => {
            let flags = IPC_CREAT | 0o600;
            let shm = unsafe { shmget(IPC_PRIVATE, 4096, flags) };
            let msg = unsafe { msgget(IPC_PRIVATE, flags) };
            let sem = unsafe { semget(IPC_PRIVATE, 1, flags) };
            let _ = writeln!(out, "shm={shm} msg={msg} sem={sem}");
            if shm < 0 || msg < 0 || sem < 0 {
                std::process::exit(1);
            }
        }
        "rootsleep" => {
            if unsafe { setresuid(0, 0, 0) } != 0 {
                eprintln!("jobtool: setresuid(0, 0, 0) failed: is the binary setuid root?");
                std::process::exit(1);
            }
            let secs: u64 = rest.first().and_then(|c| c.parse().ok()).unwrap_or(1000);
            std::thread::sleep(std::time::Duration::from_secs(secs));
        }
        other => {
            eprintln!("jobtool: unknown command {other}");
            std::process::exit(2);
        }
    }
}
