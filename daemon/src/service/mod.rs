//! Running `wgmeshd` as a systemd service, decided from plain values: the unit text
//! ([`unit`]), systemd's command-line quoting ([`escape`]), the files install and uninstall
//! own ([`plan`]) and what to tell systemd's notify socket when ([`notify`]). Pure: the shells
//! that write files, run `systemctl` and send datagrams are in `system::service` and
//! `system::notify`.

pub mod escape;
pub mod notify;
pub mod plan;
pub mod unit;

pub use escape::{command_line, quote_word};
pub use plan::{Current, Entry, Step, install_entries, install_steps, uninstall_steps};
pub use unit::{UnitError, UnitSpec, extra_writable, render_unit};
