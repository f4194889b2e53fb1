//! Log output of the daemon: `tracing` to stderr, text or JSON, level from `--log-level` (and
//! from a reload, through [`LogControl`]), `RUST_LOG` directives on top.

use std::str::FromStr;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Log verbosity. Accepts Go wgmesh's spellings (`warning` for `warn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    /// Everything, including per-peer detail.
    Debug,
    /// Normal operation.
    #[default]
    Info,
    /// Problems only.
    Warn,
    /// Failures only.
    Error,
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "debug" | "trace" => Ok(Self::Debug),
            "info" => Ok(Self::Info),
            "warn" | "warning" => Ok(Self::Warn),
            "error" => Ok(Self::Error),
            other => Err(format!(
                "unknown log level {other:?} (expected debug, info, warn or error)"
            )),
        }
    }
}

impl LogLevel {
    /// The level's name as `--log-level` and the API spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }

    fn as_filter(self) -> tracing::level_filters::LevelFilter {
        use tracing::level_filters::LevelFilter;
        match self {
            Self::Debug => LevelFilter::DEBUG,
            Self::Info => LevelFilter::INFO,
            Self::Warn => LevelFilter::WARN,
            Self::Error => LevelFilter::ERROR,
        }
    }
}

/// Directives always added after the level: the embedded WireGuard engine logs one line per peer
/// change at `info`, so it is kept at `warn`; the DHT library logs every query response at
/// `debug` and an `error` every few seconds while its routing table is empty, which the `dht`
/// layer reports itself (once per change), so it is silent. `RUST_LOG` can name either.
const QUIET_TARGETS: &str = "gotatun=warn,mainline=off";

/// The filter for `level` with the user's `RUST_LOG` directives on top: later directives win
/// for the targets they name, so `RUST_LOG` keeps precedence where it says something and the
/// level decides everything else.
fn filter_for(level: LogLevel, overrides: Option<&str>) -> tracing_subscriber::EnvFilter {
    let mut spec = format!("{},{QUIET_TARGETS}", level.as_filter());
    if let Some(overrides) = overrides {
        spec.push(',');
        spec.push_str(overrides);
    }
    tracing_subscriber::EnvFilter::new(spec)
}

/// The running log filter, so that a reload changes what is logged (Go's reload only stored
/// the new level). Cheap to clone.
#[derive(Clone, Debug)]
pub struct LogControl {
    handle: tracing_subscriber::reload::Handle<
        tracing_subscriber::EnvFilter,
        tracing_subscriber::Registry,
    >,
    /// `RUST_LOG` as the user set it (non-empty), re-applied on top of every new level.
    overrides: Option<String>,
}

/// Why the running log filter could not be changed.
#[derive(Debug, thiserror::Error)]
#[error("cannot change the running log filter: {0}")]
pub struct LogControlError(#[from] tracing_subscriber::reload::Error);

impl LogControl {
    /// Makes `level` the level of everything `RUST_LOG` does not name, from the next event on.
    ///
    /// # Errors
    ///
    /// When the subscriber holding the filter is gone (never while the daemon runs).
    pub fn set_level(&self, level: LogLevel) -> Result<(), LogControlError> {
        self.handle
            .reload(filter_for(level, self.overrides.as_deref()))
            .map_err(LogControlError::from)
    }

    /// The user's `RUST_LOG` directives, which keep precedence over the level.
    pub fn overrides(&self) -> Option<&str> {
        self.overrides.as_deref()
    }
}

/// A subscriber writing to `writer` at `level` (with the `overrides` directives on top, as
/// `RUST_LOG`), and the control of its filter. [`init`] installs one writing to stderr; tests
/// build their own to see what is logged.
pub fn subscriber<W>(
    level: LogLevel,
    format: LogFormat,
    overrides: Option<String>,
    writer: W,
    ansi: bool,
) -> (Box<dyn tracing::Subscriber + Send + Sync>, LogControl)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt as _;
    let (filter, handle) =
        tracing_subscriber::reload::Layer::new(filter_for(level, overrides.as_deref()));
    let registry = tracing_subscriber::registry().with(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi)
        .with_target(false);
    let subscriber: Box<dyn tracing::Subscriber + Send + Sync> = match format {
        LogFormat::Text => Box::new(registry.with(fmt)),
        LogFormat::Json => Box::new(registry.with(fmt.json().flatten_event(true))),
    };
    (subscriber, LogControl { handle, overrides })
}

