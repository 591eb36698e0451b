//! Progress bars on the terminal for long store operations (extracting, hashing).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// Draws a bar on stderr when it is a terminal; stays silent otherwise.
pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    pub fn new() -> Self {
        let bar = if std::io::stderr().is_terminal() {
            ProgressBar::new(0)
        } else {
            ProgressBar::hidden()
        };
        Self { bar }
    }
}

impl store::Progress for Bar {
    fn start(&self, what: &str, total_bytes: u64) {
        self.bar.reset();
        self.bar.set_length(total_bytes);
        self.bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        self.bar.set_message(what.to_string());
    }

    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Progress as JSON lines on stdout (`hearth pull --json`), for scripts
/// and orchestration: a line when a phase starts and ends, and at most
/// four a second between.
pub struct JsonLines {
    state: std::cell::RefCell<JsonState>,
}

#[derive(Default)]
struct JsonState {
    what: String,
    total: u64,
    done: u64,
    last: Option<std::time::Instant>,
}

impl JsonLines {
    pub fn new() -> Self {
        Self {
            state: std::cell::RefCell::new(JsonState::default()),
        }
    }

    fn emit(s: &JsonState, status: &str) {
        let line = serde_json::json!({
            "status": status, "phase": s.what, "total": s.total, "completed": s.done,
        });
        println!("{line}");
    }
}

impl store::Progress for JsonLines {
    fn start(&self, what: &str, total_bytes: u64) {
        let mut s = self.state.borrow_mut();
        *s = JsonState {
            what: what.to_string(),
            total: total_bytes,
            ..JsonState::default()
        };
        Self::emit(&s, "start");
    }

    fn advance(&self, bytes: u64) {
        let mut s = self.state.borrow_mut();
        s.done += bytes;
        let due = s
            .last
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_millis(250));
        if due {
            s.last = Some(std::time::Instant::now());
            Self::emit(&s, "progress");
        }
    }

    fn finish(&self) {
        Self::emit(&self.state.borrow(), "done");
    }
}
