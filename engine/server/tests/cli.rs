//! The `fanwire` binary itself: `check`, startup errors, flags over the file, SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_fanwire");

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fanwire-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn check_validates_schemas() {
    let good = temp_file(
        "good.graphql",
        "type Query { a: Int } type Subscription { b(x: ID!): Int @topic(name: \"b:{x}\") c: Int }",
    );
    let (ok, out, _) = run(&["check", good.to_str().unwrap()]);
    assert!(ok);
    assert!(
        out.contains("2 subscription field(s)") && out.contains("  b\n") && out.contains("  c\n"),
        "{out}"
    );

    let bad = temp_file(
        "bad.graphql",
        "type Query { a: Int } type Subscription { b: Int @topic(name: \"b:{x}\") }",
    );
    let (ok, _, err) = run(&["check", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("uses {x}, which is not an argument"), "{err}");

    let (ok, _, err) = run(&["check", "/nonexistent.graphql"]);
    assert!(!ok);
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn user_errors_print_their_chain_and_no_backtrace() {
    let bad = temp_file(
        "bad-chain.graphql",
        "type Query { a: Int } type Subscription { b: Int @topic(name: \"b:{x}\") }",
    );
    let config = temp_file("bad-chain.toml", "[limits]\nqueue_depth = 0\n");
    for args in [
        vec!["check", bad.to_str().unwrap()],
        vec!["serve", "--demo", "--config", config.to_str().unwrap()],
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .env("RUST_BACKTRACE", "1")
            .env("RUST_LIB_BACKTRACE", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(!err.to_lowercase().contains("backtrace"), "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
    // The whole chain, outermost first, on that line.
    let (_, _, err) = run(&["check", bad.to_str().unwrap()]);
    assert!(
        err.contains("is not a valid schema: ") && err.contains("uses {x}"),
        "{err}"
    );
}

#[test]
fn startup_errors_are_clear() {
    let (ok, _, err) = run(&["serve", "--listen", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(err.contains("no schema"), "{err}");

    let config = temp_file("bad.toml", "[limits]\nqueue_depth = 0\n");
    let (ok, _, err) = run(&["serve", "--demo", "--config", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("queue_depth"), "{err}");

    let config = temp_file(
        "typo.toml",
        "[server]\nlisten = \"127.0.0.1:0\"\nschemaa = \"x\"\n",
    );
    let (ok, _, err) = run(&["serve", "--demo", "--config", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("schemaa") && err.contains("line 3"), "{err}");

    let bad_schema = temp_file("broken.graphql", "type Query {");
    let (ok, _, err) = run(&[
        "serve",
        "--schema",
        bad_schema.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!ok);
    assert!(err.contains("broken.graphql"), "{err}");
}

#[test]
fn flags_override_the_file_and_sigterm_stops_the_server() {
    // The file says port 1 (unbindable for us); the flag wins.
    let config = temp_file(
        "serve.toml",
        "[server]\nlisten = \"127.0.0.1:1\"\n[demo]\ninterval_ms = 10\n",
    );
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--demo",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("fanwire listening on http://127.0.0.1:"),
        "{line}"
    );
    assert!(!line.contains(":1\n"), "{line}");
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful exit, got {status}");
}
