//! `sprite-env completions` and `sprite-env man`: shell completion scripts
//! and man pages generated from the clap definition in [`crate::cli`], so
//! they never drift from the options.

use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::output::print;

/// Prints the completion script for `shell`.
///
/// # Errors
///
/// When stdout cannot be written.
pub fn completions(shell: clap_complete::Shell) -> Result<(), String> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "sprite-env", &mut script);
    print(&String::from_utf8_lossy(&script))
}

/// Writes one man page per command into `dir`.
///
/// # Errors
///
/// When a page cannot be written.
pub fn man_pages_into(dir: &Path) -> Result<(), String> {
    clap_mangen::generate_to(Cli::command(), dir)
        .map_err(|e| format!("cannot write the man pages into {}: {e}", dir.display()))
}

/// Prints the man page of `sprite-env` (roff).
///
/// # Errors
///
/// When the page cannot be rendered or stdout cannot be written.
pub fn man_page() -> Result<(), String> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .map_err(|e| format!("cannot render the man page: {e}"))?;
    print(&String::from_utf8_lossy(&page))
}
