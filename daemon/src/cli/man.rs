//! `wgmeshd man` (hidden): the manual page wgmeshd(1) in roff on stdout, generated from the same
//! clap definition as `--help`, so it describes exactly the binary that prints it. Packagers run
//! `wgmeshd man > wgmeshd.1` at build time (`packaging/build-deb` does); no page is committed, so
//! none can drift.

use std::io::Write as _;
use std::process::ExitCode;

use clap::CommandFactory as _;

use super::Cli;
use crate::manpage::{self, Section};

/// Prints wgmeshd(1). A reader that went away (`wgmeshd man | head`) is not an error.
pub(super) fn man_cmd() -> anyhow::Result<ExitCode> {
    let page = page()?;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(page.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// wgmeshd(1): the shared page layout ([`manpage::render`]) with the environment (the
/// `after_help` text, which lists `  NAME   what it does` under an `Environment:` heading).
fn page() -> anyhow::Result<String> {
    let root = Cli::command();
    let environment = root
        .get_after_help()
        .map(|after| {
            after
                .to_string()
                .lines()
                .filter(|l| !l.ends_with(':'))
                .map(|line| {
                    let (name, what) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
                    (name.to_owned(), what.trim().to_owned())
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let sections = [Section {
        title: "ENVIRONMENT".to_owned(),
        entries: environment,
    }];
    Ok(manpage::render(root, "wgmeshd manual", &sections)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_documents_every_visible_command_and_the_environment() {
        let page = page().unwrap();
        for want in [
            ".TH wgmeshd 1",
            ".SH SYNOPSIS",
            ".SH COMMANDS",
            ".SS \"wgmeshd join\"",
            ".SS \"wgmeshd identity\"",
            "\\-\\-secret\\-file",
            "\\-\\-advertise\\-routes",
            ".SH ENVIRONMENT",
            "WGMESH_SECRET_FILE",
            ".SH VERSION",
        ] {
            assert!(page.contains(want), "{want:?} missing in\n{page}");
        }
        // Hidden commands (this one included) and clap's `help` are not documented.
        assert!(!page.contains(".SS \"wgmeshd man\""), "{page}");
        assert!(!page.contains(".SS \"wgmeshd help\""), "{page}");
        // The global `--log-level` documented once, on top, not again under each command.
        assert_eq!(
            page.matches("\\fB\\-\\-log\\-level\\fR \\fI").count(),
            1,
            "{page}"
        );
        assert!(
            page.contains(".TP\n\\fBWGMESH_SECRET_FILE\\fR\nfile holding"),
            "{page}"
        );
        // Hidden Go-only flags stay hidden.
        assert!(!page.contains("\\-\\-pprof"), "{page}");
        assert_eq!(page.matches(".ds Aq").count(), 2, "{page}");
        // ASCII, so it reads the same under any locale.
        assert!(page.is_ascii(), "{page}");
    }
}
