//! What the README shows a user is what the binary does today: the key of the two commands and
//! the quick start, the `--version` line, `send`'s answer, `spec diff`'s and the dry run's lines,
//! and the shape of a log line.

use crate::binary::{Service, fallback_store, run};
use crate::common::KEY;

const README: &str = include_str!("../../README.md");

/// The code blocks of the section whose heading is `heading`.
fn blocks(heading: &str) -> Vec<&'static str> {
    let section = README.split(&format!("\n## {heading}\n")).nth(1).unwrap_or_else(|| panic!("no {heading}"));
    let section = section.split("\n## ").next().unwrap();
    section.split("```").skip(1).step_by(2).map(|b| b.split_once('\n').map_or(b, |(_, code)| code)).collect()
}

/// What follows `--key ` on each line of `text`.
fn keys(text: &str) -> Vec<&str> {
    text.split("--key ").skip(1).map(|rest| rest.split_whitespace().next().unwrap()).collect()
}

/// `text` with every run of digits as `N`: the shape of a line whose figures vary.
fn shape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !out.ends_with('N') {
                out.push('N');
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn the_two_commands_and_the_quick_start_use_one_key() {
    let two = blocks("The two commands").concat();
    let quick = blocks("Quick start").concat();
    let mut all = keys(&two);
    all.extend(keys(&quick));
    assert!(all.len() >= 4, "{all:?}");
    assert!(all.iter().all(|k| *k == all[0]), "{all:?}");
}

#[test]
fn the_version_line_and_send_s_answer_are_what_the_binary_prints() {
    // The README shows the shipped spec's version line.
    if crate::binary::built_from_another_spec() {
        return;
    }
    let shown = README
        .lines()
        .find_map(|l| l.strip_prefix("meet-webhooks --version"))
        .and_then(|rest| rest.split("# ").nth(1))
        .and_then(|comment| comment.split(':').next())
        .unwrap();
    let (code, version, _) = run(&["--version"], b"");
    assert_eq!((code, version.trim_end()), (0, shown));

    let quick = blocks("Quick start").concat();
    let answer = quick.lines().find_map(|l| l.strip_prefix("# 200 OK ")).map(|a| format!("200 OK {a}")).unwrap();
    let service = Service::start(&[]);
    let url = service.url();
    let (code, stdout, stderr) = run(&["send", "recordingStarted", "--url", &url, "--key", KEY], b"");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().last().unwrap(), answer, "{stdout}");
    // The log line the README shows has the shape of the binary's (time to the millisecond).
    let shown = README.split("(`[20").nth(1).map(|rest| format!("20{}", rest.split(']').next().unwrap())).unwrap();
    let line = std::iter::from_fn(|| service.log.recv_timeout(std::time::Duration::from_secs(10)).ok())
        .find(|l| l.contains("meet_webhooks_runtime::route]"))
        .unwrap_or_else(|| panic!("no route line"));
    assert!(shape(&line).starts_with(&format!("[{}]", shape(&shown))), "{line} is not like [{shown}]");
}

#[test]
fn spec_diff_s_lines_in_the_readme_are_lines_it_prints() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let (_, upgrade, _) =
        run(&["spec", "diff", &format!("{fixtures}/v1-seed"), &format!("{fixtures}/v3-five-webhooks")], b"");
    // A status whose values change case, as the README's example.
    let dir = tempfile::tempdir().unwrap();
    let spec = |value: &str| {
        let body = serde_json::json!({
            "type": "object", "required": ["data"],
            "properties": {"data": {"type": "object", "required": ["status"],
                "properties": {"status": {"type": "string", "enum": [value]}}}}
        });
        let webhook = serde_json::json!({"post": {
            "operationId": "recordingEndedWebhook",
            "requestBody": {"content": {"application/json": {"schema": body}}},
            "responses": {"200": {"description": "ok"}}
        }});
        // JSON is YAML.
        serde_json::json!({"openapi": "3.1.0", "info": {"title": "t", "version": "1"},
            "webhooks": {"recordingEnded": webhook}})
        .to_string()
    };
    std::fs::write(dir.path().join("old.yaml"), spec("COMPLETE")).unwrap();
    std::fs::write(dir.path().join("new.yaml"), spec("complete")).unwrap();
    let (old, new) = (dir.path().join("old.yaml"), dir.path().join("new.yaml"));
    let (_, case, _) = run(&["spec", "diff", old.to_str().unwrap(), new.to_str().unwrap()], b"");
    let shown: Vec<&str> = blocks("Upgrading the spec")
        .into_iter()
        .filter(|b| ["breaking", "compatible", "may break"].iter().any(|e| b.trim_start().starts_with(e)))
        .flat_map(str::lines)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(shown.len(), 3, "{shown:?}");
    for line in shown {
        assert!(upgrade.lines().chain(case.lines()).any(|l| l == line), "not printed: {line}\n{upgrade}{case}");
    }
}

#[test]
fn the_dry_run_s_lines_in_the_readme_have_the_shape_of_its_output() {
    if crate::binary::built_from_another_spec() {
        return;
    }
    let data = fallback_store();
    let (code, stdout, _) =
        run(&["inbox", "replay", "--fallback", "--dry-run", "--data-dir", data.path().to_str().unwrap()], b"");
    assert_eq!(code, 0);
    let printed: Vec<String> = stdout.lines().map(shape).collect();
    let shown: Vec<&str> = blocks("Upgrading the spec")
        .into_iter()
        .filter(|b| b.trim_start().chars().next().is_some_and(|c| c.is_ascii_digit()))
        .flat_map(str::lines)
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(shown.len(), 2, "{shown:?}");
    for line in shown {
        // The README's lines sit indented inside a list item.
        let line = line.strip_prefix("   ").unwrap_or(line);
        assert!(printed.contains(&shape(line)), "not printed: {line}\n{stdout}");
    }
}
