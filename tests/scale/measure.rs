//! Runs a command and measures its wall time and peak resident memory (from `wait4`, so
//! only that process is counted, not the test itself).
//!
//! Linux starts a new process's peak at its parent's peak, so the figure only means
//! something while the test process itself stays smaller than what it measures: each run
//! checks that.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Measured {
    pub wall: Duration,
    pub peak_rss_mib: f64,
    pub stdout: Vec<u8>,
}

impl std::fmt::Debug for Measured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} s, {:.1} MiB peak; printed:\n{}",
            self.wall.as_secs_f64(),
            self.peak_rss_mib,
            String::from_utf8_lossy(&self.stdout)
        )
    }
}

pub struct Run {
    cmd: Command,
}

impl Run {
    pub fn new(program: impl AsRef<OsStr>) -> Run {
        Run {
            cmd: Command::new(program),
        }
    }

    /// Removes every `ARCA_*` variable inherited from the test run's environment.
    pub fn env_clear_arca(&mut self) -> &mut Run {
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ARCA_") {
                self.cmd.env_remove(key);
            }
        }
        self
    }

    pub fn env(&mut self, key: &str, value: impl AsRef<OsStr>) -> &mut Run {
        self.cmd.env(key, value);
        self
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Run {
        self.cmd.arg(arg);
        self
    }

    pub fn args(&mut self, args: &[&str]) -> &mut Run {
        self.cmd.args(args);
        self
    }

    /// Runs the command to its end and expects it to succeed.
    // The child is reaped by `wait4`, not `Child::wait`, which gives no resource usage.
    #[allow(clippy::zombie_processes)]
    pub fn run_ok(&mut self) -> Measured {
        let started = Instant::now();
        let mut child = self
            .cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", self.cmd));
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut buf = Vec::new();
            stdout.read_to_end(&mut buf).unwrap();
            buf
        });
        let err = std::thread::spawn(move || {
            let mut buf = Vec::new();
            stderr.read_to_end(&mut buf).unwrap();
            buf
        });
        let (status, usage) = wait4(child.id());
        let own_peak_kib = own_peak_kib();
        let wall = started.elapsed();
        let stdout = out.join().unwrap();
        let stderr = err.join().unwrap();
        assert!(
            status.success(),
            "{:?} failed ({status}):\n{}\n{}",
            self.cmd,
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
        assert!(
            usage.ru_maxrss > own_peak_kib,
            "{:?} peaked at {} KiB, not above the {own_peak_kib} KiB this test process has \
             used: its own peak is unknown",
            self.cmd,
            usage.ru_maxrss
        );
        Measured {
            wall,
            // Linux reports ru_maxrss in KiB.
            peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
            stdout,
        }
    }
}

/// Waits for process `pid` and returns its exit status and resource usage.
fn wait4(pid: u32) -> (ExitStatus, libc::rusage) {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value, and wait4 only writes into the two
    // out-parameters we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: as above; pid is our own child, not yet reaped.
        let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
        if r == pid as libc::pid_t {
            return (ExitStatus::from_raw(status), usage);
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "wait4: {e}");
    }
}

/// The peak resident memory of this process so far, in KiB.
fn own_peak_kib() -> libc::c_long {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: usage is a live rusage we own.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    usage.ru_maxrss
}
