//! Process signals: `--signal` sends one to a running server, and the running
//! server reacts to them as nats-server does.

use std::path::Path;

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The signal nats-server's `--signal` names stand for.
pub fn signal_for(command: &str) -> Option<Signal> {
    Some(match command {
        "stop" => Signal::SIGKILL,
        "quit" => Signal::SIGINT,
        "term" => Signal::SIGTERM,
        "reopen" => Signal::SIGUSR1,
        "reload" => Signal::SIGHUP,
        "ldm" => Signal::SIGUSR2,
        _ => return None,
    })
}

/// Handles `--signal CMD[=PID|=PIDFILE]`: finds the server and signals it.
pub fn send(spec: &str, pid_file: Option<&Path>) -> anyhow::Result<()> {
    let (command, target) = match spec.split_once('=') {
        Some((c, t)) => (c, Some(t)),
        None => (spec, None),
    };
    let signal = signal_for(command).with_context(|| {
        format!("unknown signal \"{command}\": use stop, quit, term, reopen, reload or ldm")
    })?;
    let pid = match target {
        Some(t) => match t.parse::<i32>() {
            Ok(pid) => pid,
            Err(_) => read_pid_file(Path::new(t))?,
        },
        None => match pid_file {
            Some(path) => read_pid_file(path)?,
            None => find_running_server()?,
        },
    };
    kill(Pid::from_raw(pid), signal).with_context(|| format!("can not signal process {pid}"))?;
    Ok(())
}

fn read_pid_file(path: &Path) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("can not read pid file {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("pid file {} does not hold a process id", path.display()))
}

/// The one running `tern-server` other than this process, as nats-server
/// finds its own when no pid is given.
fn find_running_server() -> anyhow::Result<i32> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")
        .context("can not list processes")?
        .flatten()
    {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim() == "tern-server" {
            found.push(pid);
        }
    }
    match found.as_slice() {
        [pid] => Ok(*pid),
        [] => bail!("no tern-server process is running"),
        many => bail!("multiple tern-server processes are running ({many:?}): give a pid with --signal CMD=PID"),
    }
}
