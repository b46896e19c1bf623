//! Log output of ops.md §8: one record per line on standard error, `<timestamp> <level> <message>`
//! or one JSON object, level names in lower case, timestamps RFC 3339 UTC with microseconds.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{LogFormat, LogLevel};

/// Installs the global subscriber.
pub fn init(level: LogLevel, format: LogFormat) -> anyhow::Result<()> {
    let filter = match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    };
    tracing_subscriber::fmt()
        .with_max_level(filter)
        .with_writer(std::io::stderr)
        .event_format(LineFormat { format })
        .try_init()
        .map_err(|error| anyhow::anyhow!("install log subscriber: {error}"))
}

/// Formats one event as a text or JSON line.
struct LineFormat {
    format: LogFormat,
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
    N: for<'writer> FormatFields<'writer> + 'static,
{
    fn format_event(
        &self,
        _context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let timestamp = format_timestamp(SystemTime::now());
        let level = level_name(*event.metadata().level());
        let line = match self.format {
            LogFormat::Text => format!("{timestamp} {level} {}", fields.message),
            LogFormat::Json => json_line(&timestamp, level, &fields),
        };
        writeln!(writer, "{line}")
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

fn json_line(timestamp: &str, level: &str, fields: &Fields) -> String {
    // Written by hand so that the keys keep the documented order.
    let quote = |text: &str| serde_json::Value::from(text).to_string();
    let mut line = format!(
        "{{\"timestamp\":{},\"level\":{},\"message\":{}",
        quote(timestamp),
        quote(level),
        quote(&fields.message)
    );
    for (key, value) in &fields.context {
        // The three fixed keys always win over context fields of the same name.
        if matches!(key.as_str(), "timestamp" | "level" | "message") {
            continue;
        }
        let _ = write!(line, ",{}:{}", quote(key), value);
    }
    line.push('}');
    line
}

/// The `message` field and every other field as context.
#[derive(Default)]
struct Fields {
    message: String,
    context: Vec<(String, serde_json::Value)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.context.push((field.name().to_string(), text.into()));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.context.push((field.name().to_string(), value.into()));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.context.push((field.name().to_string(), value.into()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.context.push((field.name().to_string(), value.into()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.context.push((field.name().to_string(), value.into()));
    }
}

/// `2026-01-05T10:11:12.123456Z`.
pub fn format_timestamp(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let microseconds = since_epoch.subsec_micros();
    let days = (seconds / 86_400) as i64;
    let second_of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut text = String::with_capacity(27);
    let _ = write!(
        text,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{microseconds:06}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    );
    text
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_have_microseconds_and_zulu() {
        let time = UNIX_EPOCH + Duration::from_micros(1_767_607_872_123_456);
        assert_eq!(format_timestamp(time), "2026-01-05T10:11:12.123456Z");
        assert_eq!(format_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let leap_day = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(format_timestamp(leap_day), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn json_lines_carry_context() {
        let fields = Fields {
            message: "archive write failed".to_string(),
            context: vec![
                ("node".to_string(), "a@b".into()),
                ("level".to_string(), "x".into()),
            ],
        };
        assert_eq!(
            json_line("2026-01-05T10:11:12.123456Z", "warn", &fields),
            r#"{"timestamp":"2026-01-05T10:11:12.123456Z","level":"warn","message":"archive write failed","node":"a@b"}"#
        );
    }
}
