//! The `fanwire` binary reloads its plugins on SIGHUP: a bad new version is
//! rejected with a log line that says why, a good one replaces the old.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_fanwire");
/// A hang guard, not a performance bound.
const WAIT: Duration = Duration::from_secs(20);

fn dist() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/dist");
    assert!(
        dir.join("template.wasm").is_file(),
        "no plugins in {}: run `bash plugins/build.sh` (tests/run.sh does)",
        dir.display()
    );
    dir
}

/// Waits for a stderr line containing every one of `needles`.
fn wait_for(lines: &mpsc::Receiver<String>, needles: &[&str]) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no log line with {needles:?}"));
        if needles.iter().all(|n| line.contains(n)) {
            return line;
        }
    }
}

fn hup(pid: &str, signal: &str) {
    assert!(Command::new("kill")
        .args([signal, pid])
        .status()
        .unwrap()
        .success());
}

#[test]
fn sighup_reloads_plugins_and_keeps_the_old_version_when_the_new_one_is_bad() {
    let dir = std::env::temp_dir().join(format!("fanwire-sighup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plugin = dir.join("filter.wasm");
    std::fs::copy(dist().join("template.wasm"), &plugin).unwrap();
    let config = dir.join("fanwire.toml");
    std::fs::write(
        &config,
        "[plugin_runtime]\nwatch = false\n\n[[plugins]]\npath = \"filter.wasm\"\nkind = \"event-filter\"\n",
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--demo", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert!(ready.starts_with("fanwire listening on"), "{ready}");
    let pid = child.id().to_string();

    std::fs::write(&plugin, "not a plugin").unwrap();
    hup(&pid, "-HUP");
    let line = wait_for(
        &lines,
        &["plugin reload rejected", "not a WebAssembly file"],
    );
    assert!(line.contains("filter"), "{line}");

    std::fs::copy(dist().join("redact-fields.wasm"), &plugin).unwrap();
    hup(&pid, "-HUP");
    wait_for(&lines, &["plugin reloaded", "filter"]);

    hup(&pid, "-TERM");
    assert!(child.wait().unwrap().success());
}
