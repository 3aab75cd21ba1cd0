//! The container image, built and run with podman the way JupyterHub's chart runs
//! configurable-http-proxy's: `deploy/build-image.sh` packages this test build's binary
//! (the same script packages the release binary by default), and the container is started
//! with the chart's command and flags. Through it: a route added with the API token read
//! from `CONFIGPROXY_AUTH_TOKEN_FILE`, a proxied request, a proxied WebSocket, the user it
//! runs as (65534), and SIGTERM ending it with status 0.
//!
//! podman is required: without it this test fails (scripts/test installs it).

#![allow(
    clippy::unwrap_used,
    reason = "test peers and helpers panic on failure"
)]

mod backends;
mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use backends::{Backend, ws_backend, ws_connect};
use common::{IO_TIMEOUT, port_in, request};
use tokio_tungstenite::tungstenite::Message;

/// How these machines run containers: runc, no systemd cgroups, the host's network,
/// explicit limits (podman's defaults are refused here).
const RUN_FLAGS: &[&str] = &[
    "--runtime",
    "runc",
    "--cgroup-manager",
    "cgroupfs",
    "run",
    "--network",
    "host",
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=4096:4096",
];

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn podman(args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("podman {args:?}: {e} (is podman installed?)"))
}

/// A container started in the background, removed on drop.
struct Container {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Container {
    fn start(image: &str, name: &str, extra_run: &[&str], command: &[&str]) -> Self {
        let _ = podman(&["rm", "-f", name]);
        let mut args: Vec<&str> = RUN_FLAGS.to_vec();
        args.extend_from_slice(&["--rm", "--name", name]);
        args.extend_from_slice(extra_run);
        args.push(image);
        args.extend_from_slice(command);
        let mut child = Command::new("podman")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("podman run");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            name: name.to_owned(),
            child,
            lines,
        }
    }

    /// The first log line containing `needle` (bounded wait: starting a container is slow).
    fn wait_for_line(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no log line with {needle:?} from the container: {e}"),
            }
        }
    }

    /// The uid and gid the container's process runs as, from the host's /proc.
    fn ids(&self) -> (String, String) {
        let out = podman(&["inspect", "--format", "{{.State.Pid}}", &self.name]);
        assert!(out.status.success(), "{out:?}");
        let pid = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned()
        };
        (field("Uid:"), field("Gid:"))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.name]);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn image_runs_as_the_charts_proxy() {
    let tag = format!("localhost/switchyard-test:{}", std::process::id());
    let build = Command::new(repo_root().join("deploy/build-image.sh"))
        .arg(&tag)
        .env("SWITCHYARD_BINARY", env!("CARGO_BIN_EXE_switchyard"))
        .env("CONTAINER_ENGINE", "podman")
        .env("CONTAINER_GLOBAL_FLAGS", "--cgroup-manager cgroupfs")
        .status()
        .expect("deploy/build-image.sh");
    assert!(build.success(), "deploy/build-image.sh failed: {build}");

    let backend = Backend::echo_target();
    let errors = Backend::start(|_| backends::respond("200 OK", &[], "error page"));
    let (ws_port, _ws_seen) = ws_backend(Some("hello"));

    let dir = common::temp_dir("container");
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{}\n", common::TOKEN)).unwrap();
    // Readable by the container's user.
    Command::new("chmod")
        .args(["0755", dir.to_str().unwrap()])
        .status()
        .unwrap();
    Command::new("chmod")
        .args(["0644", token_file.to_str().unwrap()])
        .status()
        .unwrap();
    let mount = format!("{}:/run/secrets/token:ro", token_file.display());
    // A name, not an address: resolved in the image by glibc (nsswitch.conf, the hosts file
    // the runtime provides), as the chart's `http://hub:8081` is.
    let default_target = format!("--default-target=http://localhost:{}", backend.port);
    let error_target = format!("--error-target=http://127.0.0.1:{}", errors.port);
    let name = format!("switchyard-test-{}", std::process::id());
    let container = Container::start(
        &tag,
        &name,
        &[
            "-v",
            &mount,
            "-e",
            "CONFIGPROXY_AUTH_TOKEN_FILE=/run/secrets/token",
            // The chart's `command: ["configurable-http-proxy", ...]`.
            "--entrypoint",
            "configurable-http-proxy",
        ],
        &[
            "--ip=",
            "--api-ip=",
            "--api-port=0",
            &default_target,
            &error_target,
            "--port=0",
            "--shutdown-timeout=5000",
        ],
    );
    let port = port_in(&container.wait_for_line("Proxying "));
    let api_port = port_in(&container.wait_for_line("Proxy API at "));

    // The API wants the token from the file.
    let r = request(api_port, "GET", "/api/routes", &[], None);
    assert_eq!(r.status, 403, "{}", r.body);
    let auth = format!("token {}", common::TOKEN);
    let r = request(
        api_port,
        "POST",
        "/api/routes/ws",
        &[("Authorization", &auth)],
        Some(&format!(r#"{{"target":"http://127.0.0.1:{ws_port}"}}"#)),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = request(
        api_port,
        "GET",
        "/api/routes",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let routes: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(
        routes.get("/ws").is_some() && routes.get("/").is_some(),
        "{routes}"
    );

    // HTTP through the default route, the readiness probe, and a WebSocket.
    let r = request(port, "GET", "/some/page?x=1", &[], None);
    assert_eq!((r.status, r.body.as_str()), (200, "/some/page?x=1"));
    let r = request(port, "GET", "/_chp_readyz", &[], None);
    assert_eq!(r.status, 200, "{}", r.body);
    let (mut ws, _) = ws_connect(port, "/ws/socket");
    assert_eq!(ws.read().unwrap(), Message::text("hello"));
    ws.send(Message::text("ping")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("ping"));
    drop(ws);

    assert_eq!(
        container.ids(),
        ("65534".to_owned(), "65534".to_owned()),
        "uid and gid in the container"
    );

    // SIGTERM: a graceful stop, status 0.
    let out = podman(&["kill", "--signal", "TERM", &name]);
    assert!(out.status.success(), "{out:?}");
    let mut container = container;
    let deadline = std::time::Instant::now() + IO_TIMEOUT * 3;
    let status = loop {
        if let Some(status) = container.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the container did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    drop(container);
    let _ = podman(&["rmi", "-f", &tag]);
    let _ = std::fs::remove_dir_all(&dir);
}
