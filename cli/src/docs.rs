//! `wgmeshctl completions SHELL` and `wgmeshctl man`: generated from the same clap definition as
//! `--help`, inside the binary, so they always describe the binary that prints them.
//!
//! The manual is one page, `wgmeshctl(1)`, printed on stdout rather than a generated file kept in
//! the repository: a committed page would need a drift test and a regeneration step after every
//! help-text change, while this one cannot drift. Packagers run `wgmeshctl man >
//! wgmeshctl.1` (and `wgmeshctl completions …`) at build time.

use std::io::Write as _;

use clap::{Args, Command};
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

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

/// `wgmeshctl(1)` in roff: clap_mangen's title, name, synopsis, description and global options,
/// then a section per command (its usage, description and options), the exit statuses and the
/// environment.
fn page() -> anyhow::Result<String> {
    let mut root = crate::command();
    root.build();
    let man = Man::new(root.clone()).date("").manual("wgmeshctl manual");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    writeln!(out, ".SH COMMANDS")?;
    for cmd in root.get_subcommands() {
        command_section(&mut out, cmd)?;
    }
    let mut roff = Roff::default();
    roff.control("SH", ["EXIT STATUS"]);
    for (exit, text) in EXIT_STATUSES {
        roff.control("TP", []);
        roff.text([bold((exit as u8).to_string())]);
        roff.text([roman(text)]);
    }
    roff.control("SH", ["ENVIRONMENT"]);
    for (name, text) in ENVIRONMENT {
        roff.control("TP", []);
        roff.text([bold(name)]);
        roff.text([roman(text)]);
    }
    roff.to_writer(&mut out)?;
    man.render_version_section(&mut out)?;
    Ok(once_preamble(&String::from_utf8(out)?))
}

/// `page` with roff's apostrophe definition only once, at the top: every rendered piece starts
/// with it.
fn once_preamble(page: &str) -> String {
    const PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";
    match page.strip_prefix(PREAMBLE) {
        Some(rest) => format!("{PREAMBLE}{}", rest.replace(PREAMBLE, "")),
        None => page.to_owned(),
    }
}

/// A subsection for `cmd` (its full name, usage, description and options), then one for each
/// of its subcommands.
fn command_section(out: &mut Vec<u8>, cmd: &Command) -> anyhow::Result<()> {
    if cmd.is_hide_set() || cmd.get_name() == "help" {
        return Ok(());
    }
    let name = cmd.get_bin_name().unwrap_or(cmd.get_name()).to_owned();
    let mut roff = Roff::default();
    roff.control("SS", [name.as_str()]);
    let usage = cmd.clone().render_usage().to_string();
    for (i, line) in usage.lines().enumerate() {
        if i > 0 {
            roff.control("br", []);
        }
        roff.text([bold(line.trim_start_matches("Usage:").trim())]);
    }
    if let Some(about) = cmd.get_long_about().or_else(|| cmd.get_about()) {
        roff.control("PP", []);
        for line in about.to_string().lines() {
            roff.text([roman(line)]);
        }
    }
    roff.to_writer(out)?;
    // The options without the ones every command has (`--socket`, `--help`, `--version`):
    // those are on top.
    let own = cmd.clone().mut_args(|a| {
        let everywhere = a.is_global_set() || ["help", "version"].contains(&a.get_id().as_str());
        if everywhere { a.hide(true) } else { a }
    });
    if own.get_arguments().any(|a| !a.is_hide_set()) {
        let mut options = Vec::new();
        Man::new(own).render_options_section(&mut options)?;
        let options = String::from_utf8(options)?;
        // clap_mangen heads it `.SH OPTIONS`; inside a command's subsection it is a paragraph.
        out.extend_from_slice(
            options
                .replacen(".SH OPTIONS", ".PP\nOptions:", 1)
                .as_bytes(),
        );
    }
    for sub in cmd.get_subcommands() {
        command_section(out, sub)?;
    }
    Ok(())
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
