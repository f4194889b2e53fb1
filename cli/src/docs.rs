//! `wgmeshctl completions SHELL` and `wgmeshctl man`: generated from the same clap definition as
//! `--help`, inside the binary, so they always describe the binary that prints them.
//!
//! The manual is one page, `wgmeshctl(1)`, printed on stdout rather than a generated file kept in
//! the repository: a committed page would need a drift test and a regeneration step after every
//! help-text change, while this one cannot drift. Packagers run `wgmeshctl man >
//! wgmeshctl.1` (and `wgmeshctl completions …`) at build time.

use clap::Args;
use clap_complete::Shell;
use wgmeshd::manpage::{self, Section};

use crate::{ENVIRONMENT, EXIT_STATUSES, Exit, print_out};

/// Options of `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

/// Options of `man` (none yet).
#[derive(Debug, Args)]
pub struct ManArgs {}

/// Prints the completion script for `args.shell`.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<Exit> {
    let mut cmd = crate::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "wgmeshctl", &mut script);
    print_out(&String::from_utf8(script)?)?;
    Ok(Exit::Success)
}

/// Prints the manual page.
pub fn man(_args: &ManArgs) -> anyhow::Result<Exit> {
    print_out(&page()?)?;
    Ok(Exit::Success)
}

/// `wgmeshctl(1)` in roff: the shared page layout ([`wgmeshd::manpage::render`]: title, synopsis,
/// global options, a subsection per command) with the exit statuses and the environment.
fn page() -> anyhow::Result<String> {
    let sections = [
        Section {
            title: "EXIT STATUS".to_owned(),
            entries: EXIT_STATUSES
                .iter()
                .map(|(exit, text)| ((*exit as u8).to_string(), (*text).to_owned()))
                .collect(),
        },
        Section {
            title: "ENVIRONMENT".to_owned(),
            entries: ENVIRONMENT
                .iter()
                .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
                .collect(),
        },
    ];
    Ok(manpage::render(
        crate::command(),
        "wgmeshctl manual",
        &sections,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_every_command_and_the_exit_statuses() {
        let page = page().unwrap();
        for want in [
            ".TH wgmeshctl 1",
            ".SH COMMANDS",
            ".SS \"wgmeshctl status\"",
            ".SS \"wgmeshctl peers get\"",
            ".SS \"wgmeshctl cache flush\"",
            ".SS \"wgmeshctl secret mesh-ip\"",
            ".SH \"EXIT STATUS\"",
            "WGMESH_SOCKET",
            "\\-\\-advertise\\-routes",
        ] {
            assert!(page.contains(want), "{want:?} missing in\n{page}");
        }
        assert!(!page.contains(".SS \"wgmeshctl help\""));
        // `--socket` and `--help` are documented once, at the top.
        assert_eq!(
            page.matches("\\fB\\-\\-socket\\fR \\fI").count(),
            1,
            "{page}"
        );
        assert_eq!(page.matches("Print help").count(), 1, "{page}");
        assert_eq!(page.matches(".ds Aq").count(), 2, "{page}");
        // ASCII, so it reads the same under any locale.
        assert!(page.is_ascii(), "{page}");
    }
}
