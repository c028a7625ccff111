//! `arca key`: list, add and remove the keys (passwords) that open the repository, and
//! change a password.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde::Serialize;

use arca::crypto::KdfParams;
use arca::format::tree::Timestamp;
use arca::repository::KeyEntry;

use super::{EXIT_OK, EXIT_PROBLEMS, Global, output};

#[derive(Args, Debug)]
pub struct KeyArgs {
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// List the keys; `*` marks the one whose password opened the repository
    List,
    /// Add a key: another password that opens the repository
    Add(AddArgs),
    /// Remove a key, so that its password no longer opens the repository
    Remove(RemoveArgs),
    /// Change the password: add a key with the new password, then remove the key in use
    /// (no data is rewritten)
    Passwd(PasswdArgs),
}

/// argon2id parameters of a new key; what is not given comes from a default.
#[derive(Args, Debug)]
struct KdfArgs {
    /// argon2id memory cost in KiB [default: 65536 for `add`, the replaced key's for `passwd`]
    #[arg(long, value_name = "KIB")]
    kdf_memory: Option<u32>,
    /// argon2id passes [default: 3 for `add`, the replaced key's for `passwd`]
    #[arg(long, value_name = "N")]
    kdf_iterations: Option<u32>,
    /// argon2id lanes [default: 4 for `add`, the replaced key's for `passwd`]
    #[arg(long, value_name = "N")]
    kdf_parallelism: Option<u32>,
}

impl KdfArgs {
    fn params(&self, default: KdfParams) -> KdfParams {
        KdfParams {
            memory_kib: self.kdf_memory.unwrap_or(default.memory_kib),
            iterations: self.kdf_iterations.unwrap_or(default.iterations),
            parallelism: self.kdf_parallelism.unwrap_or(default.parallelism),
        }
    }
}

#[derive(Args, Debug)]
struct AddArgs {
    /// Read the new key's password from this file (else it is asked for on the terminal)
    #[arg(long, value_name = "FILE")]
    new_password_file: Option<PathBuf>,
    #[command(flatten)]
    kdf: KdfArgs,
}

#[derive(Args, Debug)]
struct RemoveArgs {
    /// The key's id, or a unique prefix of it (as shown by `arca key list`)
    #[arg(value_name = "ID")]
    id: String,
    /// Remove the key even if its password is the one that opened the repository
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
struct PasswdArgs {
    /// Read the new password from this file (else it is asked for on the terminal)
    #[arg(long, value_name = "FILE")]
    new_password_file: Option<PathBuf>,
    #[command(flatten)]
    kdf: KdfArgs,
}

pub fn run(global: &Global, args: &KeyArgs) -> Result<i32> {
    match &args.command {
        KeyCommand::List => list(global),
        KeyCommand::Add(args) => add(global, args),
        KeyCommand::Remove(args) => remove(global, args),
        KeyCommand::Passwd(args) => passwd(global, args),
    }
}

#[derive(Serialize)]
struct Listed<'a> {
    short_id: String,
    #[serde(flatten)]
    key: &'a KeyEntry,
}

fn list(global: &Global) -> Result<i32> {
    let repo = global.open()?;
    let (keys, damaged) = repo.list_readable_keys()?;
    for (path, e) in &damaged {
        eprintln!("arca: warning: {path} cannot be read: {e}");
    }
    let code = if damaged.is_empty() {
        EXIT_OK
    } else {
        EXIT_PROBLEMS
    };
    if global.json {
        let listed: Vec<Listed<'_>> = keys
            .iter()
            .map(|key| Listed {
                short_id: key.id.short(),
                key,
            })
            .collect();
        output::json(&listed)?;
        return Ok(code);
    }
    println!(
        "  {:<8}  {:<19}  {:<16}  {:<12}  kdf",
        "id", "created", "host", "user"
    );
    for key in &keys {
        println!(
            "{} {:<8}  {:<19}  {:<16}  {:<12}  {}",
            if key.in_use { '*' } else { ' ' },
            key.id.short(),
            output::time(Timestamp {
                secs: key.created,
                nanos: 0
            }),
            key.host,
            key.user,
            describe_kdf(&key.kdf)
        );
    }
    if !global.quiet {
        println!(
            "{} key(s); * marks the key whose password opened the repository",
            keys.len()
        );
    }
    Ok(code)
}

fn describe_kdf(kdf: &KdfParams) -> String {
    format!(
        "argon2id {}, {} pass(es), {} lane(s)",
        output::bytes(u64::from(kdf.memory_kib) * 1024),
        kdf.iterations,
        kdf.parallelism
    )
}

fn add(global: &Global, args: &AddArgs) -> Result<i32> {
    let kdf = args.kdf.params(KdfParams::DEFAULT);
    // Before any password is asked for: bad parameters make both pointless.
    kdf.check()?;
    let repo = global.open()?;
    let password = new_password(args.new_password_file.as_deref())?;
    let id = repo.add_key(password.as_bytes(), kdf)?;
    if global.json {
        output::json(&serde_json::json!({ "added": id }))?;
    } else if !global.quiet {
        println!("added key {}", id.short());
    }
    Ok(EXIT_OK)
}

fn remove(global: &Global, args: &RemoveArgs) -> Result<i32> {
    let repo = global.open()?;
    let id = repo.remove_key(&args.id, args.force)?;
    if global.json {
        output::json(&serde_json::json!({ "removed": id }))?;
    } else if !global.quiet {
        println!(
            "removed key {}: its password no longer opens the repository",
            id.short()
        );
    }
    Ok(EXIT_OK)
}

fn passwd(global: &Global, args: &PasswdArgs) -> Result<i32> {
    let mut repo = global.open()?;
    let old = repo.key_id();
    // The new key costs what the old one did, unless asked otherwise.
    let current = repo
        .list_readable_keys()?
        .0
        .into_iter()
        .find(|k| k.in_use)
        .map_or(KdfParams::DEFAULT, |k| k.kdf);
    let kdf = args.kdf.params(current);
    kdf.check()?;
    let password = new_password(args.new_password_file.as_deref())?;
    let new = repo.change_password(password.as_bytes(), kdf)?;
    if global.json {
        output::json(&serde_json::json!({ "added": new, "removed": old }))?;
    } else if !global.quiet {
        println!(
            "password changed: key {} replaces key {}",
            new.short(),
            old.short()
        );
    }
    Ok(EXIT_OK)
}

/// The new password: from `file` (read as `--password-file` reads it, so that the same file
/// opens the repository later), else asked twice on the terminal.
fn new_password(file: Option<&Path>) -> Result<String> {
    let (password, source) = if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading new password file {}", file.display()))?;
        (
            strip_newline(text),
            format!("new password file {}", file.display()),
        )
    } else if std::io::stdin().is_terminal() {
        let pw =
            rpassword::prompt_password("new password: ").context("reading the new password")?;
        let again = rpassword::prompt_password("new password again: ")
            .context("reading the new password")?;
        if pw != again {
            bail!("the new passwords do not match; nothing was changed");
        }
        (pw, "the terminal".to_string())
    } else {
        bail!(
            "no new password given: use --new-password-file FILE (or run on a terminal to be asked)"
        );
    };
    if password.is_empty() {
        bail!("the new password from {source} is empty, and an empty password is not allowed");
    }
    Ok(password)
}

/// One trailing newline is not part of a password file's password (as for --password-file).
fn strip_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}
