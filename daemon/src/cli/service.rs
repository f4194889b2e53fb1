//! `wgmeshd install-service` and `wgmeshd uninstall-service`: the arguments, the `join` command
//! line the unit runs (rebuilt from what clap parsed, so an invalid flag fails at install time),
//! and the commands, which print what they do. Decisions are in [`crate::service`]; the file
//! system and `systemctl` in [`crate::system::service`].

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args};
use zeroize::Zeroizing;

use super::{JoinArgs, refuse_go_only_flags, resolve_secret};
use crate::service::plan::{self, Current, Step};
use crate::service::unit::{UNIT_NAME, UnitSpec, extra_writable, render_unit};
use crate::system::service::{Outcome, apply, read_current, systemctl, systemd_running};

/// Options of `wgmeshd install-service`.
#[derive(Debug, Args)]
pub struct InstallServiceArgs {
    /// Install into this directory tree instead of the running system (image builds, tests):
    /// systemctl is not run.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Print the unit and the files that would be written, with their modes; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print only the unit text and exit (no secret needed, nothing written).
    #[arg(long)]
    print_unit: bool,
    /// The wgmeshd binary the unit runs (absolute). Default: this program's own path.
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// Enable the service but do not start (or restart) it.
    #[arg(long)]
    no_start: bool,
    /// The `join` options the service runs with.
    #[command(flatten)]
    join: JoinArgs,
    /// The words after `join` in `ExecStart=`, rebuilt from the parsed command line by
    /// [`fill_exec_args`] (never a secret flag).
    #[arg(skip)]
    exec_args: Vec<String>,
}

/// Options of `wgmeshd uninstall-service`.
#[derive(Debug, Args)]
pub struct UninstallServiceArgs {
    /// Uninstall from this directory tree instead of the running system.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Print what would be removed; change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Join options never put in the unit: the secret travels as a systemd credential.
const SECRET_IDS: [&str; 2] = ["secret", "secret_file"];
/// Global options carried into the unit when given on the command line.
const GLOBAL_IDS: [&str; 2] = ["log_level", "log_format"];

fn given(m: &ArgMatches, id: &str) -> bool {
    matches!(m.try_get_raw(id), Ok(Some(_))) && m.value_source(id) == Some(ValueSource::CommandLine)
}

fn push_option(
    out: &mut Vec<String>,
    long: &str,
    values: Option<clap::parser::RawValues<'_>>,
) -> Result<(), String> {
    for value in values.into_iter().flatten() {
        let text = value
            .to_str()
            .ok_or_else(|| format!("the value of --{long} is not valid UTF-8"))?;
        out.push(format!("--{long}"));
        out.push(text.to_owned());
    }
    Ok(())
}

/// The words after `join` for the unit: every `join` option given on the `install-service`
/// command line (`sub`) except the secret's, in the order `join` defines them, each flag once and
/// each value after its option, plus `--log-level`/`--log-format` when given (`top`).
///
/// # Errors
///
/// A value that is not UTF-8 (a unit file is text).
pub fn join_argv(top: &ArgMatches, sub: &ArgMatches) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for id in GLOBAL_IDS {
        let m = if given(sub, id) { sub } else { top };
        if given(m, id) {
            let long = id.replace('_', "-");
            push_option(&mut out, &long, m.get_raw(id))?;
        }
    }
    let join = JoinArgs::augment_args(clap::Command::new("join"));
    for arg in join.get_arguments() {
        let id = arg.get_id().as_str();
        if SECRET_IDS.contains(&id) || !given(sub, id) {
            continue;
        }
        let Some(long) = arg.get_long() else {
            continue;
        };
        match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => out.push(format!("--{long}")),
            ArgAction::Count => {
                let n = sub.get_raw(id).map_or(0, |v| v.count());
                out.extend(std::iter::repeat_n(format!("--{long}"), n));
            }
            _ => push_option(&mut out, long, sub.get_raw(id))?,
        }
    }
    Ok(out)
}

/// Fills [`InstallServiceArgs`]'s `exec_args` from the matches of the whole command line.
///
/// # Errors
///
/// See [`join_argv`].
pub fn fill_exec_args(args: &mut InstallServiceArgs, top: &ArgMatches) -> Result<(), String> {
    if let Some(sub) = top.subcommand_matches("install-service") {
        args.exec_args = join_argv(top, sub)?;
    }
    Ok(())
}

/// A file error, with the hint that matters when it is a permission error.
fn with_hint(e: crate::system::fs::FsError) -> anyhow::Error {
    let denied = e.source.kind() == std::io::ErrorKind::PermissionDenied;
    let err = anyhow::Error::new(e);
    if denied {
        err.context("permission denied: run it as root (or with --root DIR for a directory tree)")
    } else {
        err
    }
}

