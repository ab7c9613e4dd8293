//! Log capture for the cases that check what core logs (lost / recovered connection).
//!
//! The heartbeat loop runs on the runtime's worker threads, so a thread-local
//! `tracing` default would not see it. Instead the suite installs one global
//! subscriber per test binary (on first use) that
//!
//! - records INFO and above from threads whose name starts with `sgc-`, and
//! - prints to the test's captured output: WARN and above, or what `RUST_LOG` says.
//!
//! The macro's runner runs each case on its own threads, all named
//! `sgc-<run>:...`, so a case reads exactly its own events. If the test binary
//! installed another global subscriber first, capture is unavailable and the cases
//! needing [`crate::Need::LogCapture`] fail (or are declared skipped).
//!
//! A driver's own integration tests can use [`capture_thread`] instead: the log
//! text of the current thread (a thread-local default subscriber), for a test that
//! drives a handle on a current-thread runtime.

use std::fmt::Write as _;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{filter::LevelFilter, EnvFilter, Layer};

/// Thread-name prefix of every thread the runner creates.
pub(crate) const THREAD_PREFIX: &str = "sgc-";

/// One captured event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Name of the thread it was logged on.
    pub thread: String,
    /// Its level.
    pub level: Level,
    /// The message.
    pub message: String,
    /// The other fields, as `name=value` pairs.
    pub fields: Vec<(String, String)>,
}

static CAPTURED: Mutex<Vec<Captured>> = Mutex::new(Vec::new());
static INSTALLED: OnceLock<bool> = OnceLock::new();

/// Installs the global subscriber if no global subscriber exists yet. Returns whether
/// the suite's capture is the one installed.
pub fn install() -> bool {
    *INSTALLED.get_or_init(|| {
        let print = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
        let subscriber = tracing_subscriber::registry()
            .with(CaptureLayer.with_filter(LevelFilter::INFO))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_test_writer()
                    .with_thread_names(true)
                    .with_filter(print),
            );
        tracing::subscriber::set_global_default(subscriber).is_ok()
    })
}

/// Whether the suite's capture is installed.
pub fn available() -> bool {
    INSTALLED.get().copied().unwrap_or(false)
}

/// The events captured on threads whose name starts with `prefix`.
pub fn captured(prefix: &str) -> Vec<Captured> {
    CAPTURED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|c| c.thread.starts_with(prefix))
        .cloned()
        .collect()
}

struct CaptureLayer;

impl<S: Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let thread = std::thread::current();
        let Some(name) = thread.name() else { return };
        if !name.starts_with(THREAD_PREFIX) {
            return;
        }
        let mut visitor = Fields::default();
        event.record(&mut visitor);
        CAPTURED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Captured {
                thread: name.to_owned(),
                level: *event.metadata().level(),
                message: visitor.message,
                fields: visitor.fields,
            });
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields.push((field.name().to_owned(), text));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields
                .push((field.name().to_owned(), value.to_owned()));
        }
    }
}

/// The log text of one thread, as written by the subscriber [`capture_thread`]
/// installs (one formatted line per event, no colours).
#[derive(Debug, Clone, Default)]
pub struct ThreadLogs(Arc<Mutex<Vec<u8>>>);

impl ThreadLogs {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// How many lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.text().lines().filter(|l| l.contains(needle)).count()
    }
}

impl io::Write for ThreadLogs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Captures every `tracing` event at `level` and above logged on the current thread,
/// until the guard drops. Use it with a current-thread runtime, so tasks the handle
/// spawns (the heartbeat loop) log on this thread too.
pub fn capture_thread(level: Level) -> (ThreadLogs, tracing::subscriber::DefaultGuard) {
    let logs = ThreadLogs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(level)
        .with_writer(move || writer.clone())
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}
