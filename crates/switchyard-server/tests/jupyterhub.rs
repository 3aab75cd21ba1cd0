//! JupyterHub against the real binary.
//!
//! * JupyterHub's own `ConfigurableHTTPProxy` class starts the binary, adds,
//!   reads and deletes routes with escaped and UTF-8 names, proxies HTTP and a WebSocket to
//!   real backends, and restarts the proxy after `kill -9`, in path and in host-routing
//!   mode (`jupyterhub_driver.py`).
//! * JupyterHub's own test modules `test_proxy` and `test_unix_socket` run with pytest, the
//!   binary standing in for configurable-http-proxy: a `configurable-http-proxy` script on
//!   `PATH` that runs it, which is how the Hub finds its proxy.
//!
//! Needs `python3` with `jupyterhub`, `pytest` and `pytest-asyncio` (`scripts/test`
//! installs them); without them the tests fail, they never skip.

use std::path::Path;
use std::process::Command;

fn run(mode: &str) {
    let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/jupyterhub_driver.py");
    let out = Command::new("python3")
        .arg(driver)
        .arg(env!("CARGO_BIN_EXE_switchyard"))
        .arg(mode)
        .output()
        .expect("python3 must be installed to run the JupyterHub test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "JupyterHub driver failed ({mode}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
}

/// Path routing (JupyterHub's default).
#[test]
fn jupyterhub_drives_switchyard_with_path_routing() {
    run("path");
}

/// Host routing (`--host-routing`, JupyterHub with `subdomain_host`).
#[test]
fn jupyterhub_drives_switchyard_with_host_routing() {
    run("host");
}

/// A directory holding `configurable-http-proxy`, a script that runs the binary.
fn proxy_on_path(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("configurable-http-proxy");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec '{}' \"$@\"\n",
            env!("CARGO_BIN_EXE_switchyard")
        ),
    )
    .expect("write the configurable-http-proxy script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .expect("make the script executable");
}

/// Ends the processes a test module left running (`test_proxy` leaves a mock single-user
/// server behind, with configurable-http-proxy too): those whose `PATH` holds this run's
/// directory, which the Hub passes on to what it spawns.
fn end_leftovers(dir: &Path) {
    let ours = dir.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let on_our_path = environ
            .split(|&b| b == 0)
            .filter_map(|var| var.strip_prefix(b"PATH="))
            .any(|path| path.split(|&b| b == b':').any(|entry| entry == ours));
        if on_our_path {
            let _ = Command::new("kill").args(["-TERM", pid]).status();
        }
    }
}

/// JupyterHub's `jupyterhub.tests.<module>` for each of `modules`, with pytest; returns
/// pytest's summary line after asserting that nothing failed and at least `min_passed`
/// tests passed.
fn pytest(modules: &[&str], min_passed: u32) -> String {
    let deps = Command::new("python3")
        .args(["-c", "import jupyterhub, pytest, pytest_asyncio"])
        .output()
        .expect("python3 must be installed to run JupyterHub's tests");
    assert!(
        deps.status.success(),
        "JupyterHub's test modules need jupyterhub, pytest and pytest-asyncio \
         (scripts/test installs them):\n{}",
        String::from_utf8_lossy(&deps.stderr)
    );
    let dir = std::env::temp_dir().join(format!("switchyard-jh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    proxy_on_path(&dir);
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let ini = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/jupyterhub_pytest.ini");
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "pytest", "-c", ini, "--rootdir"])
        .arg(&dir)
        .args(["-q", "-rfEs", "--pyargs"])
        .args(modules.iter().map(|m| format!("jupyterhub.tests.{m}")))
        .env("PATH", path)
        .current_dir(&dir);
    let out = cmd.output().expect("run pytest");
    end_leftovers(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.contains(" passed") || l.contains(" failed") || l.contains(" error"))
        .unwrap_or_default()
        .trim_matches(|c| c == '=' || c == ' ')
        .to_owned();
    let passed: u32 = summary
        .split(", ")
        .find_map(|part| part.strip_suffix(" passed"))
        .and_then(|n| n.split_whitespace().last()?.parse().ok())
        .unwrap_or(0);
    assert!(
        out.status.success() && passed >= min_passed,
        "JupyterHub's {modules:?} with switchyard as the proxy: {summary:?} \
         (expected at least {min_passed} passed)\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    summary
}

/// JupyterHub's `test_proxy` (the Hub adds, checks and repairs routes through the real
/// binary, which it starts, kills and restarts) and `test_unix_socket` (the proxy on
/// `--socket`/`--api-socket`, reached with a percent-encoded socket path as `Host`). Two
/// tests of `test_proxy` need wildcard DNS for subdomains and are skipped by JupyterHub
/// itself without it.
#[test]
fn jupyterhub_test_modules_pass() {
    let summary = pytest(&["test_proxy", "test_unix_socket"], 33);
    eprintln!("JupyterHub test_proxy + test_unix_socket: {summary}");
}
