//! Reading a server's CPU time and memory from `/proc`, and process limits.
//!
//! Everything here shells out or reads files: the workspace forbids `unsafe`,
//! so no `libc` calls are made directly.

use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProcSample {
    /// `utime + stime` from `/proc/<pid>/stat`, in clock ticks.
    pub(crate) cpu_ticks: u64,
    /// `VmRSS` from `/proc/<pid>/status`, in bytes.
    pub(crate) rss_bytes: u64,
    /// `VmHWM` (peak resident set) from `/proc/<pid>/status`, in bytes.
    pub(crate) hwm_bytes: u64,
}

/// Reads CPU time and memory of `pid`.
pub(crate) fn sample(pid: u32) -> Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (is the server pid right?)"))?;
    let cpu_ticks = parse_stat_cpu_ticks(&stat)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    Ok(ProcSample {
        cpu_ticks,
        rss_bytes: status_kib(&status, "VmRSS:")? * 1024,
        hwm_bytes: status_kib(&status, "VmHWM:")? * 1024,
    })
}

/// Extracts `utime + stime` (fields 14 and 15) from a `/proc/<pid>/stat` line.
///
/// The command name (field 2) may contain spaces and parentheses, so fields
/// are counted from the last `)`.
fn parse_stat_cpu_ticks(stat: &str) -> Result<u64> {
    let close = stat.rfind(')').context("malformed /proc stat: no ')'")?;
    // After ")" the fields start at field 3 (state); utime is field 14.
    let mut fields = stat[close + 1..].split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next().context("no utime")?.parse()?;
    let stime: u64 = fields.next().context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// Reads a `kB` value such as `VmRSS:    1234 kB` from `/proc/<pid>/status`.
fn status_kib(status: &str, key: &str) -> Result<u64> {
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .with_context(|| format!("no {key} in /proc status"))?;
    let value = line[key.len()..]
        .split_whitespace()
        .next()
        .with_context(|| format!("empty {key}"))?;
    Ok(value.parse()?)
}

/// Clock ticks per second (`getconf CLK_TCK`), read once; 100 if unavailable.
pub(crate) fn clock_ticks_per_sec() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// Raises this process's `RLIMIT_NOFILE` soft limit to its hard limit with
/// `prlimit(1)`, and returns the soft limit now in force.
///
/// Children started afterwards (the servers of `tern bench compare`) inherit it.
pub(crate) fn raise_nofile_limit() -> Result<u64> {
    let (soft, hard) = nofile_limits()?;
    if soft >= hard {
        return Ok(soft);
    }
    let hard_text = if hard == u64::MAX {
        "unlimited".to_owned()
    } else {
        hard.to_string()
    };
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={hard_text}:{hard_text}"))
        .status()
        .context("running prlimit to raise RLIMIT_NOFILE")?;
    if !status.success() {
        bail!("prlimit failed to raise RLIMIT_NOFILE from {soft} to {hard}: {status}");
    }
    Ok(nofile_limits()?.0)
}

/// Current `(soft, hard)` open-file limits of this process.
fn nofile_limits() -> Result<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no 'Max open files' in /proc/self/limits")?;
    let mut nums = line["Max open files".len()..].split_whitespace().map(|v| {
        if v == "unlimited" {
            Ok(u64::MAX)
        } else {
            v.parse::<u64>()
        }
    });
    let soft = nums.next().context("no soft limit")??;
    let hard = nums.next().context("no hard limit")??;
    Ok((soft, hard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_counted_from_last_paren() {
        let line = "42 (nats) server) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 9 0";
        assert_eq!(parse_stat_cpu_ticks(line).unwrap(), 12);
    }

    #[test]
    fn status_values_are_kib() {
        let status = "Name:\tx\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(status_kib(status, "VmRSS:").unwrap(), 1024);
        assert_eq!(status_kib(status, "VmHWM:").unwrap(), 2048);
    }

    #[test]
    fn own_process_is_readable() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 0 && s.hwm_bytes >= s.rss_bytes);
        assert!(nofile_limits().unwrap().0 > 0);
    }
}