/// Where the files go: `--root` or `/`.
fn root_of(root: Option<&Path>) -> &Path {
    root.unwrap_or(Path::new("/"))
}

fn print_steps(out: &mut impl std::io::Write, steps: &[Step]) -> std::io::Result<()> {
    for step in steps {
        writeln!(out, "  {step}")?;
    }
    Ok(())
}

fn note_go_secret(out: &mut impl std::io::Write, root: &Path) -> std::io::Result<()> {
    let go = root.join(plan::GO_SECRET_ENV);
    if go.exists() {
        writeln!(
            out,
            "note: {} (Go wgmesh's secret file) is left alone; wgmesh.service no longer reads it. Remove it once you no longer need it.",
            go.display()
        )?;
    }
    Ok(())
}

/// `wgmeshd install-service`.
///
/// # Errors
///
/// Invalid options, a missing or invalid secret, a file or `systemctl` failure.
pub fn install_cmd(args: &InstallServiceArgs) -> anyhow::Result<ExitCode> {
    refuse_go_only_flags(&args.join)?;
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("cannot find this program's own path")?,
    };
    let spec = UnitSpec {
        binary,
        join_args: args.exec_args.clone(),
        writable: extra_writable(&args.join.state_dir, &args.join.socket),
    };
    let unit = render_unit(&spec).context("cannot write the unit")?;
    let mut out = std::io::stdout().lock();
    if args.print_unit {
        out.write_all(unit.as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    let secret = resolve_secret(&args.join.secret)?;
    let text = Zeroizing::new(if secret.was_uri_form() {
        secret.to_uri()
    } else {
        secret.expose().to_owned()
    });
    let root = root_of(args.root.as_deref());
    let entries = plan::install_entries(root, &unit, &text);
    let current = entries
        .iter()
        .map(|e| read_current(e.path()))
        .collect::<Result<Vec<Current>, _>>()?;
    let steps = plan::install_steps(&entries, &current);
    if let Some(conflict) = steps.iter().find(|s| matches!(s, Step::Conflict { .. })) {
        anyhow::bail!("{conflict}; move it away first");
    }
    let changed = steps.iter().any(Step::changes);
    if args.dry_run {
        writeln!(out, "# {UNIT_NAME} that install-service would write:")?;
        out.write_all(unit.as_bytes())?;
        writeln!(out, "# files (dry run, nothing changed):")?;
        print_steps(&mut out, &steps)?;
        note_go_secret(&mut out, root)?;
        return Ok(ExitCode::SUCCESS);
    }
    for step in &steps {
        apply(step).map_err(with_hint)?;
        if step.changes() {
            writeln!(out, "{step}")?;
        }
    }
    if changed {
        writeln!(out, "installed {UNIT_NAME} under {}", root.display())?;
    } else {
        writeln!(
            out,
            "{UNIT_NAME} is already installed with these settings; nothing changed"
        )?;
    }
    note_go_secret(&mut out, root)?;
    if args.root.is_some() {
        return Ok(ExitCode::SUCCESS);
    }
    // A changed unit is restarted below; an unchanged one is only started if it is not running.
    let enable: &[&str] = if args.no_start || changed {
        &["enable", UNIT_NAME]
    } else {
        &["enable", "--now", UNIT_NAME]
    };
    if !systemd_running() {
        writeln!(
            out,
            "systemd is not running here; on the target system run: systemctl daemon-reload && systemctl enable --now {UNIT_NAME}"
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    if changed {
        systemctl(&["daemon-reload"])?;
        writeln!(out, "ran systemctl daemon-reload")?;
    }
    systemctl(enable)?;
    writeln!(out, "ran systemctl {}", enable.join(" "))?;
    if changed && !args.no_start {
        systemctl(&["restart", UNIT_NAME])?;
        writeln!(out, "ran systemctl restart {UNIT_NAME}")?;
    }
    if !args.no_start {
        writeln!(
            out,
            "check it with: systemctl status wgmesh; logs: journalctl -u wgmesh -f"
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `wgmeshd uninstall-service`.
///
/// # Errors
///
/// A file or `systemctl` failure.
pub fn uninstall_cmd(args: &UninstallServiceArgs) -> anyhow::Result<ExitCode> {
    let root = root_of(args.root.as_deref());
    let unit = read_current(&root.join(plan::UNIT_FILE))?;
    let secret = read_current(&root.join(plan::SECRET_FILE))?;
    let steps = plan::uninstall_steps(root, &unit, &secret);
    if let Some(conflict) = steps.iter().find(|s| matches!(s, Step::Conflict { .. })) {
        anyhow::bail!("{conflict}; not touching it");
    }
    let mut out = std::io::stdout().lock();
    let state = root.join(plan::STATE_DIR);
    if args.dry_run {
        writeln!(out, "# uninstall-service would (dry run, nothing changed):")?;
        print_steps(&mut out, &steps)?;
        writeln!(
            out,
            "  keep {} (the node's identity and peer cache)",
            state.display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let live = args.root.is_none() && systemd_running() && unit != Current::Missing;
    if live {
        systemctl(&["disable", "--now", UNIT_NAME])?;
        writeln!(out, "ran systemctl disable --now {UNIT_NAME}")?;
    }
    for step in &steps {
        match apply(step).map_err(with_hint)? {
            Outcome::Done => writeln!(out, "{step}: done")?,
            Outcome::Absent => {}
            Outcome::KeptNotEmpty => {
                writeln!(out, "kept {}: not empty", step_path(step).display())?
            }
        }
    }
    if unit == Current::Missing && secret == Current::Missing {
        writeln!(
            out,
            "{UNIT_NAME} was not installed under {}",
            root.display()
        )?;
    }
    if live {
        systemctl(&["daemon-reload"])?;
        writeln!(out, "ran systemctl daemon-reload")?;
    } else if args.root.is_none() && unit != Current::Missing {
        writeln!(
            out,
            "systemd is not running here; on the target system run: systemctl disable --now {UNIT_NAME} && systemctl daemon-reload"
        )?;
    }
    writeln!(
        out,
        "kept {} (the node's identity and peer cache); remove it by hand to forget this node",
        state.display()
    )?;
    note_go_secret(&mut out, root)?;
    Ok(ExitCode::SUCCESS)
}

fn step_path(step: &Step) -> &Path {
    match step {
        Step::CreateDir { path, .. }
        | Step::SetMode { path, .. }
        | Step::Write { path, .. }
        | Step::Keep { path }
        | Step::Remove { path }
        | Step::RemoveDirIfEmpty { path }
        | Step::Conflict { path, .. } => path,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Cli, Command, parse_cli};
    use crate::service::escape::tests::split_systemd;
    use crate::service::unit::{UnitSpec, render_unit};

    fn install(args: &[&str]) -> super::InstallServiceArgs {
        let argv = ["wgmeshd", "install-service"].iter().chain(args);
        match parse_cli(argv).command {
            Command::InstallService(a) => *a,
            other => panic!("{other:?}"),
        }
    }

    /// The unit's ExecStart, split the way systemd splits it, parses as `join` to the same
    /// options install-service parsed (minus the secret), for every kind of flag.
    #[test]
    fn exec_start_parses_back_to_the_same_join_options() {
        let flags: &[&[&str]] = &[
            &[],
            &[
                "--secret",
                "not-in-the-unit-0123456789",
                "--interface",
                "wg3",
            ],
            &[
                "--secret-file=/etc/x",
                "--socket-path",
                "/run/a b/s.sock",
                "--advertise-routes",
                "10.1.0.0/24,fd10::/64",
                "--advertise-routes=10.2.0.0/24",
                "--peer",
                "192.0.2.1:51821",
                "--peer",
                "192.0.2.2:51821",
                "--no-dht",
                "--gossip",
                "--privacy",
                "--state-dir",
                "/srv/\"q\" $x %i",
                "--metrics",
                "127.0.0.1:9586",
                "--wg-backend",
                "userspace",
            ],
        ];
        for flags in flags {
            let args = install(flags);
            assert!(
                !args.exec_args.iter().any(|a| a.contains("secret")),
                "{:?}",
                args.exec_args
            );
            let unit = render_unit(&UnitSpec {
                binary: "/usr/bin/wgmeshd".into(),
                join_args: args.exec_args.clone(),
                writable: Vec::new(),
            })
            .unwrap();
            let exec = unit
                .lines()
                .find_map(|l| l.strip_prefix("ExecStart="))
                .unwrap();
            let mut argv = split_systemd(exec).unwrap();
            argv[0] = "wgmeshd".to_owned();
            let join = match <Cli as clap::Parser>::try_parse_from(&argv)
                .unwrap()
                .command
            {
                Command::Join(j) => *j,
                other => panic!("{other:?}"),
            };
            let mut want = args.join;
            want.secret = Default::default();
            assert_eq!(format!("{join:?}"), format!("{want:?}"), "{flags:?}");
        }
    }

    #[test]
    fn log_options_before_or_after_the_subcommand_reach_the_unit() {
        let after = install(&["--log-level", "debug"]);
        assert_eq!(after.exec_args, ["--log-level", "debug"]);
        let before = parse_cli(["wgmeshd", "--log-format", "json", "install-service"]);
        let Command::InstallService(a) = before.command else {
            panic!()
        };
        assert_eq!(a.exec_args, ["--log-format", "json"]);
    }
}
