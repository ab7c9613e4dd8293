//! Writing to stdout and stderr without panicking.
//!
//! `println!` panics when stdout is a closed pipe (`servicegroup list | head -1`).
//! These helpers treat a closed reader as "nobody is listening": output stops, the
//! command keeps its exit code (and `watch` ends).

use std::io::{ErrorKind, Write};

use crate::failure::Failure;

/// Whether the reader of stdout is still there after a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// Written.
    Open,
    /// The reader went away (broken pipe); nothing more will be read.
    Closed,
}

/// Writes `text` to stdout as is and flushes (so every line reaches a pipe at once).
pub fn out(text: &str) -> Result<Sink, Failure> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(Sink::Open),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(Sink::Closed),
        Err(e) => Err(Failure::msg(format!("cannot write to stdout: {e}"))),
    }
}

/// Writes one line to stdout.
pub fn line(text: impl std::fmt::Display) -> Result<Sink, Failure> {
    out(&format!("{text}\n"))
}

/// Writes one line to stderr; errors are ignored (there is nowhere left to report them).
pub fn err_line(text: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}
