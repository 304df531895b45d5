//! Logging with `tracing`, in nats-server's line format by default:
//! `[pid] 2006/01/02 15:04:05.000000 [INF] message`, so tools and test
//! helpers that read nats-server's start-up lines read Tern's too.

use std::fmt;
use std::fs::OpenOptions;
use std::sync::Mutex;
use std::time::SystemTime;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::options::LogOptions;
use crate::timefmt;

/// nats-server's text line format.
struct NatsFormat {
    pid: u32,
    time: bool,
}

impl<S, N> FormatEvent<S, N> for NatsFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = match *event.metadata().level() {
            Level::ERROR => "[ERR]",
            Level::WARN => "[WRN]",
            Level::INFO => "[INF]",
            Level::DEBUG => "[DBG]",
            Level::TRACE => "[TRC]",
        };
        write!(writer, "[{}] ", self.pid)?;
        if self.time {
            write!(writer, "{} ", timefmt::log_stamp(SystemTime::now()))?;
        }
        write!(writer, "{level} ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Installs the global subscriber; call once, before anything logs.
pub fn init(opts: &LogOptions) -> anyhow::Result<()> {
    let level = if opts.trace {
        "trace"
    } else if opts.debug {
        "debug"
    } else {
        "info"
    };
    // Our crates at the asked level; dependencies stay at info so -D is readable.
    let default = format!("info,tern_server={level},tern_protocol={level},tern_routing={level}");
    let filter = EnvFilter::try_from_env("TERN_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    let file = match &opts.file {
        Some(path) => Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("can not open log file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let result = match (opts.json, file) {
        (true, Some(f)) => builder.json().with_writer(Mutex::new(f)).try_init(),
        (true, None) => builder.json().with_writer(std::io::stderr).try_init(),
        (false, Some(f)) => builder
            .event_format(NatsFormat {
                pid: std::process::id(),
                time: opts.time,
            })
            .with_writer(Mutex::new(f))
            .try_init(),
        (false, None) => builder
            .event_format(NatsFormat {
                pid: std::process::id(),
                time: opts.time,
            })
            .with_writer(std::io::stderr)
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("can not install the logger: {e}"))
}
