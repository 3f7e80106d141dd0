//! Log output on stderr: human text (the default, for a terminal) or one
//! JSON object per line (`--log-format json`, what the chart sets), in which
//! the fields of the enclosing spans are lifted to the top level next to the
//! event's own. A reconcile runs in a span carrying `kind`, `namespace` and
//! `name`, so every line it logs names its object, and log pipelines can
//! filter on `namespace`/`name` without knowing the span layout. An event
//! field that clashes with a span field (with another value) is kept as
//! `event.<field>`, so the object's fields always mean the object.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines with the span context as a prefix.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message`,
    /// the event's fields, the enclosing spans' fields and `spans`.
    Json,
}

/// Installs the process's log subscriber on stderr. `filter` is used when
/// `RUST_LOG` is not set.
pub fn init(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .init(),
    }
}

/// The JSON line format (see the module documentation).
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
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
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".to_string(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        line.insert(
            "level".to_string(),
            Value::String(meta.level().as_str().to_string()),
        );
        line.insert(
            "target".to_string(),
            Value::String(meta.target().to_string()),
        );
        let mut spans = Vec::new();
        if let Some(scope) = ctx.event_scope() {
            // Outermost first, so an inner span's field wins over an outer
            // one of the same name.
            for span in scope.from_root() {
                spans.push(span.name().to_string());
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                // The span's fields were recorded by `JsonFields` as one
                // JSON object; a span without fields records nothing.
                if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(fields.as_str()) {
                    line.extend(map);
                }
            }
        }
        if !spans.is_empty() {
            line.insert("spans".to_string(), Value::String(spans.join(":")));
        }
        let mut fields = Map::new();
        event.record(&mut FieldVisitor(&mut fields));
        for (key, value) in fields {
            // The spans' fields name the object being worked on and keep
            // their place; an event field that says something else under the
            // same name (a child's `name`, say) is kept beside it.
            let key = match line.get(&key) {
                Some(v) if *v != value => format!("event.{key}"),
                _ => key,
            };
            line.insert(key, value);
        }
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Copies an event's fields into the line, numbers and booleans as such.
struct FieldVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for FieldVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_string(), Value::String(value.to_string()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_string(), Value::String(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            Value::String(format!("{value:?}")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[test]
    fn span_fields_are_on_every_line_inside_the_span() {
        let buf = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buf.clone())
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "reconcile",
                kind = "Agent",
                namespace = "ns1",
                name = "coder"
            );
            let _in = span.enter();
            tracing::info!(count = 3, ok = true, "checked the secret");
            let inner = tracing::info_span!("child", step = "apply");
            let _inner = inner.enter();
            tracing::warn!(error = %"boom", name = "reverie-worker", "write failed");
            tracing::info!(namespace = "ns1", "same value, no clash");
        });
        tracing::subscriber::with_default(
            tracing_subscriber::fmt()
                .with_writer(buf.clone())
                .fmt_fields(JsonFields::new())
                .event_format(JsonLines)
                .finish(),
            || tracing::info!("outside"),
        );
        let bytes = buf.0.lock().map(|b| b.clone()).unwrap_or_default();
        let text = String::from_utf8(bytes).expect("utf-8");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[0]["namespace"], "ns1");
        assert_eq!(lines[0]["name"], "coder");
        assert_eq!(lines[0]["kind"], "Agent");
        assert_eq!(lines[0]["count"], 3);
        assert_eq!(lines[0]["ok"], true);
        assert_eq!(lines[0]["message"], "checked the secret");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["spans"], "reconcile");
        assert_eq!(lines[1]["namespace"], "ns1");
        assert_eq!(lines[1]["step"], "apply");
        assert_eq!(lines[1]["error"], "boom");
        assert_eq!(lines[1]["spans"], "reconcile:child");
        assert_eq!(lines[1]["name"], "coder");
        assert_eq!(lines[1]["event.name"], "reverie-worker");
        assert_eq!(lines[2]["namespace"], "ns1");
        assert!(lines[2].get("event.namespace").is_none());
        assert!(lines[3].get("namespace").is_none());
        assert_eq!(lines[3]["message"], "outside");
    }
}