/// Installs the global subscriber: stderr, at `level`, with `RUST_LOG`'s directives (when set)
/// on top of it, so they win for the targets they name. Returns the control of its filter, for
/// reloads; `None` when a subscriber was installed before (tests), which then stays.
pub fn init(level: LogLevel, format: LogFormat) -> Option<LogControl> {
    use std::io::IsTerminal as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let overrides = std::env::var("RUST_LOG").ok().filter(|s| !s.is_empty());
    // Colours only on a terminal: the journal and log files get plain text.
    let ansi = std::io::stderr().is_terminal();
    let (subscriber, control) = subscriber(level, format, overrides, std::io::stderr, ansi);
    subscriber.try_init().ok().map(|()| control)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer whose output the test reads.
    #[derive(Clone, Default)]
    pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        /// Everything written so far.
        pub(crate) fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Captured {
        type Writer = Self;
        fn make_writer(&'w self) -> Self {
            self.clone()
        }
    }

    /// A subscriber at `level` (plus `overrides`) capturing its output, for this thread.
    pub(crate) fn capture(
        level: LogLevel,
        overrides: Option<&str>,
    ) -> (Captured, LogControl, tracing::subscriber::DefaultGuard) {
        let out = Captured::default();
        let (sub, control) = subscriber(
            level,
            LogFormat::Text,
            overrides.map(str::to_owned),
            out.clone(),
            false,
        );
        let guard = tracing::subscriber::set_default(sub);
        (out, control, guard)
    }

    #[test]
    fn a_new_level_changes_what_the_running_subscriber_writes() {
        let (out, control, _guard) = capture(LogLevel::Info, None);
        tracing::debug!("hidden at info");
        tracing::info!("shown at info");
        control.set_level(LogLevel::Debug).unwrap();
        tracing::debug!("shown at debug");
        control.set_level(LogLevel::Warn).unwrap();
        tracing::info!("hidden at warn");
        tracing::warn!("shown at warn");
        let text = out.text();
        for shown in ["shown at info", "shown at debug", "shown at warn"] {
            assert!(text.contains(shown), "{shown} missing:\n{text}");
        }
        for hidden in ["hidden at info", "hidden at warn"] {
            assert!(!text.contains(hidden), "{hidden} logged:\n{text}");
        }
    }

    #[test]
    fn rust_log_keeps_precedence_for_what_it_names() {
        // This module's target at error, whatever the level says; the rest follows the level.
        let (out, control, _guard) = capture(LogLevel::Info, Some("wgmeshd::logging=error"));
        tracing::warn!("named target under the override");
        tracing::warn!(target: "elsewhere", "other target at info");
        control.set_level(LogLevel::Debug).unwrap();
        tracing::info!("named target still under the override");
        tracing::debug!(target: "elsewhere", "other target at debug");
        let text = out.text();
        assert!(!text.contains("named target"), "{text}");
        assert!(text.contains("other target at info"), "{text}");
        assert!(text.contains("other target at debug"), "{text}");
        assert_eq!(control.overrides(), Some("wgmeshd::logging=error"));
    }

    #[test]
    fn a_bare_level_in_rust_log_wins_over_any_reloaded_level() {
        let (out, control, _guard) = capture(LogLevel::Info, Some("debug"));
        control.set_level(LogLevel::Error).unwrap();
        tracing::debug!("debug as RUST_LOG says");
        assert!(
            out.text().contains("debug as RUST_LOG says"),
            "{}",
            out.text()
        );
    }
}
