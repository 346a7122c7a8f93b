//! Logs go to standard error, never standard output (which carries command
//! output), with colour only when standard error is a terminal (and `NO_COLOR`
//! is unset). `log.format = "json"` writes one JSON object per line for log
//! shippers. Every line passes through a [`Redactor`], so a configured secret
//! never reaches the log, whatever formatted it.

use crate::redact::Redactor;
use crate::settings::{LogFormat, LogSettings};
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("log.level `{level}` is not a valid filter: {reason}")]
    Filter { level: String, reason: String },
    #[error("logging was already set up")]
    AlreadySet,
}

/// Install the process's subscriber. `RUST_LOG`, when set, overrides `log.level`.
pub fn init(settings: &LogSettings, redactor: Redactor) -> Result<(), LoggingError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => parse_filter(&env)?,
        _ => parse_filter(&settings.level)?,
    };
    let writer = ScrubbingStderr {
        redactor: Arc::new(redactor),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(writer);
    let result = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(use_colour()).try_init(),
    };
    result.map_err(|_| LoggingError::AlreadySet)
}

fn parse_filter(level: &str) -> Result<EnvFilter, LoggingError> {
    EnvFilter::try_new(level).map_err(|e| LoggingError::Filter {
        level: level.to_string(),
        reason: e.to_string(),
    })
}

fn use_colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Standard error, with every known secret replaced before it is written.
#[derive(Clone)]
struct ScrubbingStderr {
    redactor: Arc<Redactor>,
}

impl<'a> MakeWriter<'a> for ScrubbingStderr {
    type Writer = ScrubbingLine;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbingLine {
            redactor: self.redactor.clone(),
            buf: Vec::new(),
        }
    }
}

/// One log event, buffered so that a secret split across writes is still
/// found; scrubbed and written whole when the event is done (on drop).
struct ScrubbingLine {
    redactor: Arc<Redactor>,
    buf: Vec<u8>,
}

impl Write for ScrubbingLine {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ScrubbingLine {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buf);
        let line = if self.redactor.is_empty() {
            text.into_owned()
        } else {
            self.redactor.scrub(&text)
        };
        // Nowhere to report a failed write to standard error.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_level_is_a_clear_error() {
        let err = parse_filter("info,[").expect_err("invalid");
        assert!(err.to_string().contains("info,["), "{err}");
    }

    #[test]
    fn a_line_is_scrubbed_whole() {
        let redactor = Arc::new(Redactor::new(["sk_test_planted".to_string()]));
        let mut line = ScrubbingLine {
            redactor,
            buf: Vec::new(),
        };
        line.write_all(b"key sk_test_").expect("write");
        line.write_all(b"planted here").expect("write");
        let text = line.redactor.scrub(&String::from_utf8_lossy(&line.buf));
        assert_eq!(text, "key *** here");
        line.buf.clear();
    }
}
