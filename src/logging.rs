//! The logger: text or JSON lines on standard error, with journald's priorities when
//! standard error is the journal.
//!
//! - Under systemd (`JOURNAL_STREAM` names our standard error), every line starts with
//!   `<N>`, the syslog priority journald reads and strips (`<3>` error, `<4>` warning, `<6>`
//!   info, `<7>` debug), so `journalctl -p warning` shows dead letters and refusals, not
//!   every delivery. The time is left out: journald stamps each line itself.
//! - JSON lines are flat objects: `timestamp`, `level`, `target`, `message`, the event's
//!   fields and then the fields of the spans it is in, each key once (the event's value
//!   wins), and lists logged with `?` stay JSON lists.
//!
//! Lines go through a bounded channel to one writer thread, which writes whatever has
//! queued up in one `write`: threads that log never take stderr's lock or make a syscall
//! per line (at three lines per webhook, the lock alone cost several percent of the
//! daemon's CPU under load). The channel blocks when full, so no line is dropped; dropping
//! the returned guard writes what is still queued.

use std::fmt;

use serde_json::{Map, Value as Json};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Does `JOURNAL_STREAM` (`DEVICE:INODE`, set by systemd) name this process's standard
/// error? A child that merely inherited the variable while writing elsewhere gets no
/// prefixes.
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// journald's priority for a tracing level (syslog's numbers).
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Wraps a line format with the `<N>` priority prefix journald reads.
pub struct Journald<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for Journald<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Flat JSON lines (see the module doc). Needs [`JsonFields`] as the field formatter,
/// which keeps each span's fields as a JSON object.
pub struct JsonLines;

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // A dependency's `log` record arrives with target `log`; its own is in its fields.
        let normalized = tracing_log::NormalizeEvent::normalized_metadata(event);
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        fields.retain(|k, _| !k.starts_with("log."));
        let mut line = Map::new();
        line.insert("timestamp".into(), Json::String(timestamp));
        line.insert("level".into(), Json::String(meta.level().as_str().into()));
        line.insert("target".into(), Json::String(meta.target().into()));
        if let Some(message) = fields.shift_remove("message") {
            line.insert("message".into(), message);
        }
        line.extend(fields);
        // Spans innermost first: the nearest value of a field wins, the event's over all.
        if let Some(scope) = ctx.event_scope() {
            for span in scope {
                let extensions = span.extensions();
                let Some(formatted) = extensions.get::<FormattedFields<JsonFields>>() else {
                    continue;
                };
                if let Ok(Json::Object(span_fields)) =
                    serde_json::from_str::<Json>(&formatted.fields)
                {
                    for (k, v) in span_fields {
                        line.entry(k).or_insert(v);
                    }
                }
            }
        }
        writeln!(writer, "{}", Json::Object(line))
    }
}

/// Records an event's fields as JSON values.
struct JsonVisitor<'a>(&'a mut Map<String, Json>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value).map_or(Json::Null, Json::Number);
        self.0.insert(field.name().into(), v);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Json::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Json::from(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        let v = i64::try_from(value).map_or_else(|_| Json::String(value.to_string()), Json::from);
        self.0.insert(field.name().into(), v);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        let v = u64::try_from(value).map_or_else(|_| Json::String(value.to_string()), Json::from);
        self.0.insert(field.name().into(), v);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Json::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Json::String(value.into()));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), Json::String(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        // A list logged with `?` (`routes_added = ?names`) is Debug text that is JSON.
        let parsed = (field.name() != "message" && text.starts_with('['))
            .then(|| serde_json::from_str::<Json>(&text).ok())
            .flatten()
            .filter(Json::is_array);
        self.0
            .insert(field.name().into(), parsed.unwrap_or(Json::String(text)));
    }
}

/// Installs the logger: `json` lines or text, on standard error, filtered by `RUST_LOG`
/// (default `info`).
pub fn init(json: bool) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("log-writer")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    let journal = stderr_is_journal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(!journal && std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let text = tracing_subscriber::fmt::format();
    match (json, journal) {
        (true, false) => builder
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .init(),
        (true, true) => builder
            .fmt_fields(JsonFields::new())
            .event_format(Journald(JsonLines))
            .init(),
        (false, true) => builder.event_format(Journald(text.without_time())).init(),
        (false, false) => builder.event_format(text).init(),
    }
    guard
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// What `emit` logs through the JSON line format (wrapped for journald when asked).
    fn lines(journald: bool, emit: impl FnOnce()) -> String {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let make_writer = move || Sink(sink.clone());
        let builder = tracing_subscriber::fmt()
            .with_writer(make_writer)
            .fmt_fields(JsonFields::new());
        if journald {
            tracing::subscriber::with_default(
                builder.event_format(Journald(JsonLines)).finish(),
                emit,
            );
        } else {
            tracing::subscriber::with_default(builder.event_format(JsonLines).finish(), emit);
        }
        let out = buf.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_are_flat_with_span_fields_once_and_lists_as_lists() {
        let out = lines(false, || {
            let span = tracing::info_span!(
                "delivery",
                event_id = "e1",
                destination = "crm",
                attempt = 2
            );
            let _entered = span.enter();
            let added = vec!["a".to_string(), "b".to_string()];
            tracing::warn!(destination = "crm", outcome = "dead", routes_added = ?added, "delivery dead-lettered");
        });
        let line: Json = serde_json::from_str(out.trim()).unwrap();
        let keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        // The line's own first, then the span's (in the order the span formatter keeps).
        assert_eq!(
            keys[..7],
            [
                "timestamp",
                "level",
                "target",
                "message",
                "destination",
                "outcome",
                "routes_added"
            ],
            "{out}"
        );
        let mut rest = keys[7..].to_vec();
        rest.sort();
        assert_eq!(rest, ["attempt", "event_id"], "{out}");
        assert_eq!(line["routes_added"], serde_json::json!(["a", "b"]));
        assert_eq!(line["attempt"], 2);
        assert_eq!(line["level"], "WARN");
        assert_eq!(out.matches("\"destination\"").count(), 1, "{out}");
    }

    #[test]
    fn journald_lines_start_with_their_priority() {
        let out = lines(true, || {
            tracing::error!("e");
            tracing::warn!("w");
            tracing::info!("i");
        });
        let prefixes: Vec<&str> = out.lines().map(|l| &l[..3]).collect();
        assert_eq!(prefixes, ["<3>", "<4>", "<6>"], "{out}");
    }
}
