//! Logs to stdout in CHP's (winston's) shape: `<ISO-8601 UTC> [ConfigProxy] <level>: <msg>`,
//! or as one JSON object per line (`--log-format json`).

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::cli::{Cli, LogFormat};
use crate::time;

/// Installs the global subscriber, logging to stdout in CHP's shape (or JSON, with
/// `--log-format json`) at `--log-level`. `RUST_LOG`, when set, overrides `--log-level`.
/// A second call changes nothing.
pub fn init(cli: &Cli) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(cli.log_level.as_filter()));
    if cli.log_format == LogFormat::Json {
        let _ = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(std::io::stdout)
            .try_init();
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_ansi(false)
        .event_format(ChpFormat)
        .try_init();
}

struct ChpFormat;

impl<S, N> FormatEvent<S, N> for ChpFormat
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
            Level::ERROR => "error",
            Level::WARN => "warn",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "silly",
        };
        write!(
            writer,
            "{} [ConfigProxy] {level}: ",
            time::format_ms(time::now_ms())
        )?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
