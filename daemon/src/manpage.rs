//! Manual pages in roff, generated from a clap definition, for `wgmeshd man` (wgmeshd(1)) and
//! `wgmeshctl man` (wgmeshctl(1)). One renderer, so both pages have the same shape: clap_mangen's
//! title, name, synopsis, description and global options; a `COMMANDS` section with a subsection
//! per visible command (its usage, description and own options, subcommands after it); then the
//! page's own sections (`EXIT STATUS`, `ENVIRONMENT`, …) and the version.
//!
//! Pages are printed by the binaries rather than committed, so they cannot drift from `--help`.

use std::io;

use clap::Command;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

/// roff's apostrophe definition, which clap_mangen writes at the top of every piece it renders.
const PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

/// A section after `COMMANDS`: a heading and `(term, text)` entries, each a tagged paragraph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The heading (`EXIT STATUS`).
    pub title: String,
    /// The entries, in order.
    pub entries: Vec<(String, String)>,
}

/// The page of `root` titled `manual` (e.g. "wgmeshd manual"), with `sections` after the
/// commands. Hidden commands and clap's `help` are left out; options every command has (global
/// ones, `--help`, `--version`) are documented once, on top.
///
/// # Errors
///
/// When rendering fails (clap_mangen writes into memory, so only on invalid UTF-8).
pub fn render(root: Command, manual: &str, sections: &[Section]) -> io::Result<String> {
    let mut root = root;
    root.build();
    let man = Man::new(root.clone()).date("").manual(manual.to_owned());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    if root.get_subcommands().any(documented) {
        out.extend_from_slice(b".SH COMMANDS\n");
        for cmd in root.get_subcommands() {
            command_section(&mut out, cmd)?;
        }
    }
    let mut roff = Roff::default();
    for section in sections {
        roff.control("SH", [section.title.as_str()]);
        for (term, text) in &section.entries {
            roff.control("TP", []);
            roff.text([bold(term.as_str())]);
            roff.text([roman(text.as_str())]);
        }
    }
    roff.to_writer(&mut out)?;
    if root.get_version().is_some() {
        man.render_version_section(&mut out)?;
    }
    Ok(once_preamble(&utf8(out)?))
}

/// Whether `cmd` gets a subsection.
fn documented(cmd: &Command) -> bool {
    !cmd.is_hide_set() && cmd.get_name() != "help"
}

fn utf8(bytes: Vec<u8>) -> io::Result<String> {
    String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// `page` with roff's apostrophe definition only once, at the top: every rendered piece starts
/// with it.
fn once_preamble(page: &str) -> String {
    match page.strip_prefix(PREAMBLE) {
        Some(rest) => format!("{PREAMBLE}{}", rest.replace(PREAMBLE, "")),
        None => page.to_owned(),
    }
}

/// `.SS "<bin> CMD"` with the command's usage, description and own options, then one for each of
/// its subcommands.
fn command_section(out: &mut Vec<u8>, cmd: &Command) -> io::Result<()> {
    if !documented(cmd) {
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
    let own = cmd.clone().mut_args(|a| {
        let everywhere = a.is_global_set() || ["help", "version"].contains(&a.get_id().as_str());
        if everywhere { a.hide(true) } else { a }
    });
    if own.get_arguments().any(|a| !a.is_hide_set()) {
        let mut options = Vec::new();
        Man::new(own).render_options_section(&mut options)?;
        // clap_mangen heads it `.SH OPTIONS`; inside a command's subsection it is a paragraph.
        let options = utf8(options)?.replacen(".SH OPTIONS", ".PP\nOptions:", 1);
        out.extend_from_slice(options.as_bytes());
    }
    for sub in cmd.get_subcommands() {
        command_section(out, sub)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{Arg, ArgAction};

    use super::*;

    fn tool() -> Command {
        Command::new("tool")
            .about("A tool.")
            .version("1.2.3")
            .arg(
                Arg::new("verbose")
                    .long("verbose")
                    .global(true)
                    .action(ArgAction::SetTrue)
                    .help("Say more"),
            )
            .subcommand(
                Command::new("run")
                    .about("Run it.")
                    .arg(Arg::new("fast").long("fast").action(ArgAction::SetTrue))
                    .subcommand(Command::new("now").about("Right away.")),
            )
            .subcommand(Command::new("secret-tool").hide(true))
    }

    #[test]
    fn commands_nest_hidden_ones_are_left_out_and_globals_appear_once() {
        let sections = [Section {
            title: "EXIT STATUS".into(),
            entries: vec![("0".into(), "fine".into())],
        }];
        let page = render(tool(), "tool manual", &sections).unwrap();
        for want in [
            ".TH tool 1",
            ".SH COMMANDS",
            ".SS \"tool run\"",
            ".SS \"tool run now\"",
            "Right away.",
            "\\-\\-fast",
            ".SH \"EXIT STATUS\"",
            "fine",
            ".SH VERSION",
            "1.2.3",
        ] {
            assert!(page.contains(want), "{want:?} missing in\n{page}");
        }
        assert!(!page.contains("secret\\-tool"), "{page}");
        assert!(!page.contains(".SS \"tool help\""), "{page}");
        // In the synopsis, and described once, on top.
        assert_eq!(page.matches(".TP\n\\fB\\-\\-verbose").count(), 1, "{page}");
        assert_eq!(page.matches(".ds Aq").count(), 2, "{page}");
        assert!(page.starts_with(PREAMBLE), "{page}");
    }

    #[test]
    fn a_command_without_subcommands_has_no_commands_section() {
        let page = render(Command::new("solo").about("Alone."), "solo manual", &[]).unwrap();
        assert!(!page.contains(".SH COMMANDS"), "{page}");
        assert!(page.contains(".TH solo 1"), "{page}");
        assert!(!page.contains(".SH VERSION"), "{page}");
    }
}
