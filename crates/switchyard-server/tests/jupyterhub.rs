//! JupyterHub's own `ConfigurableHTTPProxy` class starts the real
//! binary, adds, reads and deletes routes with escaped and UTF-8 names,
//! proxies HTTP and a WebSocket to real backends, and restarts the proxy
//! after `kill -9`, in path and in host-routing mode.
//!
//! Needs `python3` with `jupyterhub` (installed by `.ci/run`); without it the
//! test fails, it never skips.

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
