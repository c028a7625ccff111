//! Formatting for people: sizes, times, errors, and a live progress line on a terminal.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arca::format::tree::Timestamp;
use arca::ops::Progress;

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Local time as `YYYY-MM-DD HH:MM:SS`.
pub fn time(t: Timestamp) -> String {
    let secs = t.secs as libc::time_t;
    // SAFETY: tm is plain data; localtime_r fills it from a valid time_t pointer.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    if !ok {
        return format!("@{}", t.secs);
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// An error and its causes on one line.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

pub fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

#[derive(Default)]
struct Counters {
    files: AtomicU64,
    bytes: AtomicU64,
    done: AtomicBool,
}

/// A progress line on standard error, redrawn a few times a second; silent when disabled.
pub struct ProgressLine {
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

impl ProgressLine {
    pub fn start(enabled: bool, verb: &'static str) -> Self {
        let counters = Arc::new(Counters::default());
        let thread = enabled.then(|| {
            let c = Arc::clone(&counters);
            std::thread::spawn(move || {
                let start = Instant::now();
                while !c.done.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(250));
                    let secs = start.elapsed().as_secs_f64().max(0.001);
                    let b = c.bytes.load(Ordering::Relaxed);
                    eprint!(
                        "\r\x1b[K{verb}: {} entries, {} ({}/s), {:.0}s",
                        c.files.load(Ordering::Relaxed),
                        bytes(b),
                        bytes((b as f64 / secs) as u64),
                        secs
                    );
                }
                eprint!("\r\x1b[K");
            })
        });
        ProgressLine { counters, thread }
    }

    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.counters.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Progress for ProgressLine {
    fn advance(&self, files: u64, bytes: u64) {
        self.counters.files.fetch_add(files, Ordering::Relaxed);
        self.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}
