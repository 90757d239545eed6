//! Standard output that a closed pipe ends quietly: `borealis ... | head`
//! exits 0 once `head` has read enough, instead of panicking.

use std::io::Write;

/// Writes one line; see [`say!`](crate::say).
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = stdout.write_fmt(args).and_then(|()| stdout.write_all(b"\n")) {
        gone(err);
    }
}

/// Ends the CLI for a failed write: quietly with 0 when the reader has
/// gone, else with 1 saying why.
pub fn gone(err: std::io::Error) -> ! {
    if err.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("borealis: cannot write to standard output: {err}");
    std::process::exit(1)
}
