//! `wgmeshd man` (hidden): the manual page wgmeshd(1) in roff on stdout, generated from the same
//! clap definition as `--help`, so it describes exactly the binary that prints it. Packagers run
//! `wgmeshd man > wgmeshd.1` at build time (`packaging/build-deb` does); no page is committed, so
//! none can drift.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Command, CommandFactory as _};
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

use super::Cli;

/// roff's apostrophe definition, which clap_mangen writes at the top of every piece it renders.
const PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

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

/// wgmeshd(1): clap_mangen's title, name, synopsis, description and global options, a
/// subsection per visible command (usage, description, options), the environment (the
/// `after_help` text) and the version.
fn page() -> anyhow::Result<String> {
    let mut root = Cli::command();
    root.build();
    let man = Man::new(root.clone()).date("").manual("wgmeshd manual");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    writeln!(out, ".SH COMMANDS")?;
    for cmd in root.get_subcommands() {
        if !cmd.is_hide_set() && cmd.get_name() != "help" {
            command_section(&mut out, cmd)?;
        }
    }
    if let Some(after) = root.get_after_help() {
        let text = after.to_string();
        let mut roff = Roff::default();
        roff.control("SH", ["ENVIRONMENT"]);
        // after_help lists `  NAME   what it does` under an `Environment:` heading.
        for line in text.lines().filter(|l| !l.ends_with(':')) {
            let (name, what) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
            roff.control("TP", []);
            roff.text([bold(name)]);
            roff.text([roman(what.trim())]);
        }
        roff.to_writer(&mut out)?;
    }
    man.render_version_section(&mut out)?;
    let page = String::from_utf8(out)?;
    // The apostrophe definition once, at the top.
    Ok(match page.strip_prefix(PREAMBLE) {
        Some(rest) => format!("{PREAMBLE}{}", rest.replace(PREAMBLE, "")),
        None => page,
    })
}

/// `.SS "wgmeshd CMD"` with the command's usage, description and own options (the global ones
/// are documented once, on top).
fn command_section(out: &mut Vec<u8>, cmd: &Command) -> anyhow::Result<()> {
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
    let own = cmd.clone().mut_args(|a| {
        let everywhere = a.is_global_set() || ["help", "version"].contains(&a.get_id().as_str());
        if everywhere { a.hide(true) } else { a }
    });
    if own.get_arguments().any(|a| !a.is_hide_set()) {
        let mut options = Vec::new();
        Man::new(own).render_options_section(&mut options)?;
        // clap_mangen heads it `.SH OPTIONS`; inside a command's subsection it is a paragraph.
        let options = String::from_utf8(options)?.replacen(".SH OPTIONS", ".PP\nOptions:", 1);
        out.extend_from_slice(options.as_bytes());
    }
    Ok(())
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
