//! The README's API examples run against a real daemon: every `curl` command in the README's
//! "The control API" section is run as written (with the test daemon's socket path), and its
//! answer must be one the OpenAPI document gives for that request; every endpoint of the
//! document must have an example. Needs root and `curl` (`.ci/run` installs it); skipped without
//! root, a failure under `CI=true`.
#![cfg(feature = "runtime")]

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/openapi.rs"]
mod openapi;

use std::collections::BTreeSet;

use wgmesh_api_types::DEFAULT_SOCKET_PATH;
use wgmeshd::api::SocketGroup;

use daemon::{Daemon, isolated, privileged};
use openapi::Spec;

/// The section of the README holding the examples.
const SECTION: &str = "### The control API";

/// The `$ curl …` commands of the README's API section, continuation lines joined.
fn examples(readme: &str) -> Vec<String> {
    let start = readme.find(SECTION).expect("the README has an API section");
    let rest = &readme[start + SECTION.len()..];
    let section = &rest[..rest.find("\n### ").unwrap_or(rest.len())];
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending: Option<String> = None;
    for line in section.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        let text = match (&mut pending, line.strip_prefix("$ ")) {
            (Some(open), _) => {
                open.push(' ');
                open.push_str(line.trim());
                std::mem::take(open)
            }
            (None, Some(command)) => command.to_owned(),
            (None, None) => continue,
        };
        match text.strip_suffix('\\') {
            Some(open) => pending = Some(open.trim_end().to_owned()),
            None => {
                pending = None;
                commands.push(text);
            }
        }
    }
    commands
}

/// The method and the path (with query) an example's `curl` command asks for.
fn request_of(command: &str) -> (String, String) {
    let method = if command.contains("-X POST") {
        "POST"
    } else {
        "GET"
    };
    let url = command
        .split_whitespace()
        .map(|w| w.trim_matches('\''))
        .find(|w| w.starts_with("http://localhost/"))
        .unwrap_or_else(|| panic!("no http://localhost/… URL in {command}"));
    (
        method.to_owned(),
        url["http://localhost".len()..].to_owned(),
    )
}

#[test]
fn the_readme_has_a_curl_example_for_every_endpoint() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let spec = wgmeshd::api::openapi::json().unwrap();
    let mut documented = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let mut shown = BTreeSet::new();
    for command in examples(&readme) {
        assert!(
            command.starts_with("curl "),
            "not a curl example: {command}"
        );
        let (method, path) = request_of(&command);
        let path = path.split('?').next().unwrap_or_default();
        let template = if path.starts_with("/v1/peers/") {
            "/v1/peers/{key}"
        } else {
            path
        };
        shown.insert(format!("{method} {template}"));
    }
    let missing: Vec<&String> = documented.difference(&shown).collect();
    assert!(
        missing.is_empty(),
        "endpoints without a README example: {missing:?}"
    );
}

#[test]
fn the_readme_api_examples_work_against_a_real_daemon() {
    if !privileged("the_readme_api_examples_work_against_a_real_daemon") {
        return;
    }
    isolated(|| async {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let spec = Spec::generated();
        let d = Daemon::start("wgtreadme0", SocketGroup::Default).await;
        // The README's empty-body reload re-reads the reload file, which an operator creates
        // first; this one changes nothing (the level is already info).
        std::fs::write(d.state.join("wgtreadme0.reload"), "log-level=info\n").unwrap();
        let out_dir = tempfile::tempdir().unwrap();
        let socket = d.socket.to_str().unwrap().to_owned();
        let commands = examples(&readme);
        assert!(commands.len() >= 7, "{commands:?}");
        for (i, command) in commands.iter().enumerate() {
            let (method, path) = request_of(command);
            let body_file = out_dir.path().join(format!("{i}.body"));
            let streams = path.starts_with("/v1/events");
            // The body goes to a file and the status and content type to stdout; a stream is
            // cut after a second.
            let mut run = format!(
                "{} -o '{}' -w '%{{http_code}} %{{content_type}}'",
                command.replace(DEFAULT_SOCKET_PATH, &socket),
                body_file.display()
            );
            if streams {
                run.push_str(" --max-time 1");
            }
            // Awaited, not blocked on: the daemon answers on this thread's runtime.
            let out = tokio::process::Command::new("sh")
                .args(["-c", &run])
                .output()
                .await
                .expect("sh runs");
            let stderr = String::from_utf8_lossy(&out.stderr);
            let code = out.status.code();
            // curl's 28: the time limit cut the stream, as asked.
            let fine = code == Some(0) || (streams && code == Some(28));
            assert!(fine, "{command}: exit {code:?}: {stderr}");
            let stdout = String::from_utf8(out.stdout).unwrap();
            let (status, content_type) = stdout.split_once(' ').unwrap_or((&stdout, ""));
            let status: u16 = status
                .parse()
                .unwrap_or_else(|_| panic!("{command}: {stdout}"));
            let body = std::fs::read(&body_file).unwrap_or_default();
            spec.check(&method, &path, status, content_type, &body)
                .unwrap_or_else(|e| panic!("{command}: {e}: {}", String::from_utf8_lossy(&body)));
            if !streams {
                assert!(!body.is_empty(), "{command}: no body");
            }
            // Only the README's error example is meant to be refused.
            if status == 400 {
                assert!(
                    path.contains("state=alive"),
                    "{command}: 400: {}",
                    String::from_utf8_lossy(&body)
                );
            }
        }
        d.stop().await;
    });
}

#[test]
fn examples_are_read_with_their_continuation_lines() {
    let readme = "### The control API\n\n```console\n$ curl -sS a \\\n    -d '{}' http://localhost/v1/x\n{\"out\":1}\n$ curl http://localhost/v1/y\n```\n\n```sh\n$ curl http://localhost/v1/z\n```\n### Next\n```\n$ curl http://localhost/v1/other\n```\n";
    assert_eq!(
        examples(readme),
        vec![
            "curl -sS a -d '{}' http://localhost/v1/x",
            "curl http://localhost/v1/y",
            "curl http://localhost/v1/z",
        ]
    );
    assert_eq!(
        request_of("curl -X POST -d '{}' 'http://localhost/v1/peers?state=active'"),
        ("POST".to_owned(), "/v1/peers?state=active".to_owned())
    );
}
