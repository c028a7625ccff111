//! Where the password comes from: a file, a command, the environment, or a prompt.

use std::io::IsTerminal;

use anyhow::{Context, Result, bail};

use super::Global;

fn strip_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

/// The password, from (in order) --password-file, --password-command, ARCA_PASSWORD, or
/// a prompt on the terminal. `confirm` asks twice (for a new repository).
pub fn get(global: &Global, confirm: bool) -> Result<String> {
    let (password, source) = read(global, confirm)?;
    // Most often a script's mistake (`ARCA_PASSWORD=$(cat missing-file)`), and no protection.
    if password.is_empty() {
        bail!("the password from {source} is empty, and an empty password is not allowed");
    }
    Ok(password)
}

/// The password and where it came from.
fn read(global: &Global, confirm: bool) -> Result<(String, String)> {
    if let Some(file) = &global.password_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading password file {}", file.display()))?;
        return Ok((
            strip_newline(text),
            format!("password file {}", file.display()),
        ));
    }
    if let Some(command) = &global.password_command {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("running password command {command:?}"))?;
        if !out.status.success() {
            bail!("password command {command:?} failed ({})", out.status);
        }
        let text = String::from_utf8(out.stdout).context("password command printed non-UTF-8")?;
        return Ok((strip_newline(text), format!("password command {command:?}")));
    }
    if let Ok(pw) = std::env::var("ARCA_PASSWORD") {
        return Ok((pw, "ARCA_PASSWORD".into()));
    }
    if std::io::stdin().is_terminal() {
        let pw =
            rpassword::prompt_password("repository password: ").context("reading the password")?;
        if confirm {
            let again = rpassword::prompt_password("again: ").context("reading the password")?;
            if pw != again {
                bail!("the passwords do not match");
            }
        }
        return Ok((pw, "the terminal".into()));
    }
    bail!(
        "no password given: set ARCA_PASSWORD, ARCA_PASSWORD_FILE or ARCA_PASSWORD_COMMAND (or run on a terminal to be asked)"
    )
}
