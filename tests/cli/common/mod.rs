//! The test harness: a temporary directory holding a repository, a cache and source files,
//! and an `arca` command that uses exactly those, whatever the environment of the test run.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;

pub const PASSWORD: &str = "correct horse battery staple";

/// A command that hangs (a fifo opened for reading, say) fails the test instead of the run.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Exit codes of `arca`.
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_PROBLEMS: i32 = 3;

pub struct TestEnv {
    dir: tempfile::TempDir,
    /// The `arca` binary this environment runs (see [`pin_binary`]).
    bin: PathBuf,
    pub repo: PathBuf,
    pub cache: PathBuf,
    /// Where tests put the files they back up.
    pub src: PathBuf,
}

impl TestEnv {
    /// A temporary directory with an empty `src/` and no repository yet.
    pub fn new() -> TestEnv {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let src = root.join("src");
        fs::create_dir(&src).unwrap();
        TestEnv {
            bin: pin_binary(&root),
            repo: root.join("repo"),
            cache: root.join("cache"),
            src,
            dir,
        }
    }

    /// A new environment with a repository made with the cheap KDF.
    pub fn init() -> TestEnv {
        Self::init_with(&[])
    }

    /// Like [`TestEnv::init`], with extra `init` options.
    pub fn init_with(extra: &[&str]) -> TestEnv {
        let env = Self::new();
        let mut args = vec!["init", "--kdf-memory", "64", "--kdf-iterations", "1"];
        args.extend_from_slice(extra);
        env.arca(&args).assert().success();
        env
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the temporary directory (not necessarily existing).
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// `arca ARGS` with this environment's repository, cache and password, and no other
    /// `ARCA_*` variable from the test run's own environment.
    pub fn arca(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        self.configure(&mut cmd);
        cmd.args(args);
        cmd
    }

    /// `arca ARGS` run by a user without root's privileges: ourselves if we are not root,
    /// else `nobody` (via `setpriv`, after making the whole environment accessible to
    /// everyone). `None` when neither is possible: the caller skips its test.
    pub fn arca_unprivileged(&self, args: &[&str]) -> Option<Command> {
        if !is_root() {
            return Some(self.arca(args));
        }
        if !have("setpriv") {
            eprintln!("skipped: running as root without setpriv to drop privileges");
            return None;
        }
        self.open_to_everyone();
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        cmd.arg(&self.bin);
        self.configure(&mut cmd);
        cmd.args(args);
        Some(cmd)
    }

    fn configure(&self, cmd: &mut Command) {
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ARCA_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("ARCA_REPOSITORY", &self.repo)
            .env("ARCA_CACHE_DIR", &self.cache)
            .env("ARCA_PASSWORD", PASSWORD)
            .current_dir(self.root())
            .timeout(TIMEOUT);
    }

    /// Runs `arca --json ARGS`, expects success, and parses standard output.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self
            .arca(&all)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("arca {all:?} printed invalid JSON ({e}): {}", text(&out)))
    }

    /// Backs up `paths` with `--json` plus `extra` options, expects exit 0, returns the report.
    pub fn backup(&self, paths: &[&Path], extra: &[&str]) -> Value {
        let mut args: Vec<&str> = vec!["backup"];
        args.extend(paths.iter().map(|p| p.to_str().unwrap()));
        args.extend_from_slice(extra);
        self.json(&args)
    }

    /// Backs up `src/`, expects exit 0, returns the report.
    pub fn backup_src(&self) -> Value {
        self.backup(&[&self.src], &[])
    }

    /// Restores `SPEC` (`SNAPSHOT[:PATH]`) into `target` (relative to the environment) with
    /// `extra` options and expects exit 0. Returns the target's path.
    pub fn restore(&self, spec: &str, target: &str, extra: &[&str]) -> PathBuf {
        let dest = self.path(target);
        let mut args = vec!["restore", spec, "--target", dest.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.arca(&args).assert().success();
        dest
    }

    /// `latest:<src>`: the contents of `src/` in the newest snapshot.
    pub fn latest_src(&self) -> String {
        format!("latest:{}", self.src.display())
    }

    /// Backs up `src/` and restores it into `restored/`; returns `restored/`.
    pub fn round_trip(&self) -> PathBuf {
        self.backup_src();
        self.restore(&self.latest_src(), "restored", &[])
    }

    /// Writes a file below `src/`, creating its parent directories.
    pub fn write_file(&self, rel: &str, content: &[u8]) -> PathBuf {
        let path = self.src.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
        path
    }

    /// Every file of the repository (relative path → content), to show nothing was written.
    pub fn repo_files(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        if self.repo.exists() {
            for path in files_below(&self.repo) {
                let rel = path.strip_prefix(&self.repo).unwrap().display().to_string();
                out.insert(rel, fs::read(&path).unwrap());
            }
        }
        out
    }

    /// The repository's pack files.
    pub fn packs(&self) -> Vec<PathBuf> {
        files_below(&self.repo.join("packs"))
    }

    /// The files of one repository folder (`index`, `snapshots`, `keys`).
    pub fn repo_dir_files(&self, dir: &str) -> Vec<PathBuf> {
        files_below(&self.repo.join(dir))
    }

    /// Runs `arca ARGS`, expecting exit `code`, no panic, and the repository untouched.
    pub fn fails(&self, args: &[&str], code: i32) -> Output {
        fails_with(self, self.arca(args), code)
    }

    /// `arca verify --read-data` succeeds: what the test wrote is intact, data included.
    pub fn assert_verified(&self) {
        let out = self.arca(&["verify", "--read-data"]).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "verify --read-data found problems:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }

    /// Makes everything in the environment readable and writable by any user.
    fn open_to_everyone(&self) {
        fs::set_permissions(self.root(), fs::Permissions::from_mode(0o777)).unwrap();
        for path in entries_below(self.root()) {
            let meta = fs::symlink_metadata(&path).unwrap();
            // The binary may be a hard link to cargo's own: its mode is not ours to change.
            if !meta.file_type().is_symlink() && path != self.bin {
                let mode = if meta.is_dir() { 0o777 } else { 0o666 };
                fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            }
        }
    }
}

/// The `arca` binary cargo built for this test run, hard-linked into `dir` when possible.
///
/// Other people build in the same target directory while the tests run; a rebuild replaces
/// `target/debug/arca`, and a test starting at that moment would find no binary. A link
/// keeps the file this environment started with, and costs nothing.
fn pin_binary(dir: &Path) -> PathBuf {
    let built = assert_cmd::cargo::cargo_bin("arca");
    let pinned = dir.join("arca");
    for _ in 0..100 {
        if fs::hard_link(&built, &pinned).is_ok() {
            return pinned;
        }
        if built.exists() {
            return built; // another file system: run it where it is
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{} is missing: build it with `cargo test`", built.display());
}

/// Runs `cmd`, expecting exit `code`, no panic, and `env`'s repository untouched.
pub fn fails_with(env: &TestEnv, mut cmd: Command, code: i32) -> Output {
    let before = env.repo_files();
    let out = cmd.output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}stderr:\n{stderr}",
        text(&out.stdout)
    );
    assert!(!stderr.contains("panicked"), "arca panicked:\n{stderr}");
    assert!(env.repo_files() == before, "the repository changed");
    out
}

/// An error that the user sees: one line on standard error saying `arca: error:`.
pub fn error_line(out: &Output) -> String {
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected a one-line error, got:\n{stderr}");
    assert!(lines[0].starts_with("arca: error: "), "{stderr}");
    lines[0].to_string()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn stdout(out: &Output) -> String {
    text(&out.stdout)
}

pub fn stderr(out: &Output) -> String {
    text(&out.stderr)
}

/// Deterministic pseudo-random bytes (xorshift64*): incompressible, different per seed.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Every entry below `dir`, directories before their contents, sorted.
pub fn entries_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(read) = fs::read_dir(dir) else {
        return out;
    };
    let mut names: Vec<PathBuf> = read.map(|e| e.unwrap().path()).collect();
    names.sort();
    for path in names {
        let is_dir = fs::symlink_metadata(&path).unwrap().is_dir();
        out.push(path.clone());
        if is_dir {
            out.extend(entries_below(&path));
        }
    }
    out
}

/// Fails if a restore left a temporary file (`.arca-restore-…`) anywhere below `dir`.
pub fn assert_no_temporary_files(dir: &Path) {
    let leftovers: Vec<_> = entries_below(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".arca-restore-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Every regular file below `dir`, sorted.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    entries_below(dir)
        .into_iter()
        .filter(|p| fs::symlink_metadata(p).unwrap().is_file())
        .collect()
}

/// Inverts one bit of the byte at `offset`.
pub fn flip_bit(path: &Path, offset: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset] ^= 0x10;
    write_in_place(path, &bytes);
}

/// Overwrites a repository file, whatever mode arca gave it: tests damage repositories.
pub fn write_in_place(path: &Path, bytes: &[u8]) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(path, bytes).unwrap();
}

/// Whether we run as root (who reads every file whatever its mode).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Runs a helper program (`mkfifo`, `touch`…) and expects success.
pub fn run(program: &str, args: &[&str]) {
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "{program} {args:?} failed");
}

/// Whether a helper program is installed.
pub fn have(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// The packs that appeared since `before` (a listing from [`TestEnv::packs`]), largest first:
/// a backup's data pack comes before its (small) tree pack.
pub fn new_packs(env: &TestEnv, before: &[PathBuf]) -> Vec<PathBuf> {
    let mut new: Vec<PathBuf> = env
        .packs()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    new.sort_by_key(|p| std::cmp::Reverse(fs::metadata(p).unwrap().len()));
    new
}

/// `packs/xx/<id>` of a pack file, as arca names it in messages.
pub fn pack_name(path: &Path) -> String {
    let id = path.file_name().unwrap().to_str().unwrap();
    format!("packs/{}/{id}", &id[..2])
}
